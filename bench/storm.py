"""Reconnect storm: S signed-in handshakes as fast as they go, beside bare picows and uWS.

When a node dies its clients reconnect to the others at once (issue 14 item
6). For each selected server (each a subprocess pinned to CPU 0, as in
``fanout.py``):

- ``gateway``: ``wsgate serve``; a storm connection is ready when its
  ``@@wsgate/WELCOME`` arrived: the cookie was opened, the hubs joined (the
  connection is in the pool) and WELCOME encoded and sent. Each storm
  connection is another user with its own cookie (sealed by the bench with the
  gateway's key), as when a dead node's users reconnect: none is in the node's
  cache of opened cookies (``--same-cookie``: one cookie for all, cached);
- ``reference``: ``bench/reference_server.py``, bare picows: ready at the 101;
- ``uws``: uWebSockets.js (its native addon), ready at the 101.

The reference's and uWS's storm connections upgrade on ``/idle``, which keeps
them out of those servers' one channel (as the gateway's are out of
``acme:bench``), so the probes reach the residents only.

Each server has its own load generator (a child process running this file with
``--worker``, pinned to CPU 1, picows clients on uvloop). It first opens R
*residents* (joined to ``acme:bench`` on the gateway; the other servers put
every connection in their one channel) and one prober. Then each round:

1. ``probe``: one relayed message every ``--probe-ms`` for a while before the
   storm; the time until the last resident has it is the *idle* last-member latency;
2. ``storm``: S new connections, at most ``--concurrency`` handshakes in
   flight, until every one is ready; the prober keeps relaying meanwhile: the
   *storm* last-member latency of the connections already open;
3. the storm's connections are aborted (RST: no TIME_WAIT) and the server is
   given time to notice (its open file count drops back, bounded).

Rounds are interleaved (one storm per server back to back, rotating order) and
repeated ``--rounds`` times after one warm-up round; the medians are reported
with handshakes/s = S / (time from the first connect until the last is ready),
ratios against the reference and uWS, server and client CPU during the storm
and which side was saturated (>= 85 % of its core), and the other processes'
CPU share (the machine is shared: ``/proc/stat`` minus ours).

File descriptors: a worker holds S + R + 1 sockets, and so does the server;
both raise their soft ``RLIMIT_NOFILE`` to what they need (at most the hard
limit, typically 20,000 here), and the bench refuses an S that does not fit.

Usage::

    . .venv/bin/activate
    sh bench/anchors/install.sh          # once, for --servers uws
    python bench/storm.py [--storm 10000] [--rounds 5] [--concurrency 500]
                          [--residents 100] [--servers gateway reference uws]
                          [--profile DIR] [--base-src DIR] [--callgrind DIR]

``--base-src DIR`` also runs the gateway from another ``src/`` tree (say
``git archive main src | tar -x -C /tmp/base``, then ``--base-src
/tmp/base/src``) as ``gateway@base``, interleaved with the rest: before and
after a change in one invocation.

``--callgrind DIR`` runs the gateways under callgrind and prints the
instructions each spent per handshake over the measured storms (user space
only: the kernel's share is not counted), the figure the shared machine's load
does not move; use a small ``--storm`` (1000), as callgrind slows the gateway
~50 times.

Exits non-zero, saying what happened, when a server fails to start, a client
cannot connect, or a storm times out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _clients import Pool, bench_message
from _servers import (
    BenchError,
    ServerProcess,
    callgrind_command,
    callgrind_last_ir,
    callgrind_toggle,
    pin_self,
    start_anchor,
    start_gateway,
    start_profiler,
    start_reference,
    stop_profiler,
)
from _workers import Worker, reply, serve

CHANNEL = "acme:bench"
SERVERS = ("gateway", "reference", "uws")
BASE = "gateway@base"
"""The gateway from another source tree (``--base-src``): before/after in one invocation."""
SATURATED = 0.85
SETTLE_TIMEOUT_S = 30.0
"""How long the server may take to notice the aborted storm connections."""


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _machine_busy() -> float:
    """CPU seconds all CPUs have spent busy since boot (``/proc/stat``)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if need > hard:
        raise BenchError(f"{need} file descriptors needed, the hard limit is {hard}")
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


# -- the worker: one server's load generator ----------------------------------


class _Prober:
    """Relays one message at a time from the prober and records the last resident's latency.

    Bounded: at most ``limit`` samples are kept; :meth:`run` stops when ``stop`` is set.
    """

    def __init__(self, residents: Pool, prober: Any, n: int, gateway: bool) -> None:
        self.residents = residents
        self.prober = prober
        self.n = n
        self.gateway = gateway
        self.seq = 0

    async def run(self, stop: asyncio.Event, every_s: float, limit: int = 10_000) -> list[float]:
        lat: list[float] = []
        while not stop.is_set() and len(lat) < limit:
            msg = bench_message(self.seq, CHANNEL, 100)
            self.seq += 1
            fire = Pool.sender(self.prober, [msg])
            t0, arrivals = await self.residents.measure(1, self.n, 30.0, fire)
            lat.append(arrivals[-1] - t0)
            with contextlib.suppress(TimeoutError):  # the pause between probes
                await asyncio.wait_for(stop.wait(), every_s)
        return lat


async def _worker(args: argparse.Namespace) -> None:
    """Open the residents, then answer ``probe <s>``, ``storm``, ``close``, ``quit`` on stdin."""
    gateway = args.worker.startswith("gateway")
    headers = {"Cookie": f"wsgate_session={args.cookie}"} if gateway else {}
    loop = asyncio.get_running_loop()
    residents = Pool(gateway=gateway, join=CHANNEL if gateway else None)
    try:
        [prober] = await residents.connect(args.url, 1, headers, publisher=True)
        await residents.connect(args.url, args.residents, headers)
        await residents.quiesce()
    except BenchError as exc:
        reply(ok=False, error=str(exc))
        return
    probe = _Prober(residents, prober, args.residents, gateway)
    reply(ok=True)
    storm: Pool | None = None
    # The reference and uWS put every connection in their one channel, but those
    # upgraded on /idle: the storm's must not receive the probes.
    storm_url = args.url if gateway else args.url.rstrip("/") + "/idle"
    storm_headers: Any = headers
    if args.cookies is not None:  # a user and a cookie per storm connection
        with open(args.cookies) as f:
            storm_headers = [{"Cookie": f"wsgate_session={c.strip()}"} for c in f]

    async def do_probe(cmd: list[str]) -> dict[str, Any]:
        stop = asyncio.Event()
        loop.call_later(float(cmd[1]), stop.set)
        return {"lat": await probe.run(stop, args.probe_ms / 1000)}

    async def do_storm(cmd: list[str]) -> dict[str, Any]:
        nonlocal storm
        storm = Pool(gateway=gateway, join=None)
        stop = asyncio.Event()
        probing = asyncio.ensure_future(probe.run(stop, args.probe_ms / 1000))
        c0 = _cpu_self()
        t0 = time.perf_counter()
        try:
            await storm.connect(
                storm_url, args.storm, storm_headers, concurrency=args.concurrency,
                timeout=60 + args.storm / 100,
            )  # fmt: skip
            wall = time.perf_counter() - t0
            cpu = _cpu_self() - c0
        finally:
            stop.set()
            lat = await probing
        return {"wall": wall, "client_cpu": cpu, "lat": lat, "errors": len(storm.errors)}

    async def do_close(cmd: list[str]) -> dict[str, Any]:
        nonlocal storm
        if storm is not None:
            await storm.close_all()
            storm = None
        return {}

    await serve({"probe": do_probe, "storm": do_storm, "close": do_close})
    if storm is not None:
        await storm.close_all()
    await residents.close_all()


def _start_worker(
    srv: ServerProcess, cookie: str, args: argparse.Namespace, log: Path, cookies: Path | None
) -> Worker:
    """The load generator for ``srv``: this file with ``--worker``, R residents + 1 prober."""
    argv = [
        __file__, "--worker", srv.name, "--url", srv.url,
        "--cookie", cookie, "--storm", str(args.storm), "--residents", str(args.residents),
        "--concurrency", str(args.concurrency), "--probe-ms", str(args.probe_ms),
        *(["--cookies", str(cookies)] if cookies is not None else []),
    ]  # fmt: skip
    return Worker(srv, argv, log, ready_timeout=120)


# -- the parent ---------------------------------------------------------------


@dataclass
class Result:
    label: str
    rate: list[float] = field(default_factory=list)
    """Handshakes per second, one per measured round."""
    server_cpu: list[float] = field(default_factory=list)
    client_cpu: list[float] = field(default_factory=list)
    other_cpu: list[float] = field(default_factory=list)
    idle_last: list[float] = field(default_factory=list)
    """Median last-member latency of the residents before each storm (s)."""
    storm_last: list[float] = field(default_factory=list)
    """Median last-member latency of the residents during each storm (s)."""
    storm_max: list[float] = field(default_factory=list)
    server_cpu_s: float = 0.0
    handshakes: int = 0
    ir: int = 0
    """``--callgrind``: the server's instructions over the measured storms."""

    def saturated(self) -> str:
        srv = _med(self.server_cpu) >= SATURATED
        cli = _med(self.client_cpu) >= SATURATED
        if srv or cli:
            return "both" if srv and cli else "server" if srv else "client"
        return "starved" if _med(self.other_cpu) > 0.25 else "stall"


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _seal_cookies(srv: ServerProcess, workdir: Path, n: int) -> Path:
    """``n`` session cookies of distinct users (``storm0``, ...) for the gateway ``srv``,
    one a line in a file: a reconnecting user's cookie is not in the node's cache
    of opened cookies, so each storm handshake opens (decrypts) its own."""
    from wsgate.auth.cookie import CookieCodec
    from wsgate.auth.keyring import KeyRing
    from wsgate.auth.principal import Principal
    from wsgate.config import load

    port = srv.url.rsplit(":", 1)[1].split("/", 1)[0]
    config = load(workdir / f"gateway-{port}.toml")
    codec = CookieCodec.from_config(config.auth, KeyRing.from_config(config.auth))
    path = workdir / f"cookies-{port}.txt"
    with open(path, "w") as f:
        for i in range(n):
            principal = Principal(sub=f"storm{i}", sid=f"s{i}", org="acme", orgs=("acme",))
            f.write(codec.seal(principal) + "\n")
    return path


def _start(
    kind: str, workdir: Path, base_src: Path | None, callgrind: Path | None = None
) -> tuple[ServerProcess, str]:
    wrap: list[str] = []
    if callgrind is not None:  # valgrind ... python -m wsgate.cli: keep the valgrind part
        wrap = callgrind_command(callgrind / f"{kind}.callgrind")[:-3]
    timeout = {} if callgrind is None else {"start_timeout_s": 300.0}
    if kind == "gateway":
        if not wrap:
            return start_gateway(workdir)
        return start_gateway(workdir, [*wrap, sys.executable, "-m", "wsgate.cli"], **timeout)
    if kind == BASE:
        assert base_src is not None
        boot = (
            f"import sys; sys.path.insert(0, {str(base_src)!r}); "
            "from wsgate.cli import main; sys.exit(main(sys.argv[1:]))"
        )
        srv, cookie = start_gateway(workdir, [*wrap, sys.executable, "-c", boot], **timeout)
        srv.name = BASE
        return srv, cookie
    if kind == "reference":
        return start_reference(workdir), ""
    return start_anchor(kind, workdir), ""


def _settle(srv: ServerProcess, baseline: int) -> None:
    """Wait (bounded) until the server's open files are back near ``baseline``."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        if srv.fds() <= baseline + 10:
            return
        time.sleep(0.05)
    raise BenchError(f"{srv.name} still holds {srv.fds()} files (baseline {baseline})")


def _round(w: Worker, r: Result, args: argparse.Namespace, baseline: int, keep: bool) -> None:
    idle = w.ask(f"probe {args.idle_s}", 30 + args.idle_s)["lat"]
    counted = args.callgrind is not None and keep and w.srv.name.startswith("gateway")
    if counted:
        callgrind_toggle(w.srv.pid, on=True)
    s0, m0, p0, k0 = w.srv.cpu_seconds(), _machine_busy(), _cpu_self(), w.cpu_seconds()
    t0 = time.perf_counter()
    answer = w.ask("storm", 120 + args.storm / (50 if args.callgrind is None else 5))
    window = time.perf_counter() - t0
    s1, m1, p1, k1 = w.srv.cpu_seconds(), _machine_busy(), _cpu_self(), w.cpu_seconds()
    if counted:
        callgrind_toggle(w.srv.pid, on=False)
        r.ir += callgrind_last_ir(args.callgrind / f"{w.srv.name}.callgrind")
    w.ask("close", 60)
    _settle(w.srv, baseline)
    if not keep:
        return
    wall = answer["wall"]
    r.rate.append(args.storm / wall)
    r.server_cpu.append((s1 - s0) / wall)
    r.client_cpu.append(answer["client_cpu"] / wall)
    ours = (s1 - s0) + (k1 - k0) + (p1 - p0)
    r.other_cpu.append(max(0.0, m1 - m0 - ours) / window)
    r.idle_last.append(_med(idle))
    r.storm_last.append(_med(answer["lat"]))
    r.storm_max.append(max(answer["lat"], default=float("nan")))
    r.server_cpu_s += s1 - s0
    r.handshakes += args.storm


def run(args: argparse.Namespace, workdir: Path) -> list[Result]:
    started: list[ServerProcess | Worker] = []
    try:
        workers: dict[str, Worker] = {}
        baselines: dict[str, int] = {}
        kinds = [*args.servers, *([BASE] if args.base_src is not None else [])]
        for kind in kinds:
            callgrind = args.callgrind if kind.startswith("gateway") else None
            srv, cookie = _start(kind, workdir, args.base_src, callgrind)
            started.append(srv)
            cookies = (
                _seal_cookies(srv, workdir, args.storm)
                if kind.startswith("gateway") and not args.same_cookie
                else None
            )
            log = workdir / f"worker-{kind}.log"
            workers[kind] = w = _start_worker(srv, cookie, args, log, cookies)
            started.append(w)
            baselines[kind] = srv.fds()
        print(f"  residents open on {list(workers)}; {args.rounds} + 1 rounds", flush=True)
        results = {kind: Result(kind) for kind in workers}
        plan = list(workers)
        profiler = None
        for i in range(1 + args.rounds):
            order = plan[i % len(plan) :] + plan[: i % len(plan)]
            for kind in order:
                w = workers[kind]
                if args.profile is not None and kind.startswith("gateway") and i == 1:
                    profiler = start_profiler(w.srv.pid, args.profile / f"{kind}-storm.txt")
                _round(w, results[kind], args, baselines[kind], keep=i > 0)
                if profiler is not None:
                    stop_profiler(profiler)
                    profiler = None
                rate = results[kind].rate[-1] if i > 0 else float("nan")
                print(f"    round {i} {kind}: {rate:,.0f} handshakes/s", flush=True)
        for srv in (s for s in started if isinstance(s, ServerProcess)):
            if not srv.alive():
                raise BenchError(f"{srv.name} died:\n{srv.log_tail()}")
        return list(results.values())
    finally:
        for s in reversed(started):
            s.stop()


def report(results: list[Result], args: argparse.Namespace) -> None:
    by = {r.label: r for r in results}
    ref, uws = by.get("reference"), by.get("uws")
    print(
        f"\nstorm of {args.storm} connections, {args.concurrency} in flight, "
        f"{args.residents} residents probed every {args.probe_ms} ms; medians of {args.rounds}"
    )
    print(
        "| server | handshakes/s | storm s | server CPU | client CPU | other CPU | saturated "
        "| µs server CPU/handshake | residents' last ms idle / storm / max | × ref | × uWS |"
    )
    print("|---|---:|---:|---:|---:|---:|---|---:|---|---:|---:|")
    for r in results:
        rate = _med(r.rate)
        x_ref = f"{rate / _med(ref.rate):.2f}" if ref else ""
        x_uws = f"{rate / _med(uws.rate):.2f}" if uws else ""
        print(
            f"| {r.label} | {rate:,.0f} | {args.storm / rate:.2f} | {_med(r.server_cpu):.0%} "
            f"| {_med(r.client_cpu):.0%} | {_med(r.other_cpu):.0%} | {r.saturated()} "
            f"| {r.server_cpu_s / r.handshakes * 1e6:.0f} "
            f"| {_med(r.idle_last) * 1e3:.1f} / {_med(r.storm_last) * 1e3:.1f} / "
            f"{_med(r.storm_max) * 1e3:.1f} | {x_ref} | {x_uws} |"
        )
    gw = by.get("gateway")
    for base in (ref, uws, by.get(BASE)):
        if gw is not None and base is not None:
            paired = [a / b for a, b in zip(gw.rate, base.rate, strict=True)]
            print(
                f"gateway/{base.label} per round: {[round(x, 2) for x in paired]}, "
                f"median {_med(paired):.2f}"
            )
    for r in results:
        print(f"  {r.label:>9} handshakes/s by round: {[round(x) for x in r.rate]}")
    counted = [r for r in results if r.ir]
    for r in counted:
        print(f"  callgrind: {r.label} {r.ir / r.handshakes:,.0f} instructions per handshake")
    if gw is not None and gw.ir and by.get(BASE) is not None and by[BASE].ir:
        print(f"  callgrind: gateway/{BASE} {gw.ir / by[BASE].ir:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description="wsgate reconnect-storm benchmark")
    parser.add_argument("--storm", type=int, default=10_000, help="connections per storm")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=500, help="handshakes in flight")
    parser.add_argument("--residents", type=int, default=100, help="connections already open")
    parser.add_argument("--probe-ms", type=int, default=20, help="one probe relay every this")
    parser.add_argument("--idle-s", type=float, default=0.5, help="probing before each storm")
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="py-spy on the gateway during its first measured storm")
    parser.add_argument("--base-src", type=Path, metavar="DIR",
                        help="also run the gateway from DIR (a src/ tree), as gateway@base")
    parser.add_argument("--callgrind", type=Path, metavar="DIR",
                        help="run the gateways under callgrind, counting instructions during "
                        "the measured storms (load-independent; slow: use --storm 1000)")
    parser.add_argument("--worker", choices=[*SERVERS, BASE], help=argparse.SUPPRESS)
    parser.add_argument("--same-cookie", action="store_true",
                        help="one cookie for every storm connection (cached after the first)")
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--cookies", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cookie", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    need = args.storm + args.residents + 200
    try:
        _raise_nofile(need)
        if args.worker:
            uvloop.run(_worker(args))
            return 0
        args.servers = [s for s in SERVERS if s in args.servers]
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
        if args.callgrind is not None:
            args.callgrind.mkdir(parents=True, exist_ok=True)
        pinned = pin_self()
        print(
            f"wsgate storm bench: S={args.storm} R={args.rounds} servers={args.servers} "
            f"pinned={pinned} nofile={resource.getrlimit(resource.RLIMIT_NOFILE)[0]} "
            f"load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        with tempfile.TemporaryDirectory(prefix="wsgate-storm-") as tmp:
            results = run(args, Path(tmp))
        report(results, args)
        print(f"load average at the end {os.getloadavg()[0]:.2f}")
        return 0
    except BenchError as exc:
        print(f"\nstorm: FAILED: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
