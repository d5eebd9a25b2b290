"""Build the adapters (store, inventory, Proxmox backend, minter) from a resolved Config.

This is the only place that turns config values into live objects; everything else gets
them injected, which keeps the decision code free of I/O and the tests free of globals.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from eth_account import Account
from web3 import HTTPProvider, Web3

from listener.chain.deployment import Deployment, bind_database, deployment_of
from listener.chain.journal import Store
from listener.chain.rpc import RpcClient
from listener.config import Config
from listener.crypto.key_files import load_private_key, read_owner_only_file
from listener.errors import UserError
from listener.reconcile.reconciler import Services
from listener.runtime.liveness import (
    RPC_ATTEMPTS,
    RPC_BACKOFF_INITIAL,
    RPC_BACKOFF_MAX,
    RPC_TIMEOUT,
    WEB3_TIMEOUT,
)
from listener.writeback.nft import NftMinter
from listener.writeback.signer_rpc import FailoverProvider
from listener.writeback.txmanager import TxManager
from provisioner.backend import VMBackend
from provisioner.inventory import Inventory, Pools
from provisioner.proxmox.backend import ProxmoxAPIBackend

if TYPE_CHECKING:
    from provisioner.terraform.backend import TerraformBackend

log = structlog.get_logger(__name__)

#: One signer, many worker threads: nonce allocation + signing must be serialized.
SIGNER_LOCK = threading.Lock()
#: Set once the start-up config check has spoken (one line per process, not per thread).
_VM_RPC_URL_CHECKED = threading.Event()


def read_secret_file(path: Path, what: str) -> str:
    """Read a secret (token, password) from a file that only its owner can read."""
    raw = read_owner_only_file(path, what=what,
                               missing_hint="create it (mode 0600) or fix the config")
    try:
        value = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise UserError(f"{what} file {path} is not UTF-8 text") from None
    if not value:
        raise UserError(f"{what} file {path} is empty")
    return value


def pools_from_config(config: Config) -> Pools:
    first, last = config.network.ip_pool.bounds()
    import ipaddress

    net = ipaddress.ip_network(config.network.ip_pool.network, strict=False)
    v6 = config.network.ipv6_pool
    return Pools(
        vmid_first=config.network.vmid_range.start, vmid_last=config.network.vmid_range.end,
        ipv4_first=str(first), ipv4_last=str(last), ipv4_prefixlen=net.prefixlen,
        ipv4_gateway=config.network.ip_pool.gateway,
        ipv6_prefix=v6.prefix, ipv6_first=v6.start, ipv6_last=v6.end, ipv6_gateway=v6.gateway,
    )


def config_deployment(config: Config, chain_id: int | None = None) -> Deployment | None:
    """This config's deployment; the chain id from the argument, the config or, failing
    both, the database the daemon bound to its RPC's chain (read only)."""
    if chain_id or config.chain.chain_id or not config.db.path.exists():
        return deployment_of(config, chain_id)
    store = Store.open(config.db.path)
    try:
        return deployment_of(config, chain_id, store.conn)
    finally:
        store.close()


def build_api_backend(config: Config, *, chain_id: int | None = None) -> ProxmoxAPIBackend:
    """The proxmoxer backend (also what the Terraform backend and template build read
    through): API token from its 0600 file, TLS verified as configured; its markers carry
    this config's deployment id."""
    deployment = config_deployment(config, chain_id)
    px = config.proxmox
    if not px.token_id:
        raise UserError("proxmox.token_id is not set; create an API token (USER@REALM!TOKENID) "
                        "and put its secret in proxmox.token_secret_file")
    verify: bool | str = str(px.verify_ssl) if isinstance(px.verify_ssl, Path) else px.verify_ssl
    return ProxmoxAPIBackend(
        px.api_url, px.token_id, read_secret_file(px.token_secret_file, "Proxmox token secret"),
        verify=verify, pool=px.pool, tag=px.tag, snippets_dir=px.snippets_dir,
        snippets_storage=px.cloudinit_storage,
        # clones in flight survive a crash: a half-made VM is adopted, never mistaken for foreign
        journal_dir=config.db.path.parent / "clone-journal",
        deployment=deployment.id if deployment is not None else None,
    )


def build_terraform_backend_for(config: Config, api: ProxmoxAPIBackend) -> TerraformBackend:
    """Terraform in proxmox.terraform_dir; ``api`` stays in use read-only for the ownership
    checks before Terraform acts."""
    from provisioner.terraform.backend import build_terraform_backend

    px = config.proxmox
    return build_terraform_backend(
        api, token_secret=read_secret_file(px.token_secret_file, "Proxmox token secret"),
        root=px.terraform_dir, snippets_datastore=px.cloudinit_storage,
        cloudinit_datastore=px.storage)


def build_backend(config: Config, *, api: ProxmoxAPIBackend | None = None) -> VMBackend:
    """The backend ``proxmox.backend`` selects (over ``api`` when given)."""
    api = api or build_api_backend(config)
    if config.proxmox.backend != "terraform":
        return api
    backend = build_terraform_backend_for(config, api)
    backend.runner.binary_path()  # fail at start, with the install hint, if terraform is absent
    return backend


def http_provider(url: str) -> HTTPProvider:
    """A plain web3 provider with the daemon's timeout; its timeout and retries bound the
    loop's longest call (:func:`listener.runtime.liveness.longest_blocking_call`)."""
    return Web3.HTTPProvider(url, request_kwargs={"timeout": WEB3_TIMEOUT})


def _signer_rpc(config: Config, chain_id: int | None) -> RpcClient:
    """An RPC client with the listener's settings (liveness bounds one call by them)."""
    if not config.chain.rpc_urls:
        raise UserError("chain.rpc_urls is empty; set at least one RPC endpoint")
    return RpcClient(config.chain.rpc_urls, expected_chain_id=chain_id, timeout=RPC_TIMEOUT,
                     attempts=RPC_ATTEMPTS, backoff_initial=RPC_BACKOFF_INITIAL,
                     backoff_max=RPC_BACKOFF_MAX)


def signing_chain_id(config: Config, store: Store, chain_id: int | None = None) -> int:
    """The chain transactions are signed for: ``chain.chain_id``, else the one the daemon
    checked on its RPC (``chain_id``) or bound the database to. Only a command run with
    none of these (no chain.chain_id, a fresh database) learns it from the first endpoint
    that answers; every endpoint is then held to it."""
    found = config.chain.chain_id or chain_id or store.chain_state().chain_id
    if found is None:
        found = _signer_rpc(config, None).chain_id()
    return found


def build_web3(config: Config, chain_id: int) -> Web3:
    """The signer's web3: chain.rpc_urls with the listener's failover, chain-id check on
    every endpoint before use, and URL redaction."""
    return Web3(FailoverProvider(_signer_rpc(config, chain_id)))


def build_minter(config: Config, store: Store, chain_id: int | None = None) -> NftMinter | None:
    if not config.chain.nft_contract:
        return None
    from listener.writeback.fees import FeePolicy
    from listener.writeback.tx_store import TxStore

    account = Account.from_key(load_private_key(config.signer.private_key_file,
                                                what="signer key"))
    signing_chain = signing_chain_id(config, store, chain_id)
    txm = TxManager(build_web3(config, signing_chain), TxStore(store.conn), account,
                    fees=FeePolicy.from_gwei(config.signer.max_fee_gwei,
                                             config.signer.max_priority_fee_gwei),
                    confirmations=config.chain.confirmations, lock=SIGNER_LOCK,
                    chain_id=signing_chain)
    return NftMinter(txm, config.chain.nft_contract)


def rpc_url_for_vm(config: Config) -> str:
    """The RPC endpoint a tenant VM's cloud-init is given: ``vm.rpc_url`` only, never derived
    from ``chain.rpc_urls`` (tenants have root; those URLs may carry the operator's key)."""
    return config.vm.rpc_url


def missing_vm_rpc_url(config: Config) -> str | None:
    """The start-up warning when VMs get no RPC endpoint (not a refusal: the reference's VMs
    may not need one); None when ``vm.rpc_url`` is set."""
    if config.vm.rpc_url:
        return None
    return ("vm.rpc_url is not set: VMs get no RPC endpoint; set it to a public http(s) "
            "endpoint if their software needs one (chain.rpc_urls are never given to VMs)")


def _check_vm_rpc_url_once(config: Config) -> None:
    warning = missing_vm_rpc_url(config)
    if warning is not None and not _VM_RPC_URL_CHECKED.is_set():
        _VM_RPC_URL_CHECKED.set()
        log.warning("config.vm_rpc_url_unset", detail=warning)


def build_services(config: Config, *, chain_id: int | None = None,
                   with_chain: bool = True) -> Services:
    """A full set of adapters for one thread (own SQLite connection, own HTTP sessions).

    ``with_chain=False`` leaves out the signer and the server key, for commands that only
    stop or destroy VMs (``gc``)."""
    if with_chain:
        _check_vm_rpc_url_once(config)
    store = Store.open(config.db.path)
    try:
        deployment = deployment_of(config, chain_id, store.conn)
        if deployment is not None:
            bind_database(store.conn, deployment, config.db.path)
    except BaseException:
        store.close()
        raise
    api = build_api_backend(config, chain_id=deployment.chain_id if deployment else chain_id)
    # VMIDs and addresses another deployment's VMs hold are never handed out
    inventory = Inventory(store.conn, occupied=api.occupied)
    return Services(
        config=config, store=store, inventory=inventory, backend=build_backend(config, api=api),
        minter=build_minter(config, store, chain_id) if with_chain else None,
        server_key=(load_private_key(config.server_key_file, what="server key")
                    if with_chain else None),
        pools=pools_from_config(config),
        rpc_url_for_vm=rpc_url_for_vm(config),
        chain_id=chain_id or config.chain.chain_id,
    )
