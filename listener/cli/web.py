"""``blockhost web serve|export``: the subscriber's pages with this deployment's config."""

from __future__ import annotations

import argparse

from listener.cli.parser import config_from


def run(args: argparse.Namespace) -> int:
    handlers = {"serve": cmd_web_serve, "export": cmd_web_export}
    return handlers[args.web_command](args)


def cmd_web_serve(args: argparse.Namespace) -> int:
    from listener.ops.web_server import make_server

    server = make_server(config_from(args), args.listen)
    host, port = server.server_address[:2]
    print(f"serving the signup page on http://{_url_host(str(host))}:{port}/signup.html "
          "(renew.html, credentials.html beside it); Ctrl-C stops", flush=True)
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
