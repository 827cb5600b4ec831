"""A connection's states (admitting, open, held, closing, closed) and the join answers."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from wsgate.config import LimitsConfig, RateLimitRule
from wsgate.core.connection import Connection, State
from wsgate.core.gateway import PENDING, JoinRefused, Pending
from wsgate.core.limits import Rate
from wsgate.core.pool import Channel
from wsgate.protocol.address import Address, parse_address
from wsgate.protocol.codes import ErrorCode

from .harness import Harness

SHARED = [RateLimitRule(match="profile/*", per="user", rate="1/60s", burst=1)]


class _LaterAdmission:
    """A connect hook that decides when the test says so."""

    def __init__(self) -> None:
        self.waiting: list[Connection] = []

    def admit(self, conn: Connection) -> None:
        self.waiting.append(conn)


class _LaterShared:
    """A cluster-wide limit whose answer comes when the test says so."""

    def __init__(self) -> None:
        self.answers: list[Callable[[float], None]] = []

    def acquire(self, key: str, rate: Rate, done: Callable[[float], None]) -> None:
        self.answers.append(done)


def _ids(frames: list[dict[str, object]]) -> list[object]:
    return [(f.get("meta") or {}).get("inReplyTo") for f in frames]  # type: ignore[union-attr]


def _held_harness() -> tuple[Harness, _LaterAdmission, _LaterShared]:
    admission, shared = _LaterAdmission(), _LaterShared()
    h = Harness(relays=("chat/*", "profile/*"), limits=LimitsConfig(), rate_limits=SHARED,
                admission=admission, shared=shared)
    return h, admission, shared


def test_a_hold_that_starts_during_admission_replay_keeps_order() -> None:
    h, admission, shared = _held_harness()
    nina = h.connect("nina")
    nina.conn.on_message(msgspec.json.encode(
        {"type": "profile/SET", "meta": {"id": "1", "channel": "acme:p"}}))
    nina.conn.on_message(msgspec.json.encode({"type": "@@wsgate/PING", "meta": {"id": "2"}}))
    h.gw.admitted(admission.waiting.pop())
    welcome, *after = nina.take()
    assert welcome["type"] == "@@wsgate/WELCOME"
    assert after == []  # the PING waits behind the held message
    shared.answers.pop()(0.0)
    assert _ids(nina.take()) == ["1", "2"]


def test_a_connection_closed_while_held_leaves_the_pool() -> None:
    h, admission, shared = _held_harness()
    nina, bob = h.connect("nina"), h.connect("bob")
    for conn in list(admission.waiting):
        h.gw.admitted(conn)
    nina.join("acme:p")
    bob.join("acme:p")
    bob.take()
    nina.send("profile/SET", {"n": 1}, channel="acme:p", id="1")
    nina.close()
    assert nina.id not in h.gw.pool.connections
    channel = h.gw.pool.channel("acme:p")  # type: ignore[arg-type]
    assert channel is not None and list(channel.members) == [bob.id]
    shared.answers.pop()(0.0)  # the late answer finds nothing to do
    assert nina.id not in h.gw.pool.connections
    assert nina.take() == []  # nothing is sent to a closed connection


def test_the_held_queue_is_bounded() -> None:
    h, admission, _shared = _held_harness()
    nina = h.connect("nina")
    h.gw.admitted(admission.waiting.pop())
    nina.take()
    nina.send("profile/SET", {"n": 0}, channel="acme:p", id="0")
    answers = []
    for i in range(h.gw.max_pending + 1):
        answers = nina.send("@@wsgate/PING", None, id=str(i + 1))
    (err,) = answers
    assert err["payload"]["code"] == "RATE_LIMITED" and err["meta"]["inReplyTo"] == str(
        h.gw.max_pending + 1)


def test_since_beyond_64_bits_is_a_bad_request() -> None:
    h = Harness()
    alice = h.connect("alice")
    alice.take()
    (err,) = alice.join("acme:v", since=2**63)
    assert err["payload"]["code"] == "BAD_REQUEST"
    (err,) = alice.send("@@wsgate/NAVIGATE", {"view": "v", "since": 2**64}, id="n")
    assert err["payload"]["code"] == "BAD_REQUEST"
    assert alice.join("acme:v", since=2**63 - 1)[0]["type"] == "@@wsgate/JOINED"


def test_a_bare_hub_of_another_org_is_a_bad_request() -> None:
    h = Harness()
    alice = h.connect("alice")
    alice.take()
    (err,) = alice.join("globex")
    assert err["payload"]["code"] == "BAD_REQUEST"


def test_the_left_that_answers_navigate_has_in_reply_to() -> None:
    h = Harness()
    alice = h.connect("alice")
    alice.take()
    alice.send("@@wsgate/NAVIGATE", {"view": "a"}, id="n1")
    left, joined = alice.send("@@wsgate/NAVIGATE", {"view": "b"}, id="n2")
    assert left["type"] == "@@wsgate/LEFT" and left["meta"]["inReplyTo"] == "n2"
    assert joined["meta"]["inReplyTo"] == "n2"


class _LaterGate:
    """An authorize hook that answers when the test says so."""

    def __init__(self) -> None:
        self.resumes: list[Callable[[ErrorCode | None], None]] = []

    def check(
        self, conn: Connection, address: Address, resume: Callable[[ErrorCode | None], None]
    ) -> ErrorCode | Pending | None:
        self.resumes.append(resume)
        return PENDING


def test_a_join_whose_connection_closes_at_a_gate_is_answered_and_joins_nothing() -> None:
    gate = _LaterGate()
    h = Harness(gates=(gate,))
    alice = h.connect("alice")
    alice.take()
    answers: list[Channel | JoinRefused] = []
    address = parse_address("acme:v")
    assert address is not None
    h.gw.request_join(alice.conn, address, answers.append)
    assert answers == []
    alice.close()
    gate.resumes.pop()(None)  # the hook allows, too late
    (answer,) = answers
    assert isinstance(answer, JoinRefused) and answer.code is ErrorCode.NOT_JOINED
    assert h.gw.pool.channel("acme:v") is None  # type: ignore[arg-type]
    assert alice.take() == []


def test_state_closed_is_closing_or_closed() -> None:
    """``State.closed`` (read on the hot path as ``conn.state.closed``) is what
    ``Connection.closed`` always said: ``CLOSING`` or ``CLOSED``."""
    assert {s for s in State if s.closed} == {State.CLOSING, State.CLOSED}
