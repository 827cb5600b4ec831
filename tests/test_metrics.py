"""Prometheus ``/metrics``: a real node, real clients, a real service; each family scraped over
HTTP, parsed with prometheus-client's own text parser, and seen to move when its event happens."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import websockets
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from wsgate.config import Config

from .e2e.gateway import API_KEY, ORIGIN, Running, make_config, running
from .helpers import eventually, free_port

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@contextlib.asynccontextmanager
async def service() -> AsyncIterator[str]:
    """A real HTTP service on a free port that answers ``t/OK``."""

    async def handle(request: web.Request) -> web.Response:
        return web.json_response({"reply": [{"type": "t/OK"}]})

    app = web.Application()
    app.router.add_post("/actions", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/actions"
    finally:
        await runner.cleanup()


def _config(ok_url: str, **sections: Any) -> Config:
    dead = f"http://127.0.0.1:{free_port()}/actions"
    return make_config(
        services={"t": {"url": ok_url}, "dead": {"url": dead, "timeout_ms": 500}},
        routes=[{"match": "t/*", "service": "t"}, {"match": "d/*", "service": "dead"}],
        rate_limits=[{"match": "slow/*", "rate": "1/60s", "burst": 1}],
        **sections,
    )


async def scrape(gw: Running, key: str | None = None) -> tuple[int, str]:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession() as http, http.get(
        f"{gw.node.api_url}/metrics", headers=headers
    ) as resp:
        return resp.status, await resp.text()


async def samples(gw: Running) -> Samples:
    status, text = await scrape(gw)
    assert status == 200, text
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(got: Samples, name: str, **labels: str) -> float:
    return got.get((name, frozenset(labels.items())), 0.0)


async def test_each_family_moves_when_its_event_happens() -> None:
    async with service() as url, running(_config(url)) as gw:
        before = await samples(gw)
        assert value(before, "wsgate_connections", hub="acme") == 0
        assert value(before, "wsgate_errors_sent_total", code="NO_ROUTE") == 0
        async with gw.peer("u1") as a, gw.peer("u2") as b:
            got = await samples(gw)
            assert value(got, "wsgate_connections", hub="acme") == 2
            assert value(got, "wsgate_connections_opened_total") == 2

            await a.join("acme:room")
            await b.join("acme:room")
            got = await samples(gw)
            assert value(got, "wsgate_joins_total") == 2
            assert value(got, "wsgate_channels") == 1
            assert value(got, "wsgate_channel_members") == 2
            assert value(got, "wsgate_actions_total", **{"class": "builtin"}) == 2

            await a.send("chat/SAY", {"t": "hi"}, channel="acme:room")
            await b.expect("chat/SAY")
            got = await samples(gw)
            assert value(got, "wsgate_actions_total", **{"class": "relay"}) == 1
            assert value(got, "wsgate_deliveries_total") >= 1
            flusher = gw.node.listener.flusher  # type: ignore[union-attr]
            assert flusher.batches_written + flusher.batches_settled >= 1  # the relay's
            assert value(got, "wsgate_channel_batches_total", outcome="written") == (
                flusher.batches_written
            )
            assert value(got, "wsgate_channel_batches_total", outcome="settled") == (
                flusher.batches_settled
            )
            assert value(got, "wsgate_history_streams") == 1

            await a.send("t/GO", None, id="ok")
            await a.expect("t/OK")
            await a.send("d/GO", None, id="bad")
            error = await a.expect("@@wsgate/ERROR")
            got = await samples(gw)
            assert value(got, "wsgate_actions_total", **{"class": "routed"}) == 2
            ok = {"service": "t", "outcome": "OK"}
            failed = {"service": "dead", "outcome": error["payload"]["code"]}
            assert value(got, "wsgate_upstream_call_duration_seconds_count", **ok) == 1
            assert value(got, "wsgate_upstream_call_duration_seconds_count", **failed) == 1
            assert value(got, "wsgate_upstream_call_duration_seconds_sum", **ok) > 0
            assert value(
                got, "wsgate_errors_sent_total", code=error["payload"]["code"]
            ) == 1

            await a.send("nowhere/X", None, id="n")
            await a.expect("@@wsgate/ERROR")
            await a.send("slow/X", None, id="s1")
            await a.send("slow/X", None, id="s2")
            await a.expect("@@wsgate/ERROR")  # s1: allowed, then NO_ROUTE
            refusal = await a.expect("@@wsgate/ERROR")
            assert refusal["payload"]["code"] == "RATE_LIMITED"
            got = await samples(gw)
            assert value(got, "wsgate_errors_sent_total", code="NO_ROUTE") >= 1
            assert value(got, "wsgate_errors_sent_total", code="RATE_LIMITED") == 1
            assert value(got, "wsgate_rate_limited_total") == 1

            await a.send("@@wsgate/LEAVE", {"channel": "acme:room"}, id="l")
            await eventually(
                lambda: gw.node.gateway is not None
                and len(gw.node.gateway.pool.hubs["acme"].channels.get("acme:room").members) == 1,
                what="the leave",
            )
            got = await samples(gw)
            assert value(got, "wsgate_leaves_total") == 1
            await a.ws.close(4321)

        async def closed() -> bool:
            got = await samples(gw)
            return value(got, "wsgate_connections_closed_total", code="4321") == 1 and (
                value(got, "wsgate_connections", hub="acme") == 0
            )

        await eventually(closed, what="the closed connection counted by its code")


async def test_a_slow_consumer_close_is_counted() -> None:
    config = make_config(server={"outbound_high_water_bytes": 65536})
    async with running(config) as gw, websockets.connect(
        gw.url,
        additional_headers={"Cookie": gw.cookie("slow")},
        origin=ORIGIN,  # type: ignore[arg-type]
        max_queue=1,
        max_size=None,
        open_timeout=5,  # type: ignore[arg-type]
    ) as ws:
        welcome = json.loads(await ws.recv())
        cid = welcome["payload"]["connectionId"]
        body = {
            "to": {"connection": cid},
            "action": {"type": "x/BIG", "payload": "x" * 500_000},
        }
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with aiohttp.ClientSession() as http:
            for _ in range(200):  # bounded: 100 MB at most, far past any socket buffer
                async with http.post(
                    f"{gw.node.api_url}/v1/publish", json=body, headers=headers
                ) as resp:
                    assert resp.status in (202, 400, 404), await resp.text()
                got = await samples(gw)
                if value(got, "wsgate_slow_consumer_closes_total") == 1:
                    break
        got = await samples(gw)
        assert value(got, "wsgate_slow_consumer_closes_total") == 1


async def test_metrics_need_no_key_by_default() -> None:
    async with running() as gw:
        status, text = await scrape(gw)
        assert status == 200 and "wsgate_connections_opened_total" in text


async def test_require_key_refuses_a_scrape_without_a_key() -> None:
    async with running(make_config(metrics={"require_key": True})) as gw:
        assert (await scrape(gw))[0] == 401
        assert (await scrape(gw, "wrong"))[0] == 401
        status, text = await scrape(gw, API_KEY)
        assert status == 200 and "wsgate_connections_opened_total" in text


async def test_metrics_off_has_no_route() -> None:
    async with running(make_config(metrics={"enabled": False})) as gw:
        assert (await scrape(gw, API_KEY))[0] == 404


async def test_a_clustered_node_exports_its_broker() -> None:
    async with running(make_config(broker={"url": "memory://metrics-test"})) as gw:
        got = await samples(gw)
        assert value(got, "wsgate_broker_connected") == 1
        assert ("wsgate_broker_dropped_total", frozenset()) in got
        assert ("wsgate_broker_reconnects_total", frozenset()) in got
        assert ("wsgate_broker_lag_seconds_count", frozenset()) in got


async def test_two_nodes_in_one_process_have_their_own_counts() -> None:
    async with running() as one, running() as two, one.peer("u1"):
        assert value(await samples(one), "wsgate_connections_opened_total") == 1
        assert value(await samples(two), "wsgate_connections_opened_total") == 0


async def test_history_streams_fall_when_a_stream_expires() -> None:
    async with running(make_config(history={"ttl_s": 1})) as gw:
        async with gw.peer("u1") as a, gw.peer("u2") as b:
            await a.join("acme:one")
            await b.join("acme:one")
            await a.send("chat/SAY", {"t": "hi"}, channel="acme:one")
            await b.expect("chat/SAY")
            assert value(await samples(gw), "wsgate_history_streams") == 1

        async def freed() -> bool:
            return value(await samples(gw), "wsgate_history_streams") == 0

        await eventually(freed, timeout=10, what="the memberless stream freed after its ttl")


async def test_a_conflated_burst_counts_what_it_superseded() -> None:
    """Of a burst into a conflated channel the member gets the latest per window: every
    other action was superseded, and ``/metrics`` says how many."""
    config = make_config(
        namespaces=[{"match": "*:ticker/*", "conflate_ms": 200}],
        limits={"default_rate": "5000/1s", "default_burst": 5000},
    )
    async with running(config) as gw, gw.peer("pub") as pub, gw.peer("sub") as sub:
        await pub.join("acme:ticker/fx")
        await sub.join("acme:ticker/fx")
        before = await samples(gw)
        assert value(before, "wsgate_conflation_superseded_total") == 0
        assert value(before, "wsgate_conflation_skipped_total") == 0
        burst = 50
        for n in range(burst):
            await pub.send("chat/TICK", {"n": n}, channel="acme:ticker/fx")
        got = []
        for _ in range(burst):  # bounded: at most one frame per action
            got.append((await sub.expect("chat/TICK"))["payload"]["n"])
            if got[-1] == burst - 1:
                break
        assert got[-1] == burst - 1 and len(got) < burst
        after = await samples(gw)
        # Each action was either sent at its window's end or replaced before it.
        assert value(after, "wsgate_conflation_superseded_total") == burst - len(got)
        assert value(after, "wsgate_conflation_skipped_total") == 0  # nobody was slow


def test_the_call_histogram_counts_each_call_in_its_bucket_and_above() -> None:
    from wsgate.metrics import LATENCY_BUCKETS, NodeMetrics

    metrics = NodeMetrics()
    for seconds in (0.0005, 0.001, 0.003, 0.003, 30.0):  # 0.001 is in le="0.001" (<=)
        metrics.observe_call("svc", "OK", seconds)
    metrics.observe_call("svc", "UPSTREAM_TIMEOUT", 2.0)
    got: Samples = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            got[(s.name, frozenset(s.labels.items()))] = s.value
    name = "wsgate_upstream_call_duration_seconds"
    ok = {"service": "svc", "outcome": "OK"}
    expected = {0.001: 2, 0.0025: 2, 0.005: 4, 5.0: 4, 10.0: 4}
    for le, n in expected.items():
        assert le in LATENCY_BUCKETS
        assert value(got, f"{name}_bucket", le=str(le), **ok) == n, le
    assert value(got, f"{name}_bucket", le="+Inf", **ok) == 5
    assert value(got, f"{name}_count", **ok) == 5
    assert abs(value(got, f"{name}_sum", **ok) - 30.0075) < 1e-9
    timeout = {"service": "svc", "outcome": "UPSTREAM_TIMEOUT"}
    assert value(got, f"{name}_bucket", le="1.0", **timeout) == 0
    assert value(got, f"{name}_bucket", le="2.5", **timeout) == 1
    assert value(got, f"{name}_count", **timeout) == 1
