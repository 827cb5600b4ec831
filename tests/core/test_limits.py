"""Rate limits (GCRA), abuse closes and connection caps, against a manual clock."""

from __future__ import annotations

from wsgate.backends.memory import MemoryRateLimits
from wsgate.config import LimitsConfig, RateLimitRule
from wsgate.core.limits import parse_rate

from .harness import Harness

OFF = {"default_rate": "", "handshake_rate_per_ip": "", "abuse_refusals": 0,
       "max_connections": 0, "max_connections_per_user": 0, "max_connections_per_ip": 0}


def limits(**overrides: object) -> LimitsConfig:
    return LimitsConfig(**{**OFF, **overrides})  # type: ignore[arg-type]


def test_parse_rate() -> None:
    assert parse_rate("10/1s", 1) == (0.1, 0.0)
    assert parse_rate("1/60s", 3) == (60.0, 120.0)
    assert parse_rate("5/m", 1) == (12.0, 0.0)
    assert parse_rate("2/500ms", 1) == (0.25, 0.0)
    assert parse_rate("0/1s", 1) is None
    assert parse_rate("", 1) is None


def test_gcra_store_allows_bursts_then_spaces_and_forgets_old_keys() -> None:
    store = MemoryRateLimits()
    rate = parse_rate("10/1s", 5)
    assert rate is not None
    waits = [store.acquire("k", rate.interval, rate.tolerance, 0.0) for _ in range(6)]
    assert waits[:5] == [0.0] * 5 and waits[5] > 0
    assert store.acquire("k", rate.interval, rate.tolerance, 0.1) == 0.0
    for i in range(3000):
        store.acquire(f"once{i}", 0.001, 0.0, 10.0 + i)
    assert len(store) < 2100  # swept as it grows: old keys do not pile up


def test_nickname_changes_are_limited_per_user_across_tabs() -> None:
    rule = RateLimitRule(match="profile/SET_NICKNAME", per="user", rate="1/60s", burst=1)
    h = Harness(limits=limits(), rate_limits=[rule], relays=("profile/*",))
    tab1, tab2, bob = h.connect("alice"), h.connect("alice"), h.connect("bob")
    for c in (tab1, tab2, bob):
        c.join("acme:profile")
        c.take()
    assert tab1.send("profile/SET_NICKNAME", {"n": "al"}, channel="acme:profile", id="1") == []
    (err,) = tab2.send("profile/SET_NICKNAME", {"n": "ali"}, channel="acme:profile", id="2")
    assert err["payload"]["code"] == "RATE_LIMITED"
    assert err["meta"]["inReplyTo"] == "2"
    assert 59_000 <= err["payload"]["retryAfterMs"] <= 60_000
    assert bob.send("profile/SET_NICKNAME", {"n": "b"}, channel="acme:profile", id="3") == []
    h.clock.advance(60)
    assert tab2.send("profile/SET_NICKNAME", {"n": "ali"}, channel="acme:profile", id="4") == []


def test_builtins_can_be_limited_and_ip_scope_spans_users() -> None:
    rule = RateLimitRule(match="@@wsgate/JOIN", per="ip", rate="2/1s", burst=2)
    h = Harness(limits=limits(), rate_limits=[rule])
    a, b = h.connect("a", ip="10.0.0.1"), h.connect("b", ip="10.0.0.1")
    other = h.connect("c", ip="10.0.0.2")
    assert a.join("acme:x")[0]["type"] == "@@wsgate/JOINED"
    assert b.join("acme:y")[0]["type"] == "@@wsgate/JOINED"
    assert a.join("acme:z")[0]["payload"]["code"] == "RATE_LIMITED"
    assert other.join("acme:z")[0]["type"] == "@@wsgate/JOINED"


def test_the_default_rate_covers_junk_and_persistent_flooding_closes_4429() -> None:
    h = Harness(limits=limits(default_rate="10/1s", default_burst=10, abuse_refusals=5, abuse_window_s=10))
    flooder, calm = h.connect("flooder"), h.connect("calm")
    flooder.take()
    answers = [flooder.raw(b"junk")[0]["payload"]["code"] for _ in range(10)]
    assert answers == ["BAD_REQUEST"] * 10
    refused = [flooder.raw(b"junk")[0] for _ in range(4)]
    assert all(r["payload"]["code"] == "RATE_LIMITED" for r in refused)
    (with_id,) = flooder.raw(b'{"type":"x","meta":{"id":"f1"}}')
    assert with_id["payload"]["code"] == "RATE_LIMITED" and with_id["meta"]["inReplyTo"] == "f1"
    assert flooder.sink.closed is None
    flooder.raw(b"junk")
    assert flooder.sink.closed == (4429, "too many refused messages")
    assert calm.send("@@wsgate/PING", 1, id="p")[0]["type"] == "@@wsgate/PONG"


def test_connection_caps_refuse_with_error_then_4429() -> None:
    h = Harness(limits=limits(max_connections_per_user=2, max_connections_per_ip=3, max_connections=4))
    a1, a2, a3 = h.connect("alice"), h.connect("alice"), h.connect("alice")
    assert a1.sink.closed is None and a2.sink.closed is None
    (err,) = a3.take()
    assert err["payload"]["code"] == "RATE_LIMITED" and err["payload"]["retryAfterMs"] > 0
    assert a3.sink.closed is not None and a3.sink.closed[0] == 4429
    assert "alice" in h.gw.pool.users and len(h.gw.pool.users["alice"]) == 2
    h.connect("bob")
    assert h.connect("carol").sink.closed is not None  # 4th from 127.0.0.1: per-address cap
    h.connect("dave", ip="10.9.9.9")
    assert h.connect("erin", ip="10.9.9.8").sink.closed is not None  # node full
    a3.close()  # closing a refused connection undoes nothing
    assert len(h.gw.pool.connections) == 4
    a1.close()
    assert h.gw.pool.ips["127.0.0.1"] == 2


def test_handshake_rate_per_address() -> None:
    h = Harness(limits=limits(handshake_rate_per_ip="2/1s", handshake_burst_per_ip=2))
    ok = [h.connect(f"u{i}") for i in range(2)]
    assert all(c.sink.closed is None for c in ok)
    late = h.connect("late")
    assert late.sink.closed is not None and late.sink.closed[0] == 4429
    assert h.connect("elsewhere", ip="10.1.1.1").sink.closed is None
    h.clock.advance(1)
    assert h.connect("later").sink.closed is None
