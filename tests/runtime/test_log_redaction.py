"""Log lines (ours and the libraries') pass the redaction; public hashes stay readable."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from listener.runtime.logging_setup import configure

URL = "https://user:pw@x.invalid/v3/SECRETKEY?apikey=QUERYKEY"
TX_HASH = "0x" + "ab" * 32


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers.clear()  # basicConfig only acts on a root logger without handlers
    out = io.StringIO()
    configure(out)
    try:
        yield out
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        root.handlers.extend(saved)
        structlog.reset_defaults()


def test_structlog_fields_and_tracebacks_are_redacted(stream: io.StringIO) -> None:
    log = structlog.get_logger("test")
    try:
        raise ConnectionError(f"failed for url: {URL}")
    except ConnectionError as exc:
        log.exception("rpc.failed", url=URL, nested={"urls": [URL]}, error=exc, tx_hash=TX_HASH)
    line = json.loads(stream.getvalue())
    text = json.dumps(line)
    for secret in ("SECRETKEY", "QUERYKEY", "pw@"):
        assert secret not in text
    assert "x.invalid" in line["url"] and line["tx_hash"] == TX_HASH
    assert "ConnectionError" in line["exception"]


def test_library_records_are_redacted(stream: io.StringIO) -> None:
    logging.getLogger("urllib3.connectionpool").warning("Retrying after error: %s", URL)
    assert "x.invalid" in stream.getvalue()
    assert "SECRETKEY" not in stream.getvalue() and "QUERYKEY" not in stream.getvalue()
