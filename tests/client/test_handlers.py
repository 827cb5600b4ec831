"""Handlers by pattern: exact first, then prefixes longest first; a failing one stops none."""

from __future__ import annotations

import logging

import pytest

from wsgate.client.handlers import HandlerSet


def test_every_matching_handler_runs_exact_then_longest_prefix_first(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handlers, calls = HandlerSet(), []
    handlers.add("*", lambda v: calls.append(("*", v)))
    handlers.add("orders/*", lambda v: calls.append(("orders/*", v)))
    handlers.add("orders/UPDATE", lambda v: calls.append(("exact", v)))

    def broken(_v: object) -> None:
        raise RuntimeError("boom")

    handlers.add("orders/UP*", broken)
    with caplog.at_level(logging.ERROR, logger="wsgate.client"):
        assert handlers.emit("orders/UPDATE", 1) == 4
    assert calls == [("exact", 1), ("orders/*", 1), ("*", 1)]
    assert "orders/UPDATE" in caplog.text
    handlers.remove("orders/UP*", broken)
    handlers.remove("orders/UP*", broken)  # absent: no-op
    assert handlers.emit("chat/X", 2) == 1
    assert calls[-1] == ("*", 2)
    with pytest.raises(ValueError):
        handlers.add("", broken)
