"""``blockhost init``: the first run on a host, safe to repeat.

It writes the commented ``blockhost.yaml`` (mode 0640: it holds paths, never a secret),
generates the server key (0600) when there is none, can deploy the contracts on a fresh chain,
and checks that the key and token files exist and only their owner can read them. A second run
changes nothing: an existing config is kept (``force`` rewrites it) and a key is never replaced.

Run as root (the normal case on a Proxmox host) it hands what it writes to the daemon's user
(``--owner``, else an existing ``blockhost``): root-owned files would be unreadable to the
daemon. Existing key and token files are only checked, with the exact ``chown`` to run.
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from listener.config import Config, build_config, load_config
from listener.errors import ConfigError, UserError
from listener.ops.config_template import nest, render
from provisioner.storage.atomic_file import write_atomic

#: Readable by the daemon's group, not by other users (the file names the key files).
CONFIG_MODE = 0o640
#: /etc/blockhost as the Debian package makes it.
CONFIG_DIR_MODE = 0o750
KEPT_KEY = "kept (init never replaces a key)"
#: the system user the Debian package makes for the daemon
DAEMON_USER = "blockhost"


@dataclass(frozen=True)
class InitRequest:
    config_path: Path
    values: Mapping[str, Any]  # dotted config key path -> value
    deploy_contracts: bool = False
    stablecoin: str | None = None
    force: bool = False
    owner: str | None = None  # the daemon's user (as root; default: DAEMON_USER if it exists)


@dataclass(frozen=True)
class Owner:
    """The daemon's user and its primary group, who must read what init writes."""

    user: str
    uid: int
    group: str
    gid: int


@dataclass
class InitReport:
    config_path: Path
    config_action: str  # written | rewritten | kept
    server_key_file: Path
    server_key_action: str  # generated | kept | missing
    server_public_key: str | None = None
    deployment: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """What was done, one line each (problems are reported separately)."""
        out = [f"config {self.config_path}: {self.config_action}",
               f"server key {self.server_key_file}: {self.server_key_action}"]
        if self.server_public_key:
            out.append(f"server public key: {self.server_public_key}")
        if self.deployment:
            d = self.deployment
            out.append(f"contracts deployed at block {d['block_number']}: subscriptions "
                       f"{d['subscriptions']}, nft {d['nft']}, stablecoin {d['stablecoin']}")
        return out + self.notes


def run_init(request: InitRequest) -> InitReport:
    """Write what is missing, keep what exists, then check the secret files."""
    owner = resolve_owner(request.owner)
    made_dir = not request.config_path.parent.exists()
    if request.config_path.exists() and not request.force:
        config = _load_existing(request.config_path)
        report = _report(request.config_path, "kept (it exists; --force rewrites it)", config)
        if request.deploy_contracts:
            report.notes.append("contracts not deployed: the config exists and was kept "
                                "(--force rewrites it)")
        _settle_owners(report, config, owner, request, wrote=False, made_dir=False)
        return report
    action = "rewritten" if request.config_path.exists() else "written"
    values = dict(request.values)
    _validate(values, request.config_path)
    deployment = None
    if request.deploy_contracts:
        deployment = deploy_for(values, request.stablecoin)
        values.update({"chain.subscription_contract": deployment["subscriptions"],
                       "chain.nft_contract": deployment["nft"],
                       "chain.start_block": deployment["block_number"]})
    text = render(values)
    config = _validate(values, request.config_path)
    write_config(request.config_path, text)
    report = _report(request.config_path, action, config)
    report.deployment = deployment
    _settle_owners(report, config, owner, request, wrote=True, made_dir=made_dir)
    return report


def resolve_owner(requested: str | None) -> Owner | None:
    """The daemon's user when init runs as root: ``requested`` (which must exist), else
    DAEMON_USER if it exists; None when not root or there is no such user."""
    if os.geteuid() != 0:
        return None
    name = requested or DAEMON_USER
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        if requested is None:
            return None
        raise UserError(f"--owner {requested}: no such user; create it (useradd --system "
                        f"{requested}) or name the user the daemon runs as") from None
    try:
        group = grp.getgrgid(entry.pw_gid).gr_name
    except KeyError:
        group = str(entry.pw_gid)
    return Owner(name, entry.pw_uid, group, entry.pw_gid)


def _settle_owners(report: InitReport, config: Config, owner: Owner | None,
                   request: InitRequest, *, wrote: bool, made_dir: bool) -> None:
    """Hand what init wrote to ``owner`` and check the rest; without one, say what was
    left as it is."""
    if owner is None:
        report.notes.extend(_unowned_notes(request))
        return
    path = request.config_path
    if made_dir:
        os.chown(path.parent, 0, owner.gid)
    if wrote:
        os.chown(path, 0, owner.gid)
    if report.server_key_action.startswith("generated"):
        os.chown(config.server_key_file, owner.uid, owner.gid)
    report.notes.append(f"owners for the daemon's user {owner.user}: config root:{owner.group} "
                        f"{CONFIG_MODE:04o}, key files {owner.user}:{owner.group} 0600")
    report.problems.extend(owner_problems(config, path, owner))


def _unowned_notes(request: InitRequest) -> list[str]:
    if os.geteuid() != 0:
        return ([f"--owner {request.owner} ignored: init is not running as root, so what it "
                 "writes belongs to this user"] if request.owner else [])
    return [f"owners left as they are (root): no `{DAEMON_USER}` user exists and no --owner "
            "was given; rerun with --owner USER (the daemon's user) or it cannot read the "
            "config and key files"]


def owner_problems(config: Config, config_path: Path, owner: Owner) -> list[str]:
    """One line, with the exact ``chown``, per existing file the daemon's user cannot read."""
    problems = []
    config_stat = config_path.stat()
    if config_stat.st_uid != 0 or config_stat.st_gid != owner.gid:
        problems.append(f"config {config_path} is {_owner_of(config_stat)}, not root:"
                        f"{owner.group}; run `chown root:{owner.group} "
                        f"{shlex.quote(str(config_path))}`")
    for what, path in (("server key", config.server_key_file),
                       ("signer (deployer) key", config.signer.private_key_file),
                       ("Proxmox token secret", config.proxmox.token_secret_file)):
        if path.exists() and path.stat().st_uid != owner.uid:
            problems.append(f"{what} file {path} belongs to {_owner_of(path.stat())}, so the "
                            f"daemon's user {owner.user} cannot read it; run `chown "
                            f"{owner.user}:{owner.group} {shlex.quote(str(path))}`")
    return problems


def _owner_of(info: os.stat_result) -> str:
    try:
        user = pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        user = str(info.st_uid)
    try:
        group = grp.getgrgid(info.st_gid).gr_name
    except KeyError:
        group = str(info.st_gid)
    return f"{user}:{group}"


def _load_existing(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise ConfigError(f"{exc}; init keeps an existing config: fix it, or rerun with "
                          "--force to write a new one") from None


def _validate(values: Mapping[str, Any], path: Path) -> Config:
    return build_config(nest(values), origin=f"{path} (from the init flags)")


def _report(path: Path, action: str, config: Config) -> InitReport:
    report = InitReport(config_path=path, config_action=action,
                        server_key_file=config.server_key_file, server_key_action="kept")
    report.server_key_action, report.server_public_key = ensure_server_key(config.server_key_file)
    report.problems = check_secret_files(config)
    return report


def write_config(path: Path, text: str) -> None:
    """Atomically (temp file, fsync, rename), mode 0640; the directory made 0750 if missing."""
    if not path.parent.exists():
        try:
            path.parent.mkdir(mode=CONFIG_DIR_MODE, parents=True)
        except OSError as exc:
            raise UserError(f"cannot create {path.parent}: {exc.strerror}; create it or run "
                            "init as a user who may") from None
    try:
        write_atomic(path, text.encode("utf-8"), mode=CONFIG_MODE)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}; check the directory's "
                        "permissions or pass --config PATH") from None


def ensure_server_key(path: Path) -> tuple[str, str | None]:
    """Generate the server key if the file is absent; never replace one.
    Returns (generated | kept | unreadable, its public key when readable)."""
    from listener.crypto.key_files import load_private_key, public_key_hex
    from listener.ops.keys import generate_server_key

    if not os.path.lexists(path):
        return "generated (mode 0600)", generate_server_key(path)
    try:
        return KEPT_KEY, public_key_hex(load_private_key(path, what="server key"))
    except UserError:
        return f"{KEPT_KEY}, unusable: see below", None


def check_secret_files(config: Config) -> list[str]:
    """One line per key or token file that is missing, unreadable or open to other users."""
    from listener.crypto.key_files import load_private_key

    checks: list[Callable[[], object]] = [
        lambda: load_private_key(config.server_key_file, what="server key"),
        lambda: load_private_key(config.signer.private_key_file, what="signer (deployer) key"),
        lambda: _check_token_file(config.proxmox.token_secret_file),
    ]
    problems = []
    for check in checks:
        try:
            check()
        except UserError as exc:
            problems.append(str(exc))
    return problems


def _check_token_file(path: Path) -> None:
    """The token secret file: present, owner-only, not empty (its content stays unread)."""
    from listener.crypto.key_files import read_owner_only_file

    hint = f"write the API token's secret into it and run `chmod 600 {path}`"
    if not read_owner_only_file(path, what="Proxmox token secret", missing_hint=hint).strip():
        raise UserError(f"Proxmox token secret file {path} is empty; {hint}")


def deploy_for(values: Mapping[str, Any], stablecoin: str | None) -> dict[str, Any]:
    """Deploy the contracts with the signer key through the first RPC URL, after checking
    that the RPC serves the configured chain."""
    from web3 import Web3

    from listener.ops.contracts import deploy_contracts, packaged_page

    url = values["chain.rpc_urls"][0]
    key_file = Path(values.get("signer.private_key_file") or Config().signer.private_key_file)
    try:
        served = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 30})).eth.chain_id
    except Exception:  # noqa: BLE001 - any transport failure is the same advice
        raise UserError(f"cannot reach RPC endpoint {url}; check --rpc-url") from None
    if served != values["chain.chain_id"]:
        raise UserError(f"the RPC serves chain {served}, not --chain-id "
                        f"{values['chain.chain_id']}; fix one of them (nothing was deployed)")
    # the NFT gets the packaged credentials page, as `contracts deploy` gives it by default
    return deploy_contracts(url, key_file, stablecoin=stablecoin, page=packaged_page())

