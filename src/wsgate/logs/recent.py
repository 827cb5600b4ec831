"""The recent-errors ring: the last warnings and errors of the ``wsgate`` loggers.

A :class:`RecentErrors` is a :class:`logging.Handler` a node adds to the
``wsgate`` logger on start and removes on stop; the admin API
(``GET /v1/admin/errors``) and the dashboard read it. Bounds: at most
``size`` entries (the oldest is dropped); an entry holds the record's
time, level, logger name, message (``getMessage()``) and its event fields
(what :func:`wsgate.logs.event` gave: never a payload), never a traceback. Cost: one
``deque.append`` per record at ``WARNING`` or above; nothing below. The
handler sits on the process's ``wsgate`` logger: several nodes in one process
(tests) each see the others' lines too.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from wsgate.logs.format import extra_fields

__all__ = ["RecentErrors"]


def _plain(value: Any) -> Any:
    """A field as JSON can carry it (the text formatter's rule: anything else is ``str``)."""
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)


class RecentErrors(logging.Handler):
    """The last ``size`` records at ``WARNING`` or above, newest last."""

    def __init__(self, size: int = 100) -> None:
        super().__init__(logging.WARNING)
        self.entries: deque[dict[str, Any]] = deque(maxlen=size)
        """Bounded by ``size``: the oldest entry is dropped by the next one."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            entry: dict[str, Any] = {
                "time": record.created,
                "level": record.levelname,
                "logger": record.name,
                "message": record.getMessage(),
                "fields": {k: _plain(v) for k, v in extra_fields(record).items()},
            }
        except Exception:  # a bad format string must not break the caller
            self.handleError(record)
            return
        self.entries.append(entry)

    def snapshot(self) -> list[dict[str, Any]]:
        """The entries, oldest first (a copy)."""
        return list(self.entries)
