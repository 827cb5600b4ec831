"""Conflation: a hot channel of N members, with and without ``[[namespaces]] conflate_ms``.

Two ``wsgate serve`` processes run side by side, pinned to CPU 0, identical but
for one ``[[namespaces]]`` rule on the bench channel of ``conflated``
(``conflate_ms``, ``conflate_key = "payload.sym"``); ``plain`` is the anchor.
This process (pinned to CPU 1) holds N receivers and one publisher on each.

A round: the publisher relays ``--rate`` actions/s (paced in 10 ms steps) for
``--seconds``, round-robin over K keys, then one ``bench/END`` action (a key of
its own); the round ends when every receiver has that END. The rounds are
**interleaved** (plain, conflated, conflated, plain, ...), R of each, after a
warm-up round each. Per round, t from the first send until the last receiver
has END:

- ``in/s``: published actions / t (below ``--rate`` when the gateway fell behind);
- ``deliv/s``: the frames the receivers got / t (N per action for ``plain``;
  at most K + 1 per receiver per window for ``conflated``), and ``/member``;
- ``cpu/in``: the gateway's CPU time per published action;
- ``lag``: from the last send until every receiver has END (how far behind the
  gateway was; ``conflated`` includes up to one window);
- which side was saturated: ``server`` when the gateway used >= 85 % of its
  core during the round, ``client`` when this process did, ``both``; when
  neither did, ``starved`` if other processes took more than ``--max-other``
  of a CPU, else ``neither``.

The machine may be shared: each round notes the CPU other processes took
(``/proc/stat`` minus the two gateways and this process); a round over
``--max-other`` of a CPU is run again, up to 3 x R rounds, the quietest R kept.
Medians are printed with the ratios conflated / plain.

Usage::

    python bench/conflation.py [--n 1000] [--rate 1000] [--seconds 3] [--keys 10]
                               [--window-ms 100] [--rounds 5] [--max-other 0.25]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop
from picows import WSMsgType

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _clients import Client, Pool
from _servers import BenchError, ServerProcess, pin_self, start_gateway

CHANNEL = "acme:bench"
SATURATED = 0.85
END = b'"bench/END"'
_TEXT = WSMsgType.TEXT


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _machine_busy() -> float:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


class EndPool(Pool):
    """A :class:`Pool` that also tells when every receiver has a round's ``bench/END``."""

    def __init__(self) -> None:
        super().__init__(gateway=True, join=CHANNEL)
        self.ends = 0
        self.receivers = 0
        self.ended: asyncio.Future[None] | None = None

    def control(self, client: Client, payload: bytes) -> None:
        if END in payload:
            self.ends += 1
            if self.ends == self.receivers and self.ended is not None and not self.ended.done():
                self.ended.set_result(None)
            return
        super().control(client, payload)


def _message(seq: int, sym: str, pad: str, type_: str = "bench/MSG") -> bytes:
    return (
        f'{{"type":"{type_}","payload":{{"seq":{seq},"sym":"{sym}","pad":"{pad}"}},'
        f'"meta":{{"channel":"{CHANNEL}"}}}}'
    ).encode()


@dataclass
class Side:
    name: str
    server: ServerProcess
    pool: EndPool
    publisher: Client
    receivers: list[Client]
    rounds: list[dict[str, float]] = field(default_factory=list)
    seq: int = 0


async def _round(side: Side, args: argparse.Namespace, pad: str) -> dict[str, float]:
    """Publish ``rate`` actions/s for ``seconds`` (paced in 10 ms steps), then END; measure."""
    pool = side.pool
    loop = asyncio.get_running_loop()
    got0 = sum(c.got for c in side.receivers)
    per_step = max(1, args.rate // 100)
    steps = int(args.seconds * 100)
    pool.ends = 0
    pool.receivers = len(side.receivers)
    pool.ended = loop.create_future()
    send = side.publisher.wst.send
    cpu_srv, cpu_me, busy = side.server.cpu_seconds(), _cpu_self(), _machine_busy()
    t0 = time.perf_counter()
    start = loop.time()
    for step in range(steps):
        for _ in range(per_step):
            send(_TEXT, _message(side.seq, f"S{side.seq % args.keys}", pad))
            side.seq += 1
        await asyncio.sleep(max(0.0, start + (step + 1) / 100 - loop.time()))  # pacing
    sent_s = time.perf_counter() - t0
    send(_TEXT, _message(side.seq, "END", pad, "bench/END"))
    try:
        await asyncio.wait_for(pool.ended, args.timeout)
    except TimeoutError:
        raise BenchError(
            f"{side.name}: {pool.ends}/{pool.receivers} receivers had END after "
            f"{args.timeout:.0f}s; closes={pool.closes[:5]} errors={pool.errors[:3]}"
        ) from None
    t = time.perf_counter() - t0
    srv = side.server.cpu_seconds() - cpu_srv
    me = _cpu_self() - cpu_me
    other = max(0.0, _machine_busy() - busy - srv - me) / t
    published = steps * per_step + 1
    deliveries = sum(c.got for c in side.receivers) - got0 + pool.receivers
    return {
        "t": t, "lag": t - sent_s, "in_s": published / t, "deliv_s": deliveries / t,
        "per_member": deliveries / pool.receivers, "cpu_in": srv / published,
        "srv": srv / t, "me": me / t, "other": other,
    }  # fmt: skip


def _saturated(r: dict[str, float], max_other: float) -> str:
    s, c = r["srv"] >= SATURATED, r["me"] >= SATURATED
    if s or c:
        return "both" if s and c else "server" if s else "client"
    return "starved" if r["other"] > max_other else "neither"


async def _open(name: str, workdir: Path, extra: str, n: int) -> Side:
    server, cookie = start_gateway(workdir, extra=extra)
    pool = EndPool()
    headers = {"Cookie": f"wsgate_session={cookie}"}
    [pub] = await pool.connect(server.url, 1, headers, publisher=True)
    receivers = await pool.connect(server.url, n, headers, timeout=60 + n / 50)
    await pool.quiesce()
    return Side(name, server, pool, pub, receivers)


async def _main(args: argparse.Namespace) -> int:
    pinned = pin_self()
    pad = "x" * max(0, args.payload - 40)
    rule = (
        f'\n[[namespaces]]\nmatch = "{CHANNEL}"\nconflate_ms = {args.window_ms}\n'
        'conflate_key = "payload.sym"\n'
    )
    with tempfile.TemporaryDirectory(prefix="wsgate-conflation-") as tmp:
        sides: list[Side] = []
        try:
            sides.append(await _open("plain", Path(tmp), "", args.n))
            sides.append(await _open("conflated", Path(tmp), rule, args.n))
            for side in sides:  # warm-up
                await _round(side, args, pad)
            attempts = 0
            while attempts < 3 * args.rounds and any(
                sum(r["other"] <= args.max_other for r in s.rounds) < args.rounds for s in sides
            ):
                attempts += 1
                order = sides if attempts % 2 else sides[::-1]
                for side in order:
                    side.rounds.append(await _round(side, args, pad))
        finally:
            for side in sides:
                await side.pool.close_all()
                side.server.stop()
    _report(args, sides, pinned)
    return 0


def _report(args: argparse.Namespace, sides: list[Side], pinned: bool) -> None:
    print(
        f"conflation: N={args.n} rate={args.rate}/s for {args.seconds} s, K={args.keys} "
        f"window={args.window_ms} ms payload={args.payload} B rounds={args.rounds} "
        f"(pinned: {pinned})"
    )
    print(f"{'side':10} {'in/s':>7} {'deliv/s':>10} {'/member':>8} {'cpu/in µs':>10} "
          f"{'lag s':>7} {'srv':>5} {'load':>5} {'other':>6}  saturated  noisy")
    med: dict[str, dict[str, Any]] = {}
    for side in sides:
        kept = sorted(side.rounds, key=lambda r: r["other"])[: args.rounds]
        noisy = sum(r["other"] > args.max_other for r in side.rounds)
        m = {k: statistics.median(r[k] for r in kept) for k in kept[0]}
        med[side.name] = m
        print(
            f"{side.name:10} {m['in_s']:7.0f} {m['deliv_s']:10.0f} {m['per_member']:8.0f} "
            f"{m['cpu_in'] * 1e6:10.1f} {m['lag']:7.3f} {m['srv']:5.2f} {m['me']:5.2f} "
            f"{m['other']:6.2f}  "
            f"{_saturated(m, args.max_other):9}  {noisy}/{len(side.rounds)}"
        )
    plain, conf = med["plain"], med["conflated"]
    print(
        f"ratios conflated/plain: deliv/s {conf['deliv_s'] / plain['deliv_s']:.3f} x, "
        f"gateway cpu per published action {conf['cpu_in'] / plain['cpu_in']:.3f} x, "
        f"lag (last send -> latest everywhere) {conf['lag'] / plain['lag']:.2f} x"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1000, help="receivers per gateway")
    p.add_argument("--rate", type=int, default=1000, help="published actions per second")
    p.add_argument("--seconds", type=float, default=3.0, help="publishing time per round")
    p.add_argument("--keys", type=int, default=10, help="distinct conflation keys")
    p.add_argument("--window-ms", type=int, default=100)
    p.add_argument("--payload", type=int, default=100, help="payload bytes")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--max-other", type=float, default=0.25)
    p.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args()
    try:
        return uvloop.run(_main(args))
    except BenchError as exc:
        print(f"conflation: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
