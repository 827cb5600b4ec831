"""Conflation in the core (manual clock, recording sinks): the latest per key per window,
history keeping the latest per key, the key bound, a congested member getting the newest
frame instead of a backlog, and everything freed when the channel empties. The same on a
real node with real clients and a paused reader: tests/e2e/test_conflation_e2e.py."""

from __future__ import annotations

from typing import Any

from wsgate.config import NamespaceRule
from wsgate.core.conflation import MAX_KEYS, key_of
from wsgate.core.namespaces import Namespaces, specificity

from .harness import Client, Harness

TICKER = "acme:ticker/fx"
RULES = [NamespaceRule(match="*:ticker/*", conflate_ms=100, conflate_key="payload.symbol")]


def _ticks(client: Client) -> list[tuple[str, int]]:
    return [(a["payload"]["symbol"], a["payload"]["n"]) for a in client.take()
            if a["type"] == "chat/TICK"]


def _setup() -> tuple[Harness, Client, Client]:
    h = Harness(relays=("chat/*",), namespaces=RULES)
    pub, sub = h.connect("pub"), h.connect("sub")
    for c in (pub, sub):
        assert c.join(TICKER)[-1]["type"] == "@@wsgate/JOINED"
        c.take()
    return h, pub, sub


def _tick(pub: Client, symbol: str, n: int, **meta: Any) -> None:
    pub.send("chat/TICK", {"symbol": symbol, "n": n}, channel=TICKER, **meta)


def test_a_window_delivers_the_latest_per_key_once_with_offsets_and_skips_the_sender() -> None:
    h, pub, sub = _setup()
    for n in range(10):
        _tick(pub, "EUR", n)
        _tick(pub, "GBP", 100 + n)
    assert _ticks(sub) == []  # held until the window ends
    h.clock.advance(0.1)
    assert sorted(_ticks(sub)) == [("EUR", 9), ("GBP", 109)]
    assert _ticks(pub) == []  # a relay skips its sender, conflated or not
    h.clock.advance(0.5)
    assert _ticks(sub) == [] and h.clock.pending == 0  # a quiet channel has no timer


def test_history_keeps_the_latest_per_key_and_a_rejoin_recovers_exactly_that() -> None:
    h, pub, sub = _setup()
    since = h.history.top(TICKER)  # type: ignore[arg-type]
    for window in range(3):
        for n in range(5):
            _tick(pub, "EUR", window * 10 + n)
        _tick(pub, "JPY", window)
        h.clock.advance(0.1)
    sub.take()
    sub.send("@@wsgate/LEAVE", {"channel": TICKER})
    got = sub.join(TICKER, since=since)
    assert got[0]["payload"]["recovered"] is True
    replay = [(a["payload"]["symbol"], a["payload"]["n"]) for a in got[1:]]
    assert sorted(replay) == [("EUR", 24), ("JPY", 2)]


def test_a_new_key_past_the_bound_is_delivered_at_once_unconflated() -> None:
    h, pub, sub = _setup()
    for n in range(MAX_KEYS):
        _tick(pub, f"S{n}", n)
    assert _ticks(sub) == []
    _tick(pub, "ONE-TOO-MANY", 1)
    assert _ticks(sub) == [("ONE-TOO-MANY", 1)]
    _tick(pub, "S0", 7)  # a known key still conflates
    assert _ticks(sub) == []
    h.clock.advance(0.1)
    assert len(_ticks(sub)) == MAX_KEYS


def test_a_congested_member_is_skipped_then_gets_only_the_newest_frame_of_each_key() -> None:
    h, pub, sub = _setup()
    slow = h.connect("slow")
    slow.join(TICKER)
    slow.take()
    congested = [True]
    slow.sink.congested = lambda: congested[0]  # type: ignore[attr-defined]
    for window in range(5):
        _tick(pub, "EUR", window)
        _tick(pub, "GBP", 100 + window)
        h.clock.advance(0.1)
        assert len(_ticks(sub)) == 2  # the others are not held back
    assert _ticks(slow) == []
    assert h.gw.fanout.conflation.skipped == 5
    congested[0] = False
    for n in range(3):  # a newer EUR, so its frame's offset is above GBP's
        _tick(pub, "EUR", 10 + n)
    h.clock.advance(0.1)
    caught_up = [a for a in slow.take() if a["type"] == "chat/TICK"]
    assert [(a["payload"]["symbol"], a["payload"]["n"]) for a in caught_up] == [
        ("GBP", 104), ("EUR", 12)  # the newest of each key, in offset order
    ]
    assert caught_up[0]["meta"]["offset"] < caught_up[1]["meta"]["offset"]
    h.clock.advance(0.5)
    assert _ticks(slow) == [] and h.clock.pending == 0


def test_the_window_and_its_timer_are_freed_when_the_channel_empties() -> None:
    h, pub, sub = _setup()
    _tick(pub, "EUR", 1)
    channel = h.gw.pool.channel(TICKER)  # type: ignore[arg-type]
    assert channel is not None and channel.conflation is not None
    pub.close()
    sub.close()
    assert channel.conflation is None and h.clock.pending == 0
    assert h.gw.pool.channel(TICKER) is None  # type: ignore[arg-type]


def test_key_of_reads_a_dotted_path_and_refuses_long_keys() -> None:
    assert key_of({"a": {"b": "x"}}, ("a", "b")) == "x"
    assert key_of({"a": 1}, ("a",)) == "1"
    assert key_of({"a": 1}, ("z",)) == "" and key_of("text", ("a",)) == ""
    assert key_of({"a": "y" * 129}, ("a",)) is None
    assert key_of({"anything": 1}, None) == ""


def test_specificity_orders_fewest_wildcards_then_longest_prefix_then_first_listed() -> None:
    rules = [
        NamespaceRule(match="*", max_members=1),
        NamespaceRule(match="acme:*", max_members=2),
        NamespaceRule(match="*:ticker/*", max_members=3),
        NamespaceRule(match="acme:ticker/*", max_members=4),
        NamespaceRule(match="acme:ticker/*", max_members=5),  # a tie: the first listed wins
        NamespaceRule(match="acme:ticker/fx", max_members=6),
    ]
    ns = Namespaces(rules)
    assert ns.resolve("acme:ticker/fx").max_members == 6
    assert ns.resolve("acme:ticker/eq").max_members == 4
    assert ns.resolve("acme:orders").max_members == 2
    assert ns.resolve("globex:ticker/eq").max_members == 1  # `*` has one wildcard, not two
    assert Namespaces(rules[2:3]).resolve("globex:ticker/eq").max_members == 3
    assert Namespaces(rules[2:3]).resolve("globex:orders").namespace is None
    assert specificity("a:b") < specificity("a:b*") < specificity("a:*") < specificity("*:b*")
