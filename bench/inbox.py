"""Publish-to-user round trip with the personal inbox on against off, in one run.

Two gateways run side by side (``wsgate serve`` subprocesses pinned to CPU 0): one
with the defaults (``[inbox] enabled = true``: every push to a user is framed once
with its ``meta.offset`` and appended to the user's inbox stream), one with
``[inbox] enabled = false``. For each, one WebSocket client signed in as the bench
user and one HTTP client of the internal API run in this process (pinned to CPU 1).
A round is ``--count`` closed-loop round trips: ``POST /v1/publish {"to": {"user":
"bench"}}`` carrying a sequence number, then wait until the client received that
action. Rounds alternate on, off, on, off ... (``--rounds`` each, after one warm-up
round each); reported are the medians of round trips per second, p50 and p99
latency, and the gateway's CPU µs per round trip (its own CPU time over the round,
the figure the shared machine moves least), then the ratios on / off.

The loop is closed with one publisher, so neither side is saturated by load: the
round trip is the sum of the HTTP request, the gateway's publish and the
WebSocket delivery. The gateway's CPU share of the round (printed) says how much of
the round trip it is.

Usage::

    . .venv/bin/activate
    python bench/inbox.py [--count 500] [--rounds 5]

Exits non-zero, saying what happened, when a gateway does not start or a round
trip does not come back within 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import websockets
from _servers import GATEWAY_API_KEY, BenchError, ServerProcess, pin_self, start_gateway

OFF = "\n[inbox]\nenabled = false\n"
TIMEOUT_S = 5.0


class Side:
    """One gateway, its WebSocket client and its API client."""

    def __init__(self, name: str, srv: ServerProcess, cookie: str) -> None:
        self.name = name
        self.srv = srv
        self.cookie = cookie
        self.rounds: list[dict[str, float]] = []

    async def open(self) -> None:
        self.ws = await websockets.connect(
            self.srv.url, additional_headers={"Cookie": f"wsgate_session={self.cookie}"},
            origin="http://bench.test", open_timeout=10,  # type: ignore[arg-type]
        )
        welcome = json.loads(await self.ws.recv())
        if welcome["type"] != "@@wsgate/WELCOME":
            raise BenchError(f"{self.name}: no WELCOME: {welcome}")
        self.http = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {GATEWAY_API_KEY}"}
        )

    async def close(self) -> None:
        await self.ws.close()
        await self.http.close()

    async def round(self, count: int, seq0: int) -> dict[str, float]:
        latencies = []
        cpu0, t0 = self.srv.cpu_seconds(), time.perf_counter()
        for i in range(seq0, seq0 + count):
            body = {"to": {"user": "bench"}, "action": {"type": "bench/PUSH", "payload": {"i": i}}}
            start = time.perf_counter()
            async with self.http.post(f"{self.srv.api_url}/v1/publish", json=body) as resp:
                if resp.status != 202:
                    raise BenchError(f"{self.name}: publish answered {resp.status}")
            for _ in range(100):  # bounded: skip anything that is not this push
                action = json.loads(await asyncio.wait_for(self.ws.recv(), TIMEOUT_S))
                if action["type"] == "bench/PUSH" and action["payload"]["i"] == i:
                    break
            else:
                raise BenchError(f"{self.name}: push {i} never arrived")
            latencies.append(time.perf_counter() - start)
        wall = time.perf_counter() - t0
        cpu = self.srv.cpu_seconds() - cpu0
        latencies.sort()
        return {
            "rps": count / wall,
            "p50_ms": latencies[len(latencies) // 2] * 1000,
            "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
            "cpu_us": cpu / count * 1e6,
            "cpu_share": cpu / wall,
        }


def median(side: Side, key: str) -> float:
    return statistics.median(r[key] for r in side.rounds)


async def run(count: int, rounds: int, workdir: Path) -> None:
    pinned = pin_self()
    sides: list[Side] = []
    try:
        for name, extra in (("on", ""), ("off", OFF)):
            srv, cookie = start_gateway(workdir, extra=extra)
            side = Side(name, srv, cookie)
            sides.append(side)
            await side.open()
        seq = 0
        for side in sides:  # warm-up
            await side.round(count, seq)
            seq += count
        for _ in range(rounds):  # interleaved: on, off, on, off ...
            for side in sides:
                side.rounds.append(await side.round(count, seq))
                seq += count
        on, off = sides
        print(f"publish-to-user round trip, {count} per round, {rounds} rounds each, "
              f"medians (pinned: {pinned}; the machine is shared)")
        for side in sides:
            print(f"  inbox {side.name:3}: {median(side, 'rps'):8.0f} round trips/s  "
                  f"p50 {median(side, 'p50_ms'):6.3f} ms  p99 {median(side, 'p99_ms'):6.3f} ms  "
                  f"gateway {median(side, 'cpu_us'):6.1f} CPU µs/round trip  "
                  f"(CPU share {median(side, 'cpu_share'):.2f})")
        print(f"  ratio on/off: round trips/s {median(on, 'rps') / median(off, 'rps'):.3f} x, "
              f"p50 {median(on, 'p50_ms') / median(off, 'p50_ms'):.3f} x, "
              f"gateway CPU per round trip {median(on, 'cpu_us') / median(off, 'cpu_us'):.3f} x")
    finally:
        for side in sides:
            try:
                await side.close()
            finally:
                side.srv.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wsgate-inbox-bench-") as tmp:
        try:
            asyncio.run(run(args.count, args.rounds, Path(tmp)))
        except BenchError as exc:
            print(f"bench failed: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
