"""structlog configuration: JSON lines for machines, a console renderer on a TTY."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import TextIO

import structlog

from listener.redact import redact

#: Keys whose values must never reach a log line, whatever a caller passes.
_SECRET_KEYS = frozenset({"signature", "private_key", "token_secret", "secret", "password",
                          "user_signature", "key"})


def _drop_secrets(_logger: object, _name: str,
                  event: MutableMapping[str, object]) -> MutableMapping[str, object]:
    for key in list(event):
        if key.lower() in _SECRET_KEYS:
            event[key] = "[redacted]"
    return event


def _scrubbed(value: object) -> object:
    """``value`` with every string in it redacted (exceptions become their redacted text)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, BaseException):
        return redact(f"{type(value).__name__}: {value}")
    if isinstance(value, dict):
        return {key: _scrubbed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(item) for item in value]
    return value


def _redact_text(_logger: object, _name: str,
                 event: MutableMapping[str, object]) -> MutableMapping[str, object]:
    """No URL key, token secret, private key or signature in a log line; a field named as a
    hash (``tx_hash``, ``block_hash``) is public and kept."""
    for key, value in event.items():
        if not key.endswith("hash"):
            event[key] = _scrubbed(value)
    return event


class _RedactingFormatter(logging.Formatter):
    """Library log records (urllib3 quotes the URL it retries) pass the same redaction."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class _CurrentStream:
    """Writes to whatever ``sys.stdout`` / ``sys.stderr`` is at the moment of writing, so a
    stream swapped later (a test harness, a daemonizing wrapper) is never written after close."""

    def __init__(self, name: str) -> None:
        self._name = name

    def _target(self) -> TextIO:
        stream: TextIO = getattr(sys, self._name)
        return stream

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def isatty(self) -> bool:
        return self._target().isatty()


def configure(stream: TextIO | None = None, *, level: int = logging.INFO) -> None:
    """Route structlog (and stdlib logging from libraries) to ``stream``.

    ``sys.stdout`` / ``sys.stderr`` (the default) are resolved at each write."""
    out: TextIO
    if stream is None or stream is sys.stderr:
        out = _CurrentStream("stderr")  # type: ignore[assignment]  # duck-typed TextIO (write/flush)
    elif stream is sys.stdout:
        out = _CurrentStream("stdout")  # type: ignore[assignment]  # duck-typed TextIO (write/flush)
    else:
        out = stream
    renderer: structlog.typing.Processor
    if out.isatty():
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer(sort_keys=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _drop_secrets,
            structlog.processors.format_exc_info,
            _redact_text,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(_RedactingFormatter("%(name)s: %(message)s"))
    logging.basicConfig(handlers=[handler], level=logging.WARNING)
