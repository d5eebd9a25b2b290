"""HTTPS for ``blockhost web serve``: the certificate and key the operator names, loaded into a
server-side TLS context (TLS 1.2 or newer).

Wallets and browsers treat a page served over plain HTTP from anywhere but localhost as
insecure, and the page's config (contract addresses, the server's public key) must not be
swapped on the way: served to the Internet, the pages need TLS, either here or from a reverse
proxy in front. The key file is checked like every secret file: only its owner may read it.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from listener.crypto.key_files import read_owner_only_file
from listener.errors import UserError


def tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """The server context for ``cert_file`` (PEM, the chain after the leaf) and ``key_file``
    (PEM, owner-only); UserError naming the file and the fix otherwise."""
    read_owner_only_file(key_file, what="TLS key", expected="PEM private key",
                         missing_hint="give --tls-key the certificate's private key (mode 0600)")
    if not Path(cert_file).is_file():
        raise UserError(f"TLS certificate file {cert_file} not found: give --tls-cert the PEM "
                        "certificate (chain) for the page's host name")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file))
    except ssl.SSLError as exc:
        raise UserError(f"cannot use TLS certificate {cert_file} with key {key_file}: "
                        f"{exc.reason or exc}; check that both are PEM and that the key is the "
                        "certificate's") from None
    return context
