"""Cloud-init rendering: valid cloud-config, typed values, and hostile strings kept inert."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provisioner import cloudinit
from provisioner.cloudinit import MissingVariablesError, TemplateError
from tests.support.paths import REPO_ROOT

TEMPLATE = REPO_ROOT / "cloud-init" / "templates" / "nft-auth.yaml"

VARIABLES: dict[str, str | int] = {
    "VM_NAME": "blockhost-042",
    "VM_IP": "192.0.2.42",
    "VM_IPV6": "2001:db8::42",
    "SIGNING_HOST": "[2001:db8::42]",
    "USERNAME": "admin",
    "NFT_TOKEN_ID": 17,
    "WALLET_ADDRESS": "0x" + "Ab" * 20,
    "CHAIN_ID": 31337,
    "NFT_CONTRACT": "0x" + "cD" * 20,
    "RPC_URL": "https://rpc.example.org/v2/KEY",
    "OTP_LENGTH": 6,
    "OTP_TTL": 300,
    "SECRET_KEY": "0f" * 32,
}

HOSTILE = [
    "it's \"quoted\"",
    "line1\nline2\n",
    "key: value",
    "a # comment",
    "{{ jinja }} {% if %}",
    "${VM_NAME} and $${X} and $VM_NAME",
    "&a [*a, *a]",
    "!!python/object/apply:os.system ['id']",
    '"""\nmultiline = """',
    "x\"\n[section]\nevil = 1\n",
    "back\\slash \\n \\u0000",
    "tab\there\r\nCR",
    "nul\x00del\x7fesc\x1b",
    "--- \n...\n%YAML 1.1",
    "- item\n  - nested",
    "| literal\n> folded",
    "  leading and trailing  ",
    "\ufeffbom \u2028ls \u2029ps \x85nel",
    "ünïcødé ✓ 🚀",
    "",
    "true",
    "0o17",
    "null",
    "~",
    "[1, 2]",
    "'single' \"double\" `back`",
    "#cloud-config\nruncmd: [[rm, -rf, /]]",
]


def _files(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["path"]: entry for entry in doc["write_files"]}


def _toml(doc: dict[str, Any], path: str) -> dict[str, Any]:
    return tomllib.loads(_files(doc)[path]["content"])


def _render(**overrides: str | int) -> tuple[str, dict[str, Any]]:
    text = cloudinit.render("nft-auth", {**VARIABLES, **overrides})
    return text, yaml.safe_load(text)


# ---------------------------------------------------------------- the shipped template


def test_template_variables() -> None:
    assert cloudinit.list_variables(TEMPLATE.read_text()) == set(VARIABLES)


def test_render_nft_auth() -> None:
    text, doc = _render()
    assert text.splitlines()[0] == "#cloud-config"
    assert doc["hostname"] == "blockhost-042"
    (user,) = doc["users"]
    assert user["name"] == "admin"
    assert user["gecos"] == "nft=17"
    assert user["groups"] == ["sudo"]
    assert user["lock_passwd"] is True
    assert doc["ssh_pwauth"] is False
    assert "qemu-guest-agent" in doc["packages"]

    pam = _toml(doc, "/etc/pam_web3/config.toml")
    assert pam == {
        "machine": {"id": "blockhost-042", "secret_key": "0f" * 32},
        "auth": {
            "mode": "nft",
            "nft_lookup": "passwd",
            "signing_url": "https://[2001:db8::42]:8443",
            "otp_length": 6,
            "otp_ttl_seconds": 300,
            "callback_enabled": True,
            "callback_grace_seconds": 10,
        },
        "blockchain": {
            "socket_path": "/run/web3-auth/web3-auth.sock",
            "chain_id": 31337,
            "nft_contract": "0x" + "cD" * 20,
            "timeout_seconds": 10,
        },
    }
    web3 = _toml(doc, "/etc/web3-auth/config.toml")
    assert web3["socket_path"] == pam["blockchain"]["socket_path"]
    assert web3["default_chain_id"] == 31337
    assert web3["default_contract"] == "0x" + "cD" * 20
    assert web3["jsonrpc"] == {"rpc_url": "https://rpc.example.org/v2/KEY", "timeout_seconds": 30}
    assert web3["https"]["port"] == 8443
    info = _toml(doc, "/etc/blockhost/vm.toml")
    assert info["vm"] == {"name": "blockhost-042", "ip": "192.0.2.42", "ipv6": "2001:db8::42",
                          "username": "admin"}
    assert info["credential"]["wallet"] == "0x" + "Ab" * 20
    assert info["credential"]["nft_token_id"] == "17"

    files = _files(doc)
    assert files["/etc/pam_web3/config.toml"]["permissions"] == "0600"
    assert files["/etc/web3-auth/config.toml"]["permissions"] == "0600"
    sshd = files["/etc/ssh/sshd_config.d/10-web3-only.conf"]["content"]
    assert "KbdInteractiveAuthentication yes" in sshd
    assert "AuthenticationMethods keyboard-interactive" in sshd
    assert "PubkeyAuthentication no" in sshd
    assert "pam_web3.so" in files["/etc/pam.d/sshd"]["content"]
    assert ["systemctl", "enable", "--now", "qemu-guest-agent"] in doc["runcmd"]
    assert doc["runcmd"][0][-1] == "blockhost-042"  # the VM name is an argv item, not script text


def test_render_is_deterministic_and_accepts_string_numbers() -> None:
    first = cloudinit.render("nft-auth", VARIABLES)
    assert cloudinit.render(TEMPLATE, VARIABLES) == first
    as_strings = {name: str(value) for name, value in VARIABLES.items()}
    assert cloudinit.render("nft-auth", as_strings) == first


def test_empty_addresses() -> None:
    _, doc = _render(VM_IPV6="")
    assert _toml(doc, "/etc/blockhost/vm.toml")["vm"]["ipv6"] == ""
    _, doc = _render(VM_IP="", SIGNING_HOST="2001:db8::42")
    assert _toml(doc, "/etc/blockhost/vm.toml")["vm"]["ip"] == ""


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("2001:db8::42", "https://[2001:db8::42]:8443"),  # bare IPv6 is bracketed
        ("[2001:db8::42]", "https://[2001:db8::42]:8443"),
        ("192.0.2.42", "https://192.0.2.42:8443"),
        ("vm-42.example.org", "https://vm-42.example.org:8443"),
    ],
)
def test_signing_host_forms(host: str, url: str) -> None:
    _, doc = _render(SIGNING_HOST=host)
    assert _toml(doc, "/etc/pam_web3/config.toml")["auth"]["signing_url"] == url


def test_dotted_vm_name() -> None:
    _, doc = _render(VM_NAME="vm-1.example.org")
    assert doc["hostname"] == "vm-1.example.org"


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_are_inert_in_shipped_template(value: str) -> None:
    text, doc = _render(RPC_URL=value)
    assert text.startswith("#cloud-config\n")
    web3 = _toml(doc, "/etc/web3-auth/config.toml")
    assert web3["jsonrpc"]["rpc_url"] == value
    assert set(web3) == {"socket_path", "backend", "default_chain_id", "default_contract", "jsonrpc", "https"}
    assert set(web3["jsonrpc"]) == {"rpc_url", "timeout_seconds"}
    assert web3["default_chain_id"] == 31337
    pam = _toml(doc, "/etc/pam_web3/config.toml")
    assert set(pam) == {"machine", "auth", "blockchain"}
    assert len(doc["write_files"]) == 5
    assert len(doc["runcmd"]) == 4


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("USERNAME", "Admin"),
        ("USERNAME", "root"),
        ("USERNAME", "a b"),
        ("USERNAME", "x" * 33),
        ("USERNAME", "admin\nroot"),
        ("NFT_TOKEN_ID", "1\nroot::0:0"),
        ("NFT_TOKEN_ID", -1),
        ("NFT_TOKEN_ID", True),
        ("OTP_LENGTH", "6; rm -rf /"),
        ("OTP_LENGTH", 2),
        ("OTP_LENGTH", "٣"),  # a Unicode digit is not a decimal ASCII digit
        ("CHAIN_ID", 0),
        ("CHAIN_ID", 2**63),
        ("OTP_TTL", "300s"),
        ("WALLET_ADDRESS", "0x1234"),
        ("NFT_CONTRACT", '0x" + evil'),
        ("VM_NAME", "vm_1"),
        ("VM_NAME", "-vm"),
        ("VM_NAME", "a..b"),
        ("VM_NAME", "a" * 64),
        ("SIGNING_HOST", "evil.example:1/x"),
        ("SIGNING_HOST", "[10.0.0.1]"),
        ("SIGNING_HOST", "host\n[x]"),
        ("SIGNING_HOST", ""),
        ("VM_NAME", 7),
        ("VM_IP", "10.0.0.300"),
        ("VM_IPV6", "10.0.0.1"),
        ("SECRET_KEY", "not hex"),
        ("SECRET_KEY", "ab"),
    ],
)
def test_known_variables_are_validated(name: str, value: str | int) -> None:
    with pytest.raises(TemplateError, match=name):
        cloudinit.render("nft-auth", {**VARIABLES, name: value})


def test_validation_messages_do_not_echo_secret() -> None:
    with pytest.raises(TemplateError) as info:
        cloudinit.render("nft-auth", {**VARIABLES, "SECRET_KEY": "zz-very-secret-zz"})
    assert "very-secret" not in str(info.value)


def test_missing_variables_listed() -> None:
    partial = {k: v for k, v in VARIABLES.items() if k not in {"RPC_URL", "CHAIN_ID", "OTP_TTL"}}
    with pytest.raises(MissingVariablesError) as info:
        cloudinit.render("nft-auth", partial)
    assert info.value.names == ("CHAIN_ID", "OTP_TTL", "RPC_URL")
    assert "CHAIN_ID, OTP_TTL, RPC_URL" in str(info.value)


def test_extra_variables_allowed() -> None:
    with_extra = cloudinit.render("nft-auth", {**VARIABLES, "UNUSED_EXTRA": "x"})
    assert with_extra == cloudinit.render("nft-auth", VARIABLES)


@pytest.mark.parametrize("value", [True, 1.5, None, b"bytes", ["list"]])
def test_value_types(value: object) -> None:
    with pytest.raises(TemplateError, match="RPC_URL"):
        cloudinit.render("nft-auth", {**VARIABLES, "RPC_URL": value})


def test_lone_surrogate_rejected() -> None:
    with pytest.raises(TemplateError, match="RPC_URL"):
        cloudinit.render("nft-auth", {**VARIABLES, "RPC_URL": "a\ud800b"})


# ---------------------------------------------------------------- renderer rules (custom template)

PROBE = textwrap.dedent(
    """\
    #cloud-config
    # ${IN_A_COMMENT} is not a variable
    plain: ${A}
    quoted: "${A}"
    partial: pre-${A}-post
    twice: ${A}${B}
    typed: ${N}
    typed_quoted: "${N}"
    escaped: $${A} costs $$5 and $A
    nested:
      list: [x, "${B}", {deep: "${A}"}]
    users:
      - name: u
        gecos: nft=${A}
    write_files:
      - path: /etc/probe.toml
        permissions: "0600"
        content: !toml
          top: ${A}
          n: ${N}
          arr: ["${A}", "${B}", 3]
          "key with space": ${B}
          table:
            s: "url=${A}&b=${B}"
            sub:
              s: ${B}
      - path: /etc/static
        content: |
          static text with $${ESCAPED} only
    runcmd:
      - [echo, "${A}"]
      - - sh
        - -c
        - 'printf %s "$1"'
        - sh
        - ${B}
      - echo static shell string is fine
    """
)


def _probe(tmp_path: Path, a: str, b: str = "b", n: str | int = 5) -> dict[str, Any]:
    path = tmp_path / "probe.yaml"
    path.write_text(PROBE)
    text = cloudinit.render(path, {"A": a, "B": b, "N": n})
    assert text.startswith("#cloud-config\n")
    return yaml.safe_load(text)


def _check_probe(doc: dict[str, Any], a: str, b: str, n: str | int) -> None:
    assert doc["plain"] == a
    assert doc["quoted"] == a
    assert doc["partial"] == f"pre-{a}-post"
    assert doc["twice"] == a + b
    assert doc["typed"] == n
    assert doc["typed_quoted"] == str(n)
    assert doc["escaped"] == "${A} costs $$5 and $A"
    assert doc["nested"] == {"list": ["x", b, {"deep": a}]}
    assert doc["users"][0]["gecos"] == f"nft={a}"
    toml_doc = tomllib.loads(doc["write_files"][0]["content"])
    assert toml_doc == {
        "top": a,
        "n": n,
        "arr": [a, b, 3],
        "key with space": b,
        "table": {"s": f"url={a}&b={b}", "sub": {"s": b}},
    }
    assert doc["write_files"][1]["content"] == "static text with ${ESCAPED} only\n"
    assert doc["runcmd"][0] == ["echo", a]
    assert doc["runcmd"][1] == ["sh", "-c", 'printf %s "$1"', "sh", b]
    assert doc["runcmd"][2] == "echo static shell string is fine"
    assert set(doc) == {"plain", "quoted", "partial", "twice", "typed", "typed_quoted", "escaped",
                        "nested", "users", "write_files", "runcmd"}


def test_probe_variables() -> None:
    assert cloudinit.list_variables(PROBE) == {"A", "B", "N"}


def test_probe_typing(tmp_path: Path) -> None:
    doc = _probe(tmp_path, "x", "y", 42)
    _check_probe(doc, "x", "y", 42)
    assert isinstance(doc["typed"], int)
    doc = _probe(tmp_path, "x", "y", "42")
    assert doc["typed"] == "42"  # a string value stays a string: text is never re-typed


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_are_inert_everywhere(tmp_path: Path, value: str) -> None:
    _check_probe(_probe(tmp_path, value, value + "!", 7), value, value + "!", 7)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=st.text(max_size=60), b=st.text(alphabet=st.characters(codec="utf-8"), max_size=60),
       n=st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_property_any_text_round_trips(tmp_path: Path, a: str, b: str, n: int) -> None:
    _check_probe(_probe(tmp_path, a, b, n), a, b, n)


@settings(max_examples=100, deadline=None)
@given(value=st.text(max_size=80))
def test_property_shipped_template_round_trips(value: str) -> None:
    _, doc = _render(RPC_URL=value)
    assert _toml(doc, "/etc/web3-auth/config.toml")["jsonrpc"]["rpc_url"] == value
    assert doc["users"][0]["gecos"] == "nft=17"


def test_values_are_not_expanded_twice(tmp_path: Path) -> None:
    doc = _probe(tmp_path, "${B}", "secret-b")
    assert doc["plain"] == "${B}"
    assert doc["twice"] == "${B}secret-b"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("write_files:\n  - path: /x\n    content: |\n      host=${A}\n", "raw file body"),
        ("write_files:\n  - path: /x\n    content: ${A}\n", "raw file body"),
        ("runcmd:\n  - echo ${A}\n", "shell string"),
        ("bootcmd:\n  - ${A}\n", "shell string"),
        ("${A}: 1\n", "mapping keys"),
        ("x:\n  pre-${A}: 1\n", "mapping keys"),
        ("x: !toml\n  ${A}: 1\n", "mapping keys"),
        ("x: !toml [1, 2]\n", "!toml must be followed by a mapping"),
        ("- just\n- a list\n", "must be a YAML mapping"),
        ("x: [unclosed\n", "not valid YAML"),
        ("x: !!python/object:os.system ${A}\n", "not valid YAML"),
    ],
)
def test_template_errors(tmp_path: Path, template: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(template)
    with pytest.raises(TemplateError, match=message):
        cloudinit.render(path, {"A": "a"})


@pytest.mark.parametrize(
    ("template", "variables"),
    [
        ("x: !toml\n  v: ${A}\n", {"A": 2**63}),  # outside TOML's int64
        ("x: !toml\n  v: 1.5\n", {}),
        ("x: !toml\n  v: null\n", {}),
        ("x: !toml\n  v: [{a: 1}]\n", {}),
    ],
)
def test_unrepresentable_toml_rejected(template: str, variables: dict[str, int]) -> None:
    with pytest.raises(TemplateError, match="TOML"):
        cloudinit.render_text(template, variables)


def test_toml_dumps_escapes_and_quotes_keys() -> None:
    table = {"a b": "x\"y\\z\n\t\x00\x7f\U0001f680", "t": {"u": {"v": [True, 2, "3"]}}, "empty": {}}
    text = cloudinit.toml_dumps(table)
    assert tomllib.loads(text) == table
    assert '"a b" = ' in text


# ---------------------------------------------------------------- finding templates


def test_find_template_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (second / "nft-auth.yaml").write_text("hostname: mine\n")
    assert cloudinit.find_template("nft-auth", [second]) == second / "nft-auth.yaml"
    assert cloudinit.find_template("nft-auth.yaml", [first, second]) == second / "nft-auth.yaml"
    monkeypatch.setattr(cloudinit, "TEMPLATE_DIRS", (first, cloudinit.REPO_TEMPLATE_DIR))
    assert cloudinit.find_template("nft-auth") == TEMPLATE
    (first / "nft-auth.yaml").write_text("hostname: system\n")
    assert cloudinit.find_template("nft-auth") == first / "nft-auth.yaml"
    assert yaml.safe_load(cloudinit.render("nft-auth", {}, extra_dirs=[second]))["hostname"] == "mine"


def test_default_search_path() -> None:
    search_path = cloudinit.TEMPLATE_DIRS
    assert search_path == (Path("/usr/share/blockhost/cloud-init/templates"),
                           cloudinit.REPO_TEMPLATE_DIR)
    assert cloudinit.REPO_TEMPLATE_DIR == REPO_ROOT / "cloud-init" / "templates"


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", "..", ".hidden", "", "nft auth"])
def test_find_template_rejects_paths(name: str) -> None:
    with pytest.raises(TemplateError):
        cloudinit.find_template(name)


def test_find_template_missing(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="not found in"):
        cloudinit.find_template("does-not-exist", [tmp_path])


# ---------------------------------------------------------------- usernames and layering


@pytest.mark.parametrize("name", ["admin", "_svc", "a", "user-1", "a" * 32, "x_y-z9"])
def test_validate_username_accepts(name: str) -> None:
    assert cloudinit.validate_username(name) == name


@pytest.mark.parametrize("name", ["", "Admin", "1user", "-x", "a" * 33, "a b", "a\n", "ü", "root",
                                  "nobody", 5])
def test_validate_username_rejects(name: object) -> None:
    with pytest.raises(ValueError):
        cloudinit.validate_username(name)


def test_provisioner_does_not_import_listener() -> None:
    code = (
        "import sys, provisioner.cloudinit\n"
        "bad = [m for m in sys.modules if m == 'listener' or m.startswith('listener.')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT, timeout=60)
