"""The timer wheel: one timer for many deadlines, never early, bounded and freed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wsgate.auth.wheel import TimerWheel


class Handle:
    def __init__(self, clock: ManualClock, at: float, callback: Callable[[], Any]) -> None:
        self.clock, self.at, self.callback, self.cancelled = clock, at, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A scheduler whose time moves only when told; records every timer armed."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.armed: list[Handle] = []

    def call_later(self, delay: float, callback: Callable[[], Any], /) -> Handle:
        handle = Handle(self, self.now + delay, callback)
        self.armed.append(handle)
        return handle

    @property
    def live(self) -> list[Handle]:
        return [h for h in self.armed if not h.cancelled and h.at is not None]

    def advance(self, to: float) -> None:
        """Move to ``to``, running every live timer due on the way, in order."""
        for _ in range(1000):
            due = sorted((h for h in self.live if h.at <= to), key=lambda h: h.at)
            if not due:
                break
            handle = due[0]
            self.now = handle.at
            handle.cancelled = True  # ran
            handle.callback()
        self.now = to


def wheel(clock: ManualClock, fired: list[str]) -> TimerWheel[str]:
    return TimerWheel(clock, fired.append, resolution_s=1.0, now=lambda: clock.now)


def test_many_deadlines_share_one_timer_and_never_fire_early() -> None:
    clock, fired = ManualClock(), []
    w = wheel(clock, fired)
    for i in range(100):
        w.set(f"k{i}", 1005.5 + (i % 3))
    assert len(clock.live) == 1 and len(w) == 100
    clock.advance(1005.9)
    assert fired == []
    clock.advance(1006.0)
    assert sorted(fired) == sorted(f"k{i}" for i in range(100) if i % 3 == 0)
    assert len(clock.live) == 1  # re-armed for the next slot only
    clock.advance(1010)
    assert len(fired) == 100 and len(w) == 0 and clock.live == []


def test_set_replaces_cancel_frees_and_an_earlier_deadline_rearms() -> None:
    clock, fired = ManualClock(), []
    w = wheel(clock, fired)
    w.set("a", 1010)
    w.set("a", 1020)  # replaces: one entry
    w.set("b", 1003)  # earlier: the one timer moves
    assert len(w) == 2 and len(clock.live) == 1 and clock.live[0].at == 1003
    w.cancel("b")
    w.cancel("nothing")
    clock.advance(1015)
    assert fired == [] and "a" in w
    clock.advance(1020)
    assert fired == ["a"] and len(w) == 0


def test_a_past_deadline_fires_at_once_and_fire_may_set_again() -> None:
    clock, fired = ManualClock(), []
    w: TimerWheel[str] = TimerWheel(clock, lambda k: (fired.append(k), w.set(k, clock.now + 2)),
                                    now=lambda: clock.now)
    w.set("x", 990)
    clock.advance(1000)
    assert fired == ["x"] and "x" in w
    clock.advance(1002)
    assert fired == ["x", "x"]


def test_churn_keeps_the_heap_bounded_and_close_frees_everything() -> None:
    clock, fired = ManualClock(), []
    w = wheel(clock, fired)
    for i in range(5000):
        w.set("k", 2000 + i)  # each set leaves a stale slot index behind
    assert len(w) == 1
    assert len(w._heap) <= 2 * len(w._slots) + 65
    w.close()
    assert len(w) == 0 and clock.live == []


def test_keys_of_one_slot_share_its_index() -> None:
    """Memory per key: one dict entry, not a slot-number object of its own (a large
    int per connection on the session wheel, bench/README.md, idle memory)."""
    clock = ManualClock()
    wheel: TimerWheel[str] = TimerWheel(clock, lambda key: None, now=lambda: clock.now)
    for key in ("a", "b", "c"):
        wheel.set(key, 2_000_000_000.5)
    slots = {id(wheel._slot_of[k]) for k in ("a", "b", "c")}
    assert len(slots) == 1
    wheel.cancel("a")
    wheel.cancel("b")
    wheel.cancel("c")
    assert len(wheel) == 0 and not wheel._slots
