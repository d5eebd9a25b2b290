"""The API token: its ``USER@REALM!TOKENID=SECRET`` form, and the 401 check of a request."""

from __future__ import annotations

import hmac
import re

from provisioner.pvesim.errors import SimError

TOKEN_RE = re.compile(r"^(?P<user>[^@!=\s]+@[^@!=\s]+)!(?P<tokenid>[A-Za-z][A-Za-z0-9._\-]*)="
                      r"(?P<secret>\S+)$")
_PREFIX = "PVEAPIToken="


def parse_token(text: str) -> tuple[str, str]:
    """``USER@REALM!TOKENID=SECRET`` -> (``USER@REALM!TOKENID``, ``SECRET``)."""
    m = TOKEN_RE.match(text.strip())
    if not m:
        raise ValueError("API token must look like USER@REALM!TOKENID=SECRET")
    return f"{m.group('user')}!{m.group('tokenid')}", m.group("secret")


def authenticate(header: str | None, token_id: str, token_secret: str) -> str:
    """The token id of an ``Authorization`` header carrying the one valid token, else 401."""
    if not header or not header.startswith(_PREFIX):
        raise SimError(401, "No ticket")
    try:
        given_id, secret = parse_token(header[len(_PREFIX):])
    except ValueError:
        raise SimError(401, "permission denied - invalid PVE API token") from None
    ok_id = hmac.compare_digest(given_id.encode(), token_id.encode())
    ok_secret = hmac.compare_digest(secret.encode(), token_secret.encode())
    if not (ok_id and ok_secret):
        raise SimError(401, "permission denied - invalid PVE API token")
    return given_id
