"""Reaching the PVE API as the daemon does (token from its file, TLS as configured), and
saying why not in terms an operator can act on."""

from __future__ import annotations

from pathlib import Path

from listener.config import Config
from listener.ops.doctor.check import Check, describe, failed, passed
from listener.runtime.wiring import read_secret_file
from provisioner.errors import PermissionDenied, PveError, Transient
from provisioner.proxmox.client import PveClient

#: seconds one PVE request may take in a check
PVE_TIMEOUT = 10.0
NAME = "PVE API"


def pve_client(config: Config, timeout: float = PVE_TIMEOUT) -> PveClient:
    """A client with the daemon's token and TLS settings (UserError on a bad token file)."""
    px = config.proxmox
    if not px.token_id:
        raise ValueError("proxmox.token_id is not set")
    verify: bool | str = str(px.verify_ssl) if isinstance(px.verify_ssl, Path) else px.verify_ssl
    secret = read_secret_file(px.token_secret_file, "Proxmox token secret")
    return PveClient(px.api_url, px.token_id, secret, verify=verify, timeout=timeout)


def fix_for(exc: Exception) -> str:
    """What to do about a failed PVE call."""
    if isinstance(exc, PveError) and exc.status == 401:
        return ("the token was refused: check proxmox.token_id and the secret in "
                "proxmox.token_secret_file (pveum user token list)")
    if isinstance(exc, PermissionDenied):
        return "grant the token the privileges the 'PVE privileges' line lists"
    if "TLS verification failed" in str(exc):
        return ("set proxmox.verify_ssl to the cluster's CA file (/etc/pve/pve-root-ca.pem) "
                "or install a certificate the system trusts")
    if isinstance(exc, Transient):
        return "check proxmox.api_url, that pveproxy runs and that the port is reachable"
    return "check proxmox.api_url, proxmox.token_id and proxmox.token_secret_file"


def is_outage(exc: Exception) -> bool:
    """A failure that waiting may cure (no answer, a 5xx), not a wrong setting."""
    return isinstance(exc, Transient)


def reach_check(client: PveClient, config: Config) -> Check:
    """``GET /version`` answered with the token, over verified TLS."""
    version = client.get_object("version")
    detail = f"{config.proxmox.api_url}: PVE {version.get('version', '?')}, token accepted"
    if config.proxmox.verify_ssl is False:
        return failed(NAME, f"{detail}, but TLS is NOT verified (proxmox.verify_ssl: false)",
                      "set proxmox.verify_ssl to the cluster's CA file "
                      "(/etc/pve/pve-root-ca.pem)")
    return passed(NAME, f"{detail}, TLS verified")


def connect_check(config: Config) -> tuple[Check, PveClient | None]:
    """The API check and, when the API answered, the client the other checks use."""
    try:
        client = pve_client(config)
        return reach_check(client, config), client
    except Exception as exc:  # noqa: BLE001 - every failure is this check's verdict
        return failed(NAME, describe(exc), fix_for(exc)), None
