"""Which Linux login names a subscriber's VM account may have."""

from __future__ import annotations

import re

_USERNAME_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")

#: Accounts that exist on a stock Debian/Ubuntu image; creating the owner's login under
#: one of these names would hand a system account to the subscriber.
RESERVED_USERNAMES = frozenset(
    {
        "root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news",
        "uucp", "proxy", "www-data", "backup", "list", "irc", "gnats", "nobody", "_apt",
        "messagebus", "sshd", "polkitd", "syslog", "uuidd", "tcpdump", "tss",
        "landscape", "fwupd-refresh", "dnsmasq",
    }
)


def validate_username(username: object) -> str:
    """Return ``username`` if it is a safe Linux login name, else raise ValueError."""
    if not isinstance(username, str) or not _USERNAME_RE.fullmatch(username):
        raise ValueError(
            "username must start with a lowercase letter or '_' and contain only "
            "lowercase letters, digits, '_' or '-' (1-32 characters)"
        )
    if username in RESERVED_USERNAMES:
        raise ValueError(f"username {username!r} is a system account name; choose another")
    return username
