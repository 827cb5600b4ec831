"""The acknowledged deliveries' table with a cluster's ledger (a fake one): what it
records, when it asks, and that a finish elsewhere stops it here. No sockets."""

from __future__ import annotations

from collections.abc import Callable

from wsgate.core.acks import Acks, AckState
from wsgate.core.namespaces import Namespaces
from wsgate.core.pool import Pool

from .fakes import ManualClock


class FakeLedger:
    def __init__(self) -> None:
        self.records: list[tuple[str, bool, str, int, bool]] = []
        self.finished: list[tuple[str, AckState]] = []
        self.checks: list[tuple[str, Callable[[AckState | None], None]]] = []

    def record(
        self, id_: str, user: bool, target: str, offset: int, expires_at: float, sent: bool
    ) -> None:
        self.records.append((id_, user, target, offset, sent))

    def finish(self, id_: str, state: AckState, done: Callable[[bool], None]) -> None:
        self.finished.append((id_, state))
        done(True)

    def check(self, id_: str, done: Callable[[AckState | None], None]) -> None:
        self.checks.append((id_, done))


def _acks(clock: ManualClock, ledger: FakeLedger) -> Acks:
    return Acks(Pool(Namespaces()), clock, timeout_s=1.0, ttl_s=10.0, max_entries=2,
                ledger=ledger, now=clock.time)


def test_a_published_delivery_is_recorded_and_held_until_the_ledger_says_finished() -> None:
    clock, ledger = ManualClock(), FakeLedger()
    acks = _acks(clock, ledger)
    id_ = acks.reserve()
    assert id_ is not None
    acks.published(id_, True, "ann")
    assert ledger.records == [(id_, True, "ann", 0, False)]
    assert acks.state(id_) is AckState.PENDING
    clock.advance(1.5)
    assert [c[0] for c in ledger.checks] == [id_]  # asked before sending again
    ledger.checks.pop()[1](None)  # unknown (the backend failed): held, asked again later
    clock.advance(1.5)
    assert len(ledger.checks) == 1
    ledger.checks.pop()[1](AckState.ACKED)  # acknowledged at another node
    assert acks.state(id_) is AckState.ACKED
    assert ledger.finished == []  # not finished again from here
    clock.advance(5.0)
    assert ledger.checks == []


def test_an_expiry_is_told_to_the_ledger_and_a_full_table_refuses() -> None:
    clock, ledger = ManualClock(), FakeLedger()
    acks = _acks(clock, ledger)
    ids = [acks.reserve() for _ in range(2)]
    for id_ in ids:
        assert id_ is not None
        acks.published(id_, True, "ann")
    assert acks.reserve() is None  # two unfinished: this node's bound
    for _ in range(12):  # each second: a check, answered "still pending"
        clock.advance(1.0)
        while ledger.checks:
            ledger.checks.pop()[1](AckState.PENDING)
    assert [acks.state(i) for i in ids if i] == [AckState.EXPIRED, AckState.EXPIRED]
    assert sorted(ledger.finished) == sorted((i, AckState.EXPIRED) for i in ids if i)
    assert acks.reserve() is not None  # a finished one is freed for it


def test_restore_holds_an_unfinished_one_and_finishes_a_stale_one() -> None:
    clock, ledger = ManualClock(), FakeLedger()
    acks = _acks(clock, ledger)
    acks.restore("d1", "ann", 42, b"frame", AckState.DELIVERED, clock.time() + 5)
    assert acks.state("d1") is AckState.DELIVERED
    acks.published("d2", True, "ann")
    acks.restore("d2", "ann", 43, b"frame", AckState.ACKED, clock.time() + 5)
    assert acks.state("d2") is AckState.ACKED
