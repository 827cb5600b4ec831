"""Conflation on a real node with real WebSocket clients (``[[namespaces]] conflate_ms``).

A publisher relays at 1,000 actions/s for a bounded time into a conflated channel: each
member gets at most ⌈duration/window⌉ + 1 actions per key, and the last of each key
always. A member whose reader is paused (a small receive buffer, no reads) is skipped
while its transport is paused and then gets the newest value of each key, where an
unconflated channel's backlog would have closed it 4000."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import websockets

from ..test_metrics import samples, value
from .gateway import ORIGIN, Peer, Running, make_config, running

TICKER = "acme:ticker/fx"
WINDOW_MS = 100
RATE = 1000
"""Actions per second the publisher sends."""


def _config(**server: Any) -> Any:
    return make_config(
        namespaces=[{"match": "*:ticker/*", "conflate_ms": WINDOW_MS,
                     "conflate_key": "payload.symbol"}],
        limits={"default_rate": "5000/1s", "default_burst": 5000},
        server=server,
    )


async def _publish(
    peer: Peer, symbols: list[str], seconds: float, pad: str = "", rate: int = RATE
) -> tuple[dict[str, int], float]:
    """Relay ``rate`` actions/s for ``seconds``, round-robin over ``symbols``, paced in 10 ms
    steps (a bounded loop). Returns each symbol's last ``n`` and when the first was sent."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    per_step = rate // 100
    last: dict[str, int] = {}
    n = 0
    for step in range(int(seconds * 100)):
        for _ in range(per_step):
            symbol = symbols[n % len(symbols)]
            payload = {"symbol": symbol, "n": n, "pad": pad}
            await peer.ws.send(json.dumps({"type": "chat/TICK", "payload": payload,
                                           "meta": {"channel": TICKER}}))
            last[symbol] = n
            n += 1
        await asyncio.sleep(max(0.0, start + (step + 1) / 100 - loop.time()))  # pacing only
    return last, start


async def _read_until_last(
    recv: Callable[[], Awaitable[Any]],
    last: dict[str, int],
    timeout: float = 10.0,
    seen: dict[str, list[int]] | None = None,
) -> dict[str, list[int]]:
    """Read ticks until every symbol's ``last`` value arrived; each symbol's values in order
    (added to ``seen``, when given, so a reader can go on where a cancelled one stopped)."""
    if seen is None:
        seen = {}
    for symbol in last:
        seen.setdefault(symbol, [])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for _ in range(100_000):
        if all(values and values[-1] == last[s] for s, values in seen.items()):
            return seen
        action = json.loads(await asyncio.wait_for(recv(), max(0.01, deadline - loop.time())))
        if action["type"] == "chat/TICK":
            seen[action["payload"]["symbol"]].append(action["payload"]["n"])
    raise AssertionError("the last values never arrived")


async def test_each_member_gets_at_most_one_per_key_per_window_and_always_the_last() -> None:
    symbols = ["EUR", "GBP", "JPY"]
    async with running(_config()) as gw, gw.peer("pub") as pub, gw.peer("a") as a, \
            gw.peer("b") as b:
        for peer in (pub, a, b):
            await peer.join(TICKER)
        loop = asyncio.get_running_loop()
        last, start = await _publish(pub, symbols, 1.0)
        got = await asyncio.gather(*(_read_until_last(p.ws.recv, last) for p in (a, b)))
        # The span from the first send to the last value's arrival bounds the node's.
        duration = loop.time() - start
        bound = math.ceil(duration * 1000 / WINDOW_MS) + 1
        for seen in got:
            for symbol, values in seen.items():
                assert values[-1] == last[symbol]
                assert 1 <= len(values) <= bound, (symbol, len(values), bound)
                assert values == sorted(values)  # each is newer than the one before
        assert sum(len(v) for v in got[0].values()) < RATE * 1.0 / 10  # not 1,000 deliveries
        await a.silent(2 * WINDOW_MS / 1000)  # and nothing after the last window


async def _paused_reader(gw: Running) -> Any:
    """A real client with a tiny receive buffer whose reads stop after its JOIN."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    host, port = gw.url.split("//")[1].split("/")[0].rsplit(":", 1)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    return websockets.connect(
        gw.url, sock=sock, origin=ORIGIN,  # type: ignore[arg-type]
        additional_headers={"Cookie": gw.cookie("slow")}, max_queue=1, open_timeout=5,
    )


def _small_send_buffer(gw: Running, cid: str) -> None:
    """Pin the node's socket of ``cid`` to a small kernel send buffer (no autotuning up to
    4 MiB), so a paused reader backs up into the node's transport within a few windows."""
    conn = gw.node.gateway.pool.connections[cid]  # type: ignore[union-attr, index]
    transport = conn.sink._wst.underlying_transport  # type: ignore[attr-defined]
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)


async def test_a_paused_reader_gets_the_newest_value_not_a_backlog_and_stays_open() -> None:
    # 1,000 actions/s of 2 KiB over 16 keys for 2 s: ~320 KiB/s to each member after
    # conflation, ~640 KiB in all, past the high-water mark a backlog would hit.
    high_water = 256 * 1024
    symbols = [f"S{i}" for i in range(16)]
    pad = "x" * 2048
    async with running(_config(outbound_high_water_bytes=high_water)) as gw, \
            gw.peer("pub") as pub, gw.peer("fast") as fast, await _paused_reader(gw) as slow:
        welcome = json.loads(await slow.recv())
        _small_send_buffer(gw, welcome["payload"]["connectionId"])
        await slow.send(json.dumps({"type": "@@wsgate/JOIN", "payload": {"channel": TICKER}}))
        assert json.loads(await slow.recv())["type"] == "@@wsgate/JOINED"
        for peer in (pub, fast):
            await peer.join(TICKER)
        fast_bytes = 0

        async def fast_recv() -> Any:
            nonlocal fast_bytes
            data = await fast.ws.recv()
            fast_bytes += len(data)
            return data

        fast_seen: dict[str, list[int]] = {}
        reading = asyncio.ensure_future(
            _read_until_last(fast_recv, dict.fromkeys(symbols, -1), seen=fast_seen)
        )
        last, _ = await _publish(pub, symbols, 2.0, pad)
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
        await _read_until_last(fast_recv, last, seen=fast_seen)
        assert fast_bytes > 2 * high_water  # more than the slow one could have queued
        seen = await _read_until_last(slow.recv, last)  # now it reads: the newest of each
        for symbol, values in seen.items():
            assert values[-1] == last[symbol]
        assert slow.close_code is None  # never closed 4000
        conflation = gw.node.gateway.fanout.conflation  # type: ignore[union-attr]
        assert conflation.skipped > 0  # it was congested, and skipped
        got = await samples(gw)  # and /metrics says so
        assert value(got, "wsgate_conflation_skipped_total") == conflation.skipped
        assert value(got, "wsgate_conflation_superseded_total") == conflation.superseded > 0
