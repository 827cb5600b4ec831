"""Handlers by name pattern, like ``clients/js/handlers.js``.

A pattern is an exact name (``orders/UPDATE``), a prefix ending in ``*``
(``orders/*``) or the catch-all ``*`` — the grammar of the gateway's route
table. Every matching handler runs: exact ones first, then prefixes, longest
first. A handler that raises does not stop the others; its exception is
logged on ``wsgate.client``.

Bound: one entry per handler added; :meth:`HandlerSet.remove` (or the
function ``Client.on`` returns) frees it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

__all__ = ["Handler", "HandlerSet"]

log = logging.getLogger("wsgate.client")

Handler = Callable[[Any], None]


class HandlerSet:
    """Handlers by exact name and by prefix."""

    def __init__(self) -> None:
        self._exact: dict[str, list[Handler]] = {}
        self._prefix: dict[str, list[Handler]] = {}
        self._order: list[str] = []
        """The prefixes, longest first (kept on add and remove, not per emit)."""

    def add(self, pattern: str, handler: Handler) -> None:
        """Add ``handler`` for ``pattern``."""
        table, key = self._slot(pattern)
        table.setdefault(key, []).append(handler)
        self._reorder()

    def remove(self, pattern: str, handler: Handler) -> None:
        """Remove ``handler`` from ``pattern`` (no-op when absent)."""
        table, key = self._slot(pattern)
        handlers = table.get(key)
        if handlers is None or handler not in handlers:
            return
        handlers.remove(handler)
        if not handlers:
            del table[key]
            self._reorder()

    def emit(self, name: str, value: Any) -> int:
        """Call every handler matching ``name`` with ``value``; return how many ran."""
        handlers = list(self._exact.get(name, ()))
        for prefix in self._order:
            if name.startswith(prefix):
                handlers.extend(self._prefix[prefix])
        for handler in handlers:
            try:
                handler(value)
            except Exception:
                log.exception("a handler of %s failed", name)
        return len(handlers)

    def _reorder(self) -> None:
        self._order = sorted(self._prefix, key=len, reverse=True)

    def _slot(self, pattern: str) -> tuple[dict[str, list[Handler]], str]:
        if not pattern:
            raise ValueError("a pattern must be a non-empty string")
        if pattern.endswith("*"):
            return self._prefix, pattern[:-1]
        return self._exact, pattern
