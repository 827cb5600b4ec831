"""The recent-errors ring: the last warnings and errors of the ``wsgate`` loggers.

A :class:`RecentErrors` is a :class:`logging.Handler` a node adds to the
``wsgate`` logger on start and removes on stop; the admin API
(``GET /v1/admin/errors``) and the dashboard read it. Bounds: at most
``size`` entries (the oldest is dropped); an entry holds the record's
time, level, logger name, message (``getMessage()``, never a payload: no
wsgate line carries one) and its event fields, never a traceback. Cost: one
``deque.append`` per record at ``WARNING`` or above; nothing below.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

__all__ = ["RecentErrors"]

_FIELDS = ("event", "connection", "user", "org", "code", "reason", "service")


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
            }
        except Exception:  # a bad format string must not break the caller
            self.handleError(record)
            return
        for name in _FIELDS:
            value = getattr(record, name, None)
            if value is not None and value != "":
                entry[name] = value
        self.entries.append(entry)

    def snapshot(self) -> list[dict[str, Any]]:
        """The entries, oldest first (a copy)."""
        return list(self.entries)
