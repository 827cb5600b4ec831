"""W3C Trace Context ids made by the gateway (``wsgate.routing.trace``)."""

from __future__ import annotations

import pytest

from wsgate.routing import trace
from wsgate.routing.trace import ensure_traceparent, new_traceparent, valid_traceparent


def test_fresh_traceparents_are_valid_and_distinct() -> None:
    made = {new_traceparent() for _ in range(1000)}
    assert len(made) == 1000
    assert all(valid_traceparent(t) and t.startswith("00-") and t.endswith("-01") for t in made)


@pytest.mark.parametrize("zero", [0, 0xABC << 64])  # trace id zero; parent id zero
def test_an_all_zero_id_is_drawn_again(monkeypatch: pytest.MonkeyPatch, zero: int) -> None:
    draws = iter([zero, (7 << 64) | 9])
    monkeypatch.setattr(trace, "_getrandbits", lambda bits: next(draws))
    assert new_traceparent() == f"00-{7:032x}-{9:016x}-01"


def test_a_valid_traceparent_is_kept_and_an_invalid_one_replaced() -> None:
    given = f"00-{1:032x}-{2:016x}-01"
    assert ensure_traceparent(given) is given
    for bad in (None, "", "00-garbage", f"ff-{1:032x}-{2:016x}-01", f"00-{0:032x}-{2:016x}-01"):
        assert valid_traceparent(ensure_traceparent(bad))


def test_traceparent_bytes_is_ensure_traceparent_encoded() -> None:
    given = f"00-{1:032x}-{2:016x}-01"
    assert trace.traceparent_bytes(given) == given.encode()
    for bad in ("", "00-garbage", f"00-{0:032x}-{2:016x}-01"):
        made = trace.traceparent_bytes(bad)
        assert valid_traceparent(made.decode()) and made != bad.encode()
    fresh = {trace.traceparent_bytes(None) for _ in range(1000)}
    assert len(fresh) == 1000
    assert all(valid_traceparent(t.decode()) for t in fresh)


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        (0, (7, 9)),  # both ids zero: drawn again
        (0xABC, (7, 9)),  # the trace id zero
        (0xABC << 64, (7, 9)),  # the parent id zero
        ((5 << 64) | 6, (5, 6)),  # the first draw, as new_traceparent splits it
    ],
)
def test_a_fresh_traceparent_bytes_is_new_traceparents_draw(
    monkeypatch: pytest.MonkeyPatch, first: int, expected: tuple[int, int]
) -> None:
    for make in (trace.new_traceparent, lambda: trace.traceparent_bytes(None).decode()):
        draws = iter([first, (7 << 64) | 9])
        monkeypatch.setattr(trace, "_getrandbits", lambda bits, d=draws: next(d))
        assert make() == f"00-{expected[0]:032x}-{expected[1]:016x}-01"
