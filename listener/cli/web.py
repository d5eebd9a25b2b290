"""``blockhost web serve|export``: the subscriber's pages with this deployment's config."""

from __future__ import annotations

import argparse

from listener.cli.output import print_error
from listener.cli.parser import config_from


def run(args: argparse.Namespace) -> int:
    handlers = {"serve": cmd_web_serve, "export": cmd_web_export}
    return handlers[args.web_command](args)


def cmd_web_serve(args: argparse.Namespace) -> int:
    from listener.ops.web_server import make_server
    from listener.ops.web_tls import tls_context

    if (args.tls_cert is None) != (args.tls_key is None):
        print_error("--tls-cert and --tls-key go together: give both for HTTPS, or neither "
                    "for plain HTTP (behind a TLS reverse proxy)")
        return 2
    config = config_from(args)
    tls = None if args.tls_cert is None else tls_context(args.tls_cert, args.tls_key)
    server = make_server(config, args.listen, tls)
    host, port = server.server_address[:2]
    print(f"serving the signup page on {server.scheme}://{_url_host(str(host))}:{port}"
          "/signup.html (renew.html, credentials.html beside it); Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def cmd_web_export(args: argparse.Namespace) -> int:
    from listener.ops.web import export_pages

    for path in export_pages(config_from(args), args.out):
        print(path)
    return 0


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
