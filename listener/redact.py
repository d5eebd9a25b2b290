"""One redaction for every text that leaves the process (logs, database, status, CLI errors).

Operators put API keys in RPC URLs and secrets travel inside exception messages
(``requests`` quotes the URL it failed on), so text is scrubbed at the exit, not at the source.
It is a pure function of its input and never raises: it runs inside error handlers.
"""

from __future__ import annotations

import re

#: What every removed secret becomes.
MASK = "***"

# Characters that end a URL or a path token in free text, JSON and reprs.
_STOP = r"\s'\"<>\\`"

_USERINFO = re.compile(rf"(://)[^{_STOP}/@?#]+@")
_QUERY = re.compile(rf"(/[^{_STOP}/?#]*)([?#])[^{_STOP})\]]+")
#: Whatever follows an API version segment: Infura ``/v3/<key>``, Alchemy ``/v2/<key>``.
_AFTER_VERSION = re.compile(rf"(/v\d{{1,2}}/)[^{_STOP}/?#)\]]+")
#: A long mixed token as a path segment (QuickNode, Ankr and the like).
_LONG_SEGMENT = re.compile(rf"(?<=/)[A-Za-z0-9]{{20,}}(?=[/?#{_STOP})\],;]|$)")
#: A PVE API token's secret: ``USER@REALM!TOKENID=<secret>``.
_TOKEN_SECRET = re.compile(rf"(@[\w.-]+![\w.-]+=)[^{_STOP},;)\]]+")
_UUID_AFTER_EQUALS = re.compile(
    r"(=\s*)[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
#: Signatures (65 bytes) and private keys (32 bytes) as standalone hex.
_SIGNATURE = re.compile(r"(?<![0-9a-zA-Z])(?:0x)?[0-9a-fA-F]{130}(?![0-9a-zA-Z])")
_PRIVATE_KEY = re.compile(r"(?<![0-9a-zA-Z])(?:0x)?[0-9a-fA-F]{64}(?![0-9a-zA-Z])")


def _mask_if_mixed(match: re.Match[str]) -> str:
    """A key mixes letters and digits; a long word or a long number is left alone."""
    token = match.group()
    mixed = any(c.isdigit() for c in token) and any(c.isalpha() for c in token)
    return MASK if mixed else token


def redact(text: str) -> str:
    """``text`` without URL user-info, query strings, key-like path segments, PVE token
    secrets, private keys and signatures; everything else is left as it was."""
    text = _USERINFO.sub(rf"\1{MASK}@", text)
    text = _QUERY.sub(rf"\1\2{MASK}", text)
    text = _AFTER_VERSION.sub(rf"\1{MASK}", text)
    text = _LONG_SEGMENT.sub(_mask_if_mixed, text)
    text = _TOKEN_SECRET.sub(rf"\1{MASK}", text)
    text = _UUID_AFTER_EQUALS.sub(rf"\1{MASK}", text)
    text = _SIGNATURE.sub(MASK, text)
    return _PRIVATE_KEY.sub(MASK, text)
