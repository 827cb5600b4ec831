"""The two line formats and :func:`configure`, the CLI's log set-up.

Both formats print the record's ``extra=`` attributes (any attribute a
stock :class:`logging.LogRecord` does not have): :class:`JsonFormatter` as
keys of one JSON object a line, :class:`TextFormatter` as ``key=value``
after the message (a value with a space or quote is JSON-quoted).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any, Final, TextIO

import msgspec

from wsgate.config import LogConfig

__all__ = ["JsonFormatter", "TextFormatter", "configure", "extra_fields"]

_STOCK: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__
) | {"message", "asctime", "taskName"}
"""Attributes every record has: anything else came in ``extra=``."""

_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

_encode: Final = msgspec.json.Encoder(enc_hook=str).encode


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STOCK}


_second: Final[list[tuple[int, str]]] = [(-1, "")]
"""The last record's UTC second and its text (lines come many per second); one
tuple, replaced whole, so a record logged from another thread reads a matching pair."""


def _ts(record: logging.LogRecord) -> str:
    second = int(record.created)
    cached, text = _second[0]
    if second != cached:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second[0] = (second, text)
    return f"{text}.{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", <extra fields>..., "exc"?}``: one line, UTF-8 JSON."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _ts(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(extra_fields(record))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return _encode(line).decode()


_NEEDS_QUOTES: Final = re.compile(r'[ "=\n]')
"""A value with one of these (or an empty one) is JSON-quoted (one regex scan, in C)."""


def _value(value: object) -> str:
    text = value if isinstance(value, str) else str(value)
    if not text or _NEEDS_QUOTES.search(text) is not None:
        return _encode(text).decode()
    return text


class TextFormatter(logging.Formatter):
    """``<ts> <logger> <LEVEL> <message> key=value...``, then a traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_ts(record)} {record.name} {record.levelname} {record.getMessage()}"
        fields = extra_fields(record)
        if fields:
            line += " " + " ".join(f"{k}={_value(v)}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(config: LogConfig, stream: TextIO | None = None) -> None:
    """Replace the root logger's handlers with one on ``stream`` (stderr) in ``config.format``.

    Sets the root level to ``config.level``; picows' own per-connection INFO
    lines stay off (WARNING). Call once, before the node starts.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if config.format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_LEVELS[config.level])
    logging.getLogger("wsgate.transport.picows").setLevel(logging.WARNING)
    # Neither format prints them: not collected per record (the caller's frame,
    # a getpid() and a current_thread() per line; a reconnect storm writes a
    # line per handshake). The Python docs' "Optimization" section lists these.
    logging._srcfile = None
    logging.logProcesses = False
    logging.logThreads = False
    logging.logMultiprocessing = False
