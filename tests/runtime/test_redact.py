"""The one redaction: secrets out, everything else kept, never an exception (hostile input)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from listener.redact import MASK, redact

HEX = "0123456789abcdefABCDEF"
#: Text around a secret: no letters, digits or URL characters that could extend the token.
SURROUNDINGS = st.text(alphabet=st.sampled_from([*" \t\n,;:()[]{}'\"<>|!", "é", "→"]),
                       max_size=20)
#: Anything: arbitrary unicode, URL syntax, near-miss hex runs and backslashes.
HOSTILE = st.one_of(
    st.text(),
    st.text(alphabet=st.sampled_from(list("/:?#@=!.-_x0123456789abcdefvV3 \\'\"")), max_size=300),
    st.lists(st.sampled_from(["https://", "http://", "u:p@", "/v3/", "?", "#", "=", "@", "!",
                              "a" * 64, "0x", "f" * 130, "/", "SECRET", " ", "\\", "\n"]),
             max_size=40).map("".join),
)
TOKENS = st.text(alphabet=st.sampled_from(list("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
                                               "123456789")), min_size=1, max_size=60)
KEYS = st.text(alphabet=st.sampled_from(list(HEX)), min_size=64, max_size=64)
SIGNATURES = st.text(alphabet=st.sampled_from(list(HEX)), min_size=130, max_size=130)


@settings(max_examples=500)
@given(HOSTILE)
def test_never_raises_and_is_idempotent(text: str) -> None:
    once = redact(text)
    assert isinstance(once, str)
    assert redact(once) == once


@given(before=SURROUNDINGS, after=SURROUNDINGS, key=TOKENS, version=st.integers(1, 9))
def test_a_key_after_an_api_version_is_removed(before: str, after: str, key: str,
                                               version: int) -> None:
    for url in (f"https://x.invalid/v{version}/{key}", f"url: /v{version}/{key}"):
        out = redact(f"{before}{url}{after}")
        assert key not in out.split(f"/v{version}/", 1)[1][:len(key) + 1]
        assert f"/v{version}/{MASK}" in out


@given(before=SURROUNDINGS, after=SURROUNDINGS, user=TOKENS, password=TOKENS, query=TOKENS)
def test_user_info_and_query_strings_are_removed(before: str, after: str, user: str,
                                                 password: str, query: str) -> None:
    out = redact(f"{before}https://{user}:{password}@rpc.example/api?key={query}{after}")
    assert f"https://{MASK}@rpc.example/api?{MASK}" in out
    assert f"{password}@" not in out and f"key={query}" not in out


@given(before=SURROUNDINGS, after=SURROUNDINGS, key=KEYS, prefix=st.sampled_from(["", "0x"]))
def test_private_keys_are_removed(before: str, after: str, key: str, prefix: str) -> None:
    assert redact(f"{before}{prefix}{key}{after}") == f"{before}{MASK}{after}"


@given(before=SURROUNDINGS, after=SURROUNDINGS, sig=SIGNATURES, prefix=st.sampled_from(["", "0x"]))
def test_signatures_are_removed(before: str, after: str, sig: str, prefix: str) -> None:
    assert redact(f"{before}{prefix}{sig}{after}") == f"{before}{MASK}{after}"


@given(secret=st.uuids(), after=SURROUNDINGS)
def test_pve_token_secrets_are_removed(secret: object, after: str) -> None:
    for text in (f"PVEAPIToken=root@pam!blockhost={secret}{after}",
                 f"token_secret= {secret}{after}"):
        out = redact(text)
        assert str(secret) not in out and MASK in out


@pytest.mark.parametrize(("text", "expected"), [
    ("HTTPSConnectionPool(host='x.invalid', port=443): Max retries exceeded with url: "
     "/v3/SECRETKEY (Caused by NameResolutionError)",
     "HTTPSConnectionPool(host='x.invalid', port=443): Max retries exceeded with url: "
     f"/v3/{MASK} (Caused by NameResolutionError)"),
    ("404 Client Error: Not Found for url: https://eth-mainnet.g.alchemy.com/v2/Ab-12_xY",
     f"404 Client Error: Not Found for url: https://eth-mainnet.g.alchemy.com/v2/{MASK}"),
    ("https://rpc.ankr.com/eth/0123456789abcdef0123456789abcdef/",
     f"https://rpc.ankr.com/eth/{MASK}/"),
    ('{"error": "https://x.invalid/v3/SECRETKEY"}', f'{{"error": "https://x.invalid/v3/{MASK}"}}'),
])
def test_what_libraries_say_is_scrubbed(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize("text", [
    "config file /tmp/pytest-of-root/pytest-3/test_missing_config_file0/x.yaml not found",
    "Proxmox: 500 on /api2/json/nodes/pve1/qemu/100123/status/current",
    "create_vm: VMID 100000 is taken; moved to 100001",
    "https://127.0.0.1:8006/api2/json (is it running?)",
    "tx 0x1234 for mint:sub:7 is not confirmed yet",
])
def test_ordinary_text_is_kept(text: str) -> None:
    assert redact(text) == text
