"""The served pages for a dev environment: ``blockhost web serve``'s server on a free port."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from listener.config import Config, load_config
from listener.devkit.devenv import DevEnv
from listener.ops.web_server import make_server, serve_in_thread


def env_config(env: DevEnv) -> Config:
    return load_config(env.config_path, environ={}, broker_allocation=None)


@contextmanager
def served(env: DevEnv) -> Iterator[str]:
    """Base URL (``http://127.0.0.1:PORT/``) of the pages with ``env``'s config.json."""
    server = make_server(env_config(env), "127.0.0.1:0")
    thread = serve_in_thread(server)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
