"""LineCap: the first lines of a window pass, the rest become one ``suppressed`` line."""

from __future__ import annotations

import logging

import pytest

from wsgate.logs import SUPPRESSED, LineCap

from .helpers import eventually


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _summaries(caplog: pytest.LogCaptureFixture) -> list[tuple[str, int]]:
    return [
        (r.of, r.count)  # type: ignore[attr-defined]
        for r in caplog.records
        if getattr(r, "event", None) == SUPPRESSED
    ]


async def test_the_first_lines_of_a_window_pass_the_rest_are_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "wsgate.events")
    clock = Clock()
    cap = LineCap("connected", 3, window_s=1.0, clock=clock)
    assert [cap.allow() for _ in range(5)] == [True, True, True, False, False]
    assert _summaries(caplog) == []
    clock.now += 1.0  # the next window: the held lines are summarized first
    assert cap.allow()
    assert _summaries(caplog) == [("connected", 2)]
    assert [cap.allow() for _ in range(3)] == [True, True, False]
    cap.summarize()
    cap.summarize()  # nothing held: no second line
    assert _summaries(caplog) == [("connected", 2), ("connected", 1)]


async def test_the_summary_is_written_when_the_window_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "wsgate.events")
    cap = LineCap("closed", 1, window_s=0.05)
    assert [cap.allow() for _ in range(4)] == [True, False, False, False]
    await eventually(lambda: _summaries(caplog), what="the suppressed line")
    assert _summaries(caplog) == [("closed", 3)]
    record = next(r for r in caplog.records if getattr(r, "event", None) == SUPPRESSED)
    assert record.window_s == 0.05  # type: ignore[attr-defined]


def test_zero_is_no_cap() -> None:
    cap = LineCap("connected", 0)
    assert all(cap.allow() for _ in range(1000))
