"""The checks `blockhost listen` runs before it starts: the ones whose failure no waiting can
cure. A wrong chain id, an address without code, a refused token or an untrusted certificate
stop the start with one ✗ line each, as do VMs of ours awaiting `blockhost markers
migrate`; an RPC or PVE that does not answer only logs a warning
(the daemon waits out outages, and must start after a reboot that brought it up first).
"""

from __future__ import annotations

import structlog
from web3 import Web3

from listener.config import Config
from listener.errors import UserError
from listener.ops.doctor.chain_checks import code_check, connect
from listener.ops.doctor.check import Check, describe, failed, one_line
from listener.ops.doctor.markers_check import COMMAND, awaiting_failure, old_markers
from listener.ops.doctor.markers_check import NAME as MARKERS_NAME
from listener.ops.doctor.pve_connect import NAME as PVE_NAME
from listener.ops.doctor.pve_connect import fix_for, is_outage, pve_client
from listener.ops.doctor.report import failure_lines

log = structlog.get_logger(__name__)

#: seconds a start check waits for one answer (an outage must not hold the start long)
START_TIMEOUT = 5.0


def _chain_id_failures(config: Config) -> tuple[list[Check], Web3 | None]:
    """A failed check per URL serving another chain; the first URL serving ours, if any."""
    checks, good = [], None
    for url in config.chain.rpc_urls:
        w3 = connect(url, START_TIMEOUT)
        try:
            served = int(w3.eth.chain_id)
        except Exception as exc:  # noqa: BLE001 - an outage is waited out, not fatal
            log.warning("start_check.rpc_unreachable", url=one_line(url), error=describe(exc))
            continue
        expected = config.chain.chain_id
        if expected is not None and served != expected:
            checks.append(failed(f"RPC {one_line(url)}", f"serves chain {served}, the config "
                                 f"says {expected}", "fix chain.chain_id or chain.rpc_urls"))
        elif good is None:
            good = w3
    return checks, good


def _code_failures(w3: Web3, config: Config) -> list[Check]:
    checks = []
    for name, key in (("subscription contract", "subscription_contract"),
                      ("NFT contract", "nft_contract")):
        address = getattr(config.chain, key)
        if not address:
            continue
        try:
            verdict = code_check(w3, name, address, key)
        except Exception as exc:  # noqa: BLE001 - an outage is waited out, not fatal
            log.warning("start_check.code_unchecked", contract=name, error=describe(exc))
            continue
        if not verdict.ok:
            checks.append(verdict)
    return checks


def _pve_failures(config: Config) -> tuple[list[Check], bool]:
    """The PVE API's failures, and whether it answered (an outage is no failure)."""
    try:
        pve_client(config, timeout=START_TIMEOUT).get_object("version")
    except Exception as exc:  # noqa: BLE001 - classified just below
        if is_outage(exc):
            log.warning("start_check.pve_unreachable", error=one_line(describe(exc)))
            return [], False
        return [failed(PVE_NAME, describe(exc), fix_for(exc))], False
    return [], True


def _chain_id_of(w3: Web3 | None) -> int | None:
    """The RPC's chain id (None: the config's or the database's then serves)."""
    if w3 is None:
        return None
    try:
        return int(w3.eth.chain_id)
    except Exception:  # noqa: BLE001 - an outage just now: the other sources serve
        return None


def _markers_failures(config: Config, w3: Web3 | None) -> list[Check]:
    """A ✗ while VMs our inventory knows still carry the old marker (the daemon would
    take them for missing); a database of another deployment is left to the daemon's
    own one-line refusal."""
    try:
        failure = _awaiting_migration(config, _chain_id_of(w3))
    except UserError:
        return []
    except Exception as exc:  # noqa: BLE001 - classified just below
        if is_outage(exc):
            log.warning("start_check.markers_unchecked", error=one_line(describe(exc)))
            return []
        return [failed(MARKERS_NAME, describe(exc), f"`{COMMAND} --dry-run` says more")]
    return [] if failure is None else [failure]


def _awaiting_migration(config: Config, chain_id: int | None) -> Check | None:
    """The ✗ for VMs of ours awaiting `markers migrate` (None: none, or no deployment id)."""
    found = old_markers(config, chain_id=chain_id, timeout=START_TIMEOUT)
    return None if found is None else awaiting_failure(found)


def start_failures(config: Config) -> list[Check]:
    """The fatal subset's failures (empty: the daemon may start)."""
    checks, w3 = _chain_id_failures(config)
    if w3 is not None:
        checks += _code_failures(w3, config)
    pve, answered = _pve_failures(config)
    if not answered:
        return checks + pve
    return checks + _markers_failures(config, w3)


def refusal(failures: list[Check]) -> UserError:
    """The one error `listen` stops with: a headline, then one ✗ line per failure."""
    return UserError("\n".join([f"refusing to start: {len(failures)} start check(s) failed "
                                "(`blockhost doctor` runs every check)",
                                *failure_lines(failures)]))


def checked_for_start(config: Config) -> Config:
    """``config`` when the fatal subset passes; else UserError with one ✗ line per failure."""
    failures = start_failures(config)
    if failures:
        raise refusal(failures)
    return config


def require_markers_migrated(config: Config, chain_id: int | None) -> None:
    """The markers check again, inside the daemon's start gate: Proxmox may not have answered
    the pre-start check. An outage raises as is (the gate waits it out); VMs of ours awaiting
    `markers migrate` raise the same refusal as before the start (waiting cannot fix it)."""
    failure = _awaiting_migration(config, chain_id)
    if failure is not None:
        raise refusal([failure])
