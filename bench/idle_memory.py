"""Idle memory: bytes of server memory per idle, signed-in connection.

For the reference (``bench/reference_server.py``, bare picows, 2 KiB read
buffer), the gateway (``wsgate serve``) and the Node anchors (uWebSockets.js's
native addon and Node ``ws``, ``bench/anchors/``; install them once with
``sh bench/anchors/install.sh``), in the same invocation, one after the other:

1. start the server (pinned to CPU 0) and open a warm-up of 100 connections
   (gateway: signed in, ``WELCOME`` received), so that the interpreter,
   the handshake path and the allocator's first arenas are in the baseline;
2. wait until the server's RSS settles, read RSS (``VmRSS``) and PSS
   (``/proc/<pid>/smaps_rollup``): the *before* figures;
3. open N more connections (gateway: each signed in, ``WELCOME`` received),
   wait for RSS to settle: (after - before) / N is the cost of a *plain*
   idle connection;
4. gateway only: every one of the N joins one view (its own
   ``acme:idle/<i>`` by default, or all the same one with ``--view shared``),
   wait for RSS to settle: the cost of an idle connection *with one view*.

Kernel socket buffers are not in a process's RSS and are not counted (an
idle socket holds no data in them anyway).

Usage::

    . .venv/bin/activate
    python bench/idle_memory.py [--n 10000] [--view own|shared]
                                [--servers reference gateway uws ws]
                                [--trace DIR [--trace-frames F]]

``--trace DIR`` (gateway only) runs the gateway under ``tracemalloc``
(``bench/_traced.py``), dumps a snapshot and a census by type at the
*before* and *plain* stages into DIR, and prints per connection where the
traced bytes went, by type and by line. Tracing costs memory and time of
its own: the RSS figures of a traced run are not the untraced ones.

Exits non-zero, saying what happened, when a server does not start or a
connection cannot be opened, signed in or joined in time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

import uvloop
from picows import WSMsgType

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _clients import Pool
from _servers import (
    ANCHORS,
    BenchError,
    ServerProcess,
    pin_self,
    start_anchor,
    start_gateway,
    start_reference,
)

SERVERS = ("reference", "gateway", *ANCHORS)

WARMUP = 100
SETTLE_STEP_S = 0.25
SETTLE_QUIET_S = 2.0
SETTLE_LIMIT_S = 30.0
SETTLE_TOLERANCE = 0.002
"""RSS is settled when it moved by less than 0.2 % over SETTLE_QUIET_S."""
TARGET_B = 6000
"""Issue 14, item 4: at most 6 KB of RSS per idle signed-in connection."""


@dataclass
class Stage:
    name: str
    rss: int
    pss: int
    settle_s: float


@dataclass
class Run:
    server: str
    n: int
    stages: list[Stage] = field(default_factory=list)

    def per_conn(self, stage: str, base: str = "before", pss: bool = False) -> float:
        by = {s.name: s for s in self.stages}
        if stage not in by:
            return float("nan")
        a, b = by[stage], by[base]
        return ((a.pss - b.pss) if pss else (a.rss - b.rss)) / self.n


async def settle(srv: ServerProcess, name: str) -> Stage:
    """Wait (bounded) until the server's RSS stops moving, then read RSS and PSS."""
    start = time.monotonic()
    history: list[tuple[float, int]] = []
    while True:
        now = time.monotonic()
        rss = srv.rss_bytes()
        history.append((now, rss))
        old = [r for t, r in history if now - t >= SETTLE_QUIET_S]
        if old and abs(rss - old[-1]) <= SETTLE_TOLERANCE * rss:
            break
        if now - start > SETTLE_LIMIT_S:
            print(f"    ({name}: RSS still moving after {SETTLE_LIMIT_S:.0f}s; reading it anyway)")
            break
        await asyncio.sleep(SETTLE_STEP_S)
    return Stage(name, srv.rss_bytes(), srv.pss_bytes(), time.monotonic() - start)


async def trace_dump(srv: ServerProcess, trace: Path, k: int) -> None:
    """Ask the traced gateway for dump ``k`` (``bench/_traced.py``) and wait for it (bounded)."""
    os.kill(srv.pid, signal.SIGUSR2)
    deadline = time.monotonic() + 300
    while not (trace / f"done.{k}").exists():
        if time.monotonic() > deadline or not srv.alive():
            raise BenchError(f"no trace dump {k} in {trace}")
        await asyncio.sleep(0.2)


def _types(path: Path) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for line in path.read_text().splitlines():
        count, size, name = line.split("\t")
        out[name] = (int(count), int(size))
    return out


def trace_report(trace: Path, n: int, top: int = 25) -> None:
    """Per connection, between dump 0 (before) and dump 1 (plain): by type, then by line."""
    a, b = _types(trace / "types.0"), _types(trace / "types.1")
    rows = []
    for name in set(a) | set(b):
        (c0, s0), (c1, s1) = a.get(name, (0, 0)), b.get(name, (0, 0))
        rows.append(((s1 - s0) / n, (c1 - c0) / n, name))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    print(f"\nobjects by type, per connection (sys.getsizeof; total {total:,.0f} B):")
    print(f"{'B/conn':>8} {'objs/conn':>9}  type")
    for size, count, name in rows[:top]:
        print(f"{size:>8.0f} {count:>9.2f}  {name}")
    s0 = tracemalloc.Snapshot.load(str(trace / "snap.0"))
    s1 = tracemalloc.Snapshot.load(str(trace / "snap.1"))
    deep = len(s1.traces) > 0 and len(s1.traces[0].traceback) > 1
    stats = s1.compare_to(s0, "traceback" if deep else "lineno")
    traced = sum(st.size_diff for st in stats)
    print(f"\ntraced allocations by line, per connection (total {traced / n:,.0f} B):")
    print(f"{'B/conn':>8} {'blocks/conn':>11}  line (innermost first)")
    for st in stats[:top]:
        where = " < ".join(
            f"{Path(f.filename).name}:{f.lineno}" for f in list(reversed(st.traceback))[:4]
        )
        print(f"{st.size_diff / n:>8.0f} {st.count_diff / n:>11.2f}  {where}")


async def run_one(
    kind: str, n: int, view: str, workdir: Path, trace: Path | None = None
) -> Run:
    cookie = ""
    srv: ServerProcess
    if kind == "gateway":
        command = None
        if trace is not None:
            trace.mkdir(parents=True, exist_ok=True)
            for old in trace.glob("*.[0-9]*"):
                old.unlink()
            os.environ["WSGATE_TRACE_DIR"] = str(trace.resolve())
            command = [sys.executable, str(Path(__file__).resolve().parent / "_traced.py")]
        srv, cookie = start_gateway(workdir, command, start_timeout_s=120)
    elif kind == "reference":
        srv = start_reference(workdir)
    else:
        srv = start_anchor(kind, workdir)
    gateway = kind == "gateway"
    headers = {"Cookie": f"wsgate_session={cookie}"} if gateway else {}
    pool = Pool(gateway=gateway, join=None, read_buffer=2048)
    run = Run(kind, n)
    try:
        await pool.connect(srv.url, WARMUP, headers)
        await pool.quiesce()
        run.stages.append(await settle(srv, "before"))
        if gateway and trace is not None:
            await trace_dump(srv, trace, 0)
        clients = await pool.connect(srv.url, n, headers, timeout=60 + n / 50)
        await pool.quiesce()
        run.stages.append(await settle(srv, "plain"))
        if gateway and trace is not None:
            await trace_dump(srv, trace, 1)
        if gateway:
            joined0 = pool.joined
            for i, c in enumerate(clients):
                channel = f"acme:idle/{i}" if view == "own" else "acme:idle"
                c.wst.send(
                    WSMsgType.TEXT,
                    (
                        f'{{"type":"@@wsgate/JOIN","payload":{{"channel":"{channel}"}},'
                        f'"meta":{{"id":"j{i}"}}}}'
                    ).encode(),
                )
                if i % 500 == 499:
                    await asyncio.sleep(0.01)  # let answers flow; bounded burst
            deadline = time.monotonic() + 60 + n / 100
            while pool.joined - joined0 < n:
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"only {pool.joined - joined0}/{n} JOINED; errors: {pool.errors[:3]}"
                    )
                await asyncio.sleep(0.1)
            await pool.quiesce()
            run.stages.append(await settle(srv, "joined"))
        if not srv.alive():
            raise BenchError(f"{kind} died")
        if pool.errors:
            raise BenchError(f"{kind} sent errors: {pool.errors[:3]}")
        return run
    except BenchError as exc:
        raise BenchError(f"{kind}: {exc}\n--- log tail ---\n{srv.log_tail(1500)}") from None
    finally:
        try:
            await pool.close_all()
        finally:
            srv.stop()
        await asyncio.sleep(0.5)


def report(runs: dict[str, Run], view: str) -> None:
    """A row per server: RSS and PSS growth per connection, ratios to the reference and ws."""
    any_run = next(iter(runs.values()))
    print()
    print(
        f"idle memory, N={any_run.n} connections beyond a warm-up of {WARMUP}; "
        "server RSS (and PSS) growth / N"
    )
    hdr = (
        f"{'server':<10} {'RSS B/conn':>10} {'PSS B/conn':>10} {'x ref':>6} {'x ws':>6} "
        f"{'base MiB':>8} {'after MiB':>9}"
    )
    print(hdr)
    print("-" * len(hdr))
    ref, ws = runs.get("reference"), runs.get("ws")
    for run in runs.values():
        rss = run.per_conn("plain")
        x_ref = f"{rss / ref.per_conn('plain'):.2f}" if ref else "-"
        x_ws = f"{rss / ws.per_conn('plain'):.2f}" if ws else "-"
        by = {s.name: s for s in run.stages}
        print(
            f"{run.server:<10} {rss:>10,.0f} {run.per_conn('plain', pss=True):>10,.0f} "
            f"{x_ref:>6} {x_ws:>6} {by['before'].rss / 2**20:>8.1f} "
            f"{by['plain'].rss / 2**20:>9.1f}"
        )
    gw = runs.get("gateway")
    if gw is not None:
        print(
            f"gateway, joined one view ({view}): {gw.per_conn('joined'):,.0f} B/conn, "
            f"of which the join {gw.per_conn('joined', 'plain'):,.0f} B/conn"
        )
    print()
    for run in runs.values():
        stages = ", ".join(
            f"{s.name} {s.rss / 2**20:.1f} MiB (settled in {s.settle_s:.1f}s)" for s in run.stages
        )
        print(f"{run.server}: RSS {stages}")
    if gw is not None:
        per = gw.per_conn("plain")
        verdict = "OK" if per <= TARGET_B else f"ABOVE TARGET by {per - TARGET_B:,.0f} B"
        print(
            f"gateway plain idle connection: {per:,.0f} B "
            f"(target <= {TARGET_B:,} B, issue 14 item 4): {verdict}"
        )


async def amain(args: argparse.Namespace) -> int:
    pinned = pin_self()
    print(f"wsgate idle-memory bench: N={args.n} view={args.view} pinned={pinned}", flush=True)
    with tempfile.TemporaryDirectory(prefix="wsgate-bench-") as tmp:
        workdir = Path(tmp)
        runs: dict[str, Run] = {}
        for kind in args.servers:
            print(f"  {kind} ...", flush=True)
            runs[kind] = await run_one(kind, args.n, args.view, workdir, args.trace)
            print(
                "    " + ", ".join(f"{s.name} {s.rss / 2**20:.1f} MiB" for s in runs[kind].stages),
                flush=True,
            )
    report(runs, args.view)
    if args.trace is not None and "gateway" in runs:
        trace_report(args.trace, args.n)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="wsgate idle-memory benchmark")
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument(
        "--view",
        choices=("own", "shared"),
        default="own",
        help="joined stage: each connection its own view, or all in one (default own)",
    )
    parser.add_argument(
        "--servers",
        nargs="+",
        choices=SERVERS,
        default=list(SERVERS),
        help="servers to measure, in this order (default all)",
    )
    parser.add_argument(
        "--trace",
        type=Path,
        default=None,
        metavar="DIR",
        help="run the gateway under tracemalloc; dumps into DIR, report by type and line",
    )
    parser.add_argument(
        "--trace-frames", type=int, default=1, help="tracemalloc frames per allocation"
    )
    args = parser.parse_args()
    os.environ["WSGATE_TRACE_FRAMES"] = str(args.trace_frames)
    args.servers = [s for s in SERVERS if s in args.servers]
    need = args.n + WARMUP + 200
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, need), hard))
    try:
        return uvloop.run(amain(args))
    except BenchError as exc:
        print(f"\nidle_memory: FAILED: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
