"""Typed configuration: ``blockhost.yaml``, the reference's legacy files, and env overrides.

Resolution order (later wins):
1. model defaults;
2. the reference system's ``db.yaml`` and ``web3-defaults.yaml`` beside the config file, when present;
3. ``blockhost.yaml`` itself (the reference's top-level keys mapped: listener.config_reference);
4. environment variables ``BLOCKHOST_<SECTION>__<KEY>`` (``BLOCKHOST_SERVER_KEY_FILE`` for top-level keys).

Unknown keys and bad values are rejected at start with the key path in a one-line message.
Secrets are never config values: only paths to files that hold them.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from listener.config_reference import legacy_overlay, map_reference_keys
from listener.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/blockhost/blockhost.yaml")
DEFAULT_BROKER_ALLOCATION = Path("/etc/blockhost/broker-allocation.json")
ENV_PREFIX = "BLOCKHOST_"
NO_SUBSCRIPTION_CONTRACT = (
    "config error: chain.subscription_contract is not set, so there is no contract to follow; "
    "set it to the BlockhostSubscriptions address (`blockhost init --deploy-contracts` or "
    "`blockhost contracts deploy` prints it)")


def _split_csv(value: Any) -> Any:
    """Accept "a,b" (env overrides) as well as a YAML list."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _is_address(value: str) -> bool:
    return len(value) == 42 and value.startswith("0x") and all(
        c in "0123456789abcdefABCDEF" for c in value[2:]
    )


class ChainConfig(_Section):
    """Where the subscription contract lives and how to follow it."""

    rpc_urls: list[str] = Field(default_factory=list)
    ws_url: str | None = None
    chain_id: int | None = None
    subscription_contract: str | None = None
    nft_contract: str | None = None
    start_block: int = Field(default=0, ge=0)
    confirmations: int | Literal["finalized", "safe"] = 12
    poll_interval: float = Field(default=2.0, gt=0)
    max_block_range: int = Field(default=2000, ge=1, le=1_000_000)
    #: While the applied cursor is more than this many blocks behind the confirmed head, the
    #: daemon is catching up: nothing is created or minted from old facts.
    catch_up_blocks: int = Field(default=16, ge=0)

    _split_urls = field_validator("rpc_urls", mode="before")(lambda v: _split_csv(v))

    @field_validator("rpc_urls")
    @classmethod
    def _check_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                # the URL itself is not echoed: providers put API keys in it
                raise ValueError("every entry must be an http(s):// URL")
        return value

    @field_validator("ws_url")
    @classmethod
    def _check_ws_url(cls, value: str | None) -> str | None:
        if value is not None and value != "" and not value.startswith(("ws://", "wss://")):
            raise ValueError("must be a ws:// or wss:// URL (or unset to poll only)")
        return value or None

    @field_validator("subscription_contract", "nft_contract")
    @classmethod
    def _check_address(cls, value: str | None) -> str | None:
        if value is not None and value != "" and not _is_address(value):
            raise ValueError("must be a 0x-prefixed 20-byte hex address")
        return value or None

    @field_validator("confirmations")
    @classmethod
    def _check_depth(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 0:
            raise ValueError("must be >= 0, 'finalized' or 'safe'")
        return value

    def no_subscription_contract(self) -> ConfigError:
        """The error for following the contract without one: a typed check, not an
        ``assert``, so it holds under ``python -O`` too."""
        return ConfigError(NO_SUBSCRIPTION_CONTRACT)


class SignerConfig(_Section):
    """The key that owns the NFT contract and pays for mints."""

    private_key_file: Path = Path("/etc/blockhost/deployer.key")
    max_fee_gwei: float = Field(default=200.0, gt=0)
    max_priority_fee_gwei: float = Field(default=2.0, ge=0)


class NftConfig(_Section):
    description: str = "Blockhost server access credential"
    image_uri: str = ""
    signing_page_path: Path | None = None


class ProxmoxConfig(_Section):
    backend: Literal["api", "terraform"] = "api"
    api_url: str = "https://127.0.0.1:8006"
    token_id: str = ""
    token_secret_file: Path = Path("/etc/blockhost/pve-token")
    verify_ssl: bool | Path = True
    nodes: list[str] = Field(default_factory=list)
    _split_nodes = field_validator("nodes", mode="before")(lambda v: _split_csv(v))
    template_vmid: int = Field(default=9001, ge=100)
    template_image: str = ""  # `template build`: STORAGE:import/FILE (or an absolute path)
    pool: str = "blockhost"
    tag: str = Field(default="blockhost", pattern=r"^[a-z0-9_][a-z0-9_\-+.]*$")
    storage: str = "local-lvm"
    cloudinit_storage: str = "local"
    snippets_dir: Path | None = Path("/var/lib/vz")
    full_clone: bool = True
    max_parallel: int = Field(default=8, ge=1, le=64)  # worker threads = creates in flight
    max_parallel_per_node: int = Field(default=4, ge=1, le=64)  # placement: creates per node
    #: how often every built VM is compared with Proxmox (stopped or deleted behind our back)
    drift_check_interval: float = Field(default=300.0, ge=5.0)
    terraform_dir: Path = Path("/var/lib/blockhost/terraform")

    @field_validator("api_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith("https://"):
            raise ValueError("must be an https:// URL (the PVE API is served over TLS only)")
        return value

    @field_validator("token_id")
    @classmethod
    def _check_token_id(cls, value: str) -> str:
        if value and ("@" not in value or "!" not in value):
            raise ValueError("must look like USER@REALM!TOKENID")
        return value


class PlanSize(_Section):
    cores: int = Field(default=1, ge=1, le=512)
    memory: int = Field(default=2048, ge=64, description="MiB")
    disk: int = Field(default=20, ge=1, description="GiB")


class IpPool(_Section):
    """IPv4 pool: a network of any prefix length, an inclusive range inside it, a gateway."""

    network: str = "192.168.122.0/24"
    start: int | str = 200
    end: int | str = 250
    gateway: str | None = "192.168.122.1"

    @model_validator(mode="after")
    def _check(self) -> IpPool:
        net = ipaddress.ip_network(self.network, strict=False)
        if net.version != 4:
            raise ValueError("network must be IPv4")
        first, last = self.bounds()
        if first > last:
            raise ValueError("start must not be after end")
        if first not in net or last not in net:
            raise ValueError("start and end must lie inside network")
        if self.gateway is not None:
            ipaddress.IPv4Address(self.gateway)
        return self

    def bounds(self) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
        net = ipaddress.ip_network(self.network, strict=False)

        def resolve(value: int | str) -> ipaddress.IPv4Address:
            if isinstance(value, int):
                return ipaddress.IPv4Address(int(net.network_address) + value)
            return ipaddress.IPv4Address(value)

        return resolve(self.start), resolve(self.end)


class Ipv6Pool(_Section):
    """IPv6 host addresses: prefix + offsets; the prefix may come from the broker allocation."""

    prefix: str | None = None
    start: int = Field(default=2, ge=1)
    end: int = Field(default=254, ge=1)
    gateway: str | None = None


class VmidRange(_Section):
    start: int = Field(default=100000, ge=100)
    end: int = Field(default=100999, le=999_999_999)

    @model_validator(mode="after")
    def _check(self) -> VmidRange:
        if self.start > self.end:
            raise ValueError("start must not be after end")
        return self


class NetworkHooks(_Section):
    """argv lists (no shell) run after a VM is created / destroyed; see
    provisioner.network_hooks for the environment they get."""

    on_create: list[list[str]] = Field(default_factory=list)
    on_destroy: list[list[str]] = Field(default_factory=list)
    timeout: float = Field(default=60, gt=0, le=3600)

    @field_validator("on_create", "on_destroy")
    @classmethod
    def _check_hooks(cls, value: list[list[str]]) -> list[list[str]]:
        from provisioner.network_hooks import validate_hook

        for argv in value:
            validate_hook(argv)
        return value


class NetworkConfig(_Section):
    ip_pool: IpPool = Field(default_factory=IpPool)
    ipv6_pool: Ipv6Pool = Field(default_factory=Ipv6Pool)
    bridge: str = "vmbr0"
    vmid_range: VmidRange = Field(default_factory=VmidRange)
    hooks: NetworkHooks = Field(default_factory=NetworkHooks)


class VmConfig(_Section):
    username: str = Field(default="admin", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    name_prefix: str = Field(default="blockhost-", pattern=r"^[a-zA-Z0-9][a-zA-Z0-9.-]*$")
    cloud_init_template: str = Field(default="nft-auth", pattern=r"^[A-Za-z0-9_.-]+$")
    #: The public RPC endpoint tenants' VMs are given ("" = none); never chain.rpc_urls,
    #: which may carry the operator's API key.
    rpc_url: str = ""

    @field_validator("rpc_url")
    @classmethod
    def _check_rpc_url(cls, value: str) -> str:
        if value and not re.fullmatch(r"https?://[^\s/?#]+(/\S*)?", value):
            raise ValueError("must be an http(s):// URL (or empty: VMs get no RPC endpoint)")
        return value


class GcConfig(_Section):
    grace_days: float = Field(default=7, ge=0)


class DbConfig(_Section):
    path: Path = Path("/var/lib/blockhost/blockhost.db")


class MetricsConfig(_Section):
    #: host:port (or [v6]:port) for /healthz, /readyz and /metrics; None = not served
    listen: str | None = None

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(
                r"(\[[0-9a-fA-F:.]+\]|[^\s:\[\]]*):\d{1,5}", value):
            raise ValueError("must be host:port or [v6]:port, e.g. 127.0.0.1:9100")
        return value


class Config(_Section):
    """The whole configuration, resolved once at start-up."""

    chain: ChainConfig = Field(default_factory=ChainConfig)
    signer: SignerConfig = Field(default_factory=SignerConfig)
    server_key_file: Path = Path("/etc/blockhost/server.key")
    public_secret_default: str = "blockhost-access"
    nft: NftConfig = Field(default_factory=NftConfig)
    proxmox: ProxmoxConfig = Field(default_factory=ProxmoxConfig)
    plans: dict[str, PlanSize] = Field(default_factory=lambda: {"default": PlanSize()})
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    vm: VmConfig = Field(default_factory=VmConfig)
    gc: GcConfig = Field(default_factory=GcConfig)
    db: DbConfig = Field(default_factory=DbConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)

    @field_validator("plans", mode="before")
    @classmethod
    def _stringify_plan_ids(cls, value: Any) -> Any:
        """YAML reads ``1:`` as an int key; plan ids are compared as strings."""
        if isinstance(value, Mapping):
            return {str(key): size for key, size in value.items()}
        return value

    @field_validator("plans")
    @classmethod
    def _check_plans(cls, value: dict[str, PlanSize]) -> dict[str, PlanSize]:
        for key in value:
            if key != "default" and not key.isdigit():
                raise ValueError(f"plan key {key!r} must be a plan id (integer) or 'default'")
        if "default" not in value:
            value = {**value, "default": PlanSize()}
        return value

    def plan_size(self, plan_id: int) -> PlanSize:
        """VM size for an on-chain plan id; unknown plans get the default size."""
        return self.plans.get(str(plan_id), self.plans["default"])

    @property
    def grace_seconds(self) -> int:
        return int(self.gc.grace_days * 86400)


# ---------------------------------------------------------------- loading


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}; check the path "
                          "(--config or BLOCKHOST_CONFIG)") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML; fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return data


def env_overlay(environ: Mapping[str, str]) -> dict[str, Any]:
    """``BLOCKHOST_SECTION__KEY=value`` → {"section": {"key": value}} (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == "BLOCKHOST_CONFIG":
            continue
        path = name[len(ENV_PREFIX):].lower().split("__")
        if not all(path) or path[0] not in Config.model_fields:
            continue
        # Scalars stay strings and pydantic coerces them ("12" -> 12, "false" -> False);
        # only explicit YAML/JSON collections are parsed, so "0xabc…" stays an address.
        value: Any = raw
        if raw.lstrip().startswith(("[", "{")):
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError:
                raise ConfigError(f"environment variable {name}: not a valid YAML list/mapping") from None
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def _format_error(err: ValidationError, origin: str) -> str:
    first = err.errors()[0]
    path = ".".join(str(p) for p in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        reason = "unknown key; check the spelling against PROJECT.yaml config_keys"
    else:
        reason = first["msg"].removeprefix("Value error, ")
    more = len(err.errors()) - 1
    suffix = f" (+{more} more)" if more else ""
    return f"config error in {origin}: {path}: {reason}{suffix}"


def apply_broker_allocation(raw: dict[str, Any], allocation_file: Path) -> dict[str, Any]:
    """Take the IPv6 prefix (and gateway) from the tunnel broker's allocation file if present."""
    if not allocation_file.exists():
        return raw
    try:
        data = json.loads(allocation_file.read_text())
        prefix = data["prefix"]
        ipaddress.IPv6Network(prefix, strict=False)
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"{allocation_file}: not a valid broker allocation (needs an IPv6 "
                          "'prefix'); fix or remove the file") from None
    v6 = {"prefix": prefix}
    if data.get("gateway"):
        v6["gateway"] = data["gateway"]
    return _deep_merge(raw, {"network": {"ipv6_pool": v6}})


def build_config(raw: Mapping[str, Any], *, origin: str = "config") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err, origin)) from None


def load_config(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    broker_allocation: Path | None = DEFAULT_BROKER_ALLOCATION,
) -> Config:
    """Load and validate the configuration; raise ConfigError with one actionable line."""
    env = os.environ if environ is None else environ
    if path is None:
        path = Path(env.get("BLOCKHOST_CONFIG", str(DEFAULT_CONFIG_PATH)))
    if not path.exists():
        raise ConfigError(f"config file {path} not found; pass --config PATH, set "
                          "BLOCKHOST_CONFIG, or create it (see README 'Configuration')")
    raw: dict[str, Any] = {}
    legacy_db = path.parent / "db.yaml"
    legacy_web3 = path.parent / "web3-defaults.yaml"
    raw = _deep_merge(raw, legacy_overlay(
        _read_yaml(legacy_db) if legacy_db.exists() else None,
        _read_yaml(legacy_web3) if legacy_web3.exists() else None,
    ))
    raw = _deep_merge(raw, map_reference_keys(_read_yaml(path), origin=str(path)))
    raw = _deep_merge(raw, env_overlay(env))
    if broker_allocation is not None:
        raw = apply_broker_allocation(raw, broker_allocation)
    return build_config(raw, origin=str(path))


#: What a command cannot run without, though the model allows it unset (other commands
#: do without): checked when the command loads its config, one line naming the key.
REQUIRED_BY_COMMAND: dict[str, tuple[str, ...]] = dict.fromkeys(
    ("listen", "replay", "reorg"), ("chain.rpc_urls", "chain.subscription_contract"))


def require_for(command: str, config: Config) -> Config:
    """``config`` when it has every key ``command`` needs; else ConfigError naming one."""
    for path in REQUIRED_BY_COMMAND.get(command, ()):
        section, _, key = path.partition(".")
        if getattr(getattr(config, section), key):
            continue
        if path == "chain.subscription_contract":
            raise ConfigError(f"`blockhost {command}`: {NO_SUBSCRIPTION_CONTRACT}")
        raise ConfigError(f"`blockhost {command}`: config error: {path} is not set; set it "
                          "(see PROJECT.yaml config_keys)")
    return config


def config_key_paths(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """Every leaf key path of the model (for the PROJECT.yaml drift test and docs)."""
    paths: list[str] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        full = f"{prefix}{name}"
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths.extend(config_key_paths(annotation, f"{full}."))
        elif name == "plans":
            paths.extend(f"plans.<id>.{sub}" for sub in PlanSize.model_fields)
        else:
            paths.append(full)
    return paths
