"""Fan-out: deliveries per second and latency for one channel of N members, beside the anchors.

For each N, every selected server runs side by side, each a subprocess pinned
to CPU 0:

- ``gateway``: ``wsgate serve``;
- ``gateway+z``: ``wsgate serve`` with ``[server] compression = true``, its
  clients offering permessage-deflate as Chrome does and inflating what they
  get (``--compression on`` runs it in place of ``gateway``, ``both`` beside it);
- ``reference``: ``bench/reference_server.py``, bare picows with coalesced writes
  (and ``ref=size``: the same server relaying messages padded to the size the
  gateway delivers);
- ``uws``: uWebSockets.js (its native addon), ``bench/anchors/uws_server.mjs``;
- ``ws``: Node ``ws``, ``bench/anchors/ws_server.mjs``.

Each server has its own load generator (a child process running this file with
``--worker``: N receivers + 1 publisher, picows clients on uvloop), pinned to
CPU 1, the same code for every server. Once the receivers are signed in,
joined and quiet, their sockets are read by a C process
(``bench/anchors/recv_count.c``, built with ``cc`` on first use; it walks the
frame headers and reports when the last and the median receiver had every
message), so that the load generator is no longer the limit: with picows'
per-frame callback (``--receivers picows``; compressed runs always use it,
to inflate) one generator topped out at ~1.2 M deliveries/s on 2026-12-07,
below every server here. The rounds are **interleaved** — one burst per
server back to back, in a rotating order — so that whatever else runs on the
(shared) machine hits all alike, and the ratios stay meaningful.

Two modes (``--mode relay publish``, default both):

- ``relay``: the publisher sends B messages (100-byte payload) into the
  channel; the server relays each to every other member;
- ``publish``: one command makes the server publish B messages to every
  member: one ``POST /v1/publish`` with an ``"actions"`` batch of B for the
  gateway (one request per message for a gateway without batches),
  ``!pub B <message>`` on
  the WebSocket for the reference and the anchors (uWS ``app.publish``);
  ``--publish-to hub`` sends the gateway's batch to the members' hub (the
  organization ``acme``, which every member and the publisher are in) instead
  of the channel: the other servers have one topic either way.

Measured, for each server and mode:

- burst: the time from the first send until every receiver has all B gives
  deliveries/s = N * B / t. R rounds, median;
- one at a time: one message; latency from the send until the last member
  has it. R rounds, median;
- the server's CPU time per delivery over all measured bursts, its CPU use
  and the load generator's during the bursts, and **which side was saturated**:
  ``server`` when the server used >= 85 % of its core, ``client`` when the load
  generator did, ``both``; when neither did, ``starved`` if other processes took
  more than ``--max-other`` of a CPU, else ``stall`` (the pipeline waits);
- the bytes one delivered message takes on the wire (its payload; compressed
  for ``gateway+z``), and with ``--compression both`` the ratios of
  ``gateway+z`` to ``gateway``: deliveries/s and wire bytes.

The machine is shared: for each round the bench reads ``/proc/stat`` and
subtracts the servers' and load generators' CPU time; a round during which
other processes used more than ``--max-other`` of a CPU does not count and
another is run, up to 3 x R rounds; then the quietest R are kept.

Usage::

    . .venv/bin/activate
    sh bench/anchors/install.sh          # once: uWebSockets.js and ws into bench/.anchors/
    python bench/fanout.py --n 1000 10000 [--mode relay publish] [--rounds 10]
                           [--servers gateway reference uws ws] [--burst 50] [--quick]
                           [--profile DIR] [--no-equal-size] [--max-other 0.25]
                           [--compression off|on|both] [--base-src DIR] [--singles K]
    python bench/fanout.py --obs both --servers gateway [--scrape-s 1] [--callgrind DIR]

``--base-src DIR`` also runs the gateway from another ``src/`` tree (``git
archive main src | tar -x -C /tmp/base``, then ``--base-src /tmp/base/src``) as
``gateway@base``, interleaved with the rest, and prints the per-round ratios of
``gateway`` to it (last-member latency, deliveries/s, CPU per delivery): before
and after a change in one invocation.

``--singles K`` sends K one-at-a-time messages per server per round (default 1),
K x R samples of the last-member latency instead of R: its median moves less on
a shared machine.

``--obs both`` runs two gateways, ``gateway`` with metrics off and text logs and
``gateway+obs`` with ``/metrics`` (scraped every ``--scrape-s`` s) and JSON logs,
interleaved like the rest, and prints the second's server CPU per delivery over
the first's; ``--callgrind DIR`` runs them under callgrind and prints
instructions per delivery over the measured bursts (bench/README.md).

Exits non-zero, saying what happened, when a server fails to start, a
client cannot connect or join, or a round times out or loses messages.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop
from picows import WSMsgType

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _clients import CountingReceivers, Pool, bench_message, bench_payload, publish_command
from _servers import (
    ANCHORS,
    GATEWAY_API_KEY,
    BenchError,
    Scraper,
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
NOISE_WINDOW_S = 0.3
"""CPU times tick at 10 ms: a measuring window of at least 0.3 s keeps the
noise estimate within about 10 % of a CPU."""
WARMUP_ROUNDS = 3
PAYLOAD = 100
SERVERS = ("gateway", "gateway+z", "reference", *ANCHORS)
GATEWAYS = ("gateway", "gateway+z")
COMPRESSION = ("off", "on", "both")
OBS_GATEWAY = "gateway+obs"
BASE = "gateway@base"
"""The gateway from another source tree (``--base-src``): before/after in one invocation."""
"""``--obs both``: the second gateway, with metrics and JSON logs on (``gateway`` has them off)."""
WORKERS = (*SERVERS, OBS_GATEWAY, BASE)
MODES = ("relay", "publish")
SATURATED = 0.85
"""A side whose CPU use during a burst reached this share of its core was the limit."""
_TEXT = WSMsgType.TEXT
HTTP_CONNECTIONS = 8
"""The gateway's load generator posts to the internal API over at most this many connections."""


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _machine_busy() -> float:
    """CPU seconds all CPUs have spent busy (steal included) since boot, per /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


# -- the worker: one server's load generator ----------------------------------


class _ApiPublisher:
    """The gateway's server-publish path: ``POST /v1/publish`` to the bench channel.

    Uses one ``"actions"`` batch per burst when the gateway takes it (probed once by
    :meth:`open`), else one request per message, at most ``HTTP_CONNECTIONS`` at once.
    Call order: :meth:`open`, any number of :meth:`fire`, :meth:`close`.
    """

    def __init__(self, pool: Pool, api_url: str, to: str = "channel") -> None:
        import aiohttp  # the gateway's own dependency; only this worker needs it

        self._aiohttp = aiohttp
        self.pool = pool
        self.url = api_url + "/v1/publish"
        self.to = f'{{"to":{{"channel":"{CHANNEL}"}},' if to == "channel" else (
            f'{{"to":{{"hub":"{CHANNEL.partition(":")[0]}"}},'
        )
        """The target, as the JSON body's start: the bench channel or its hub."""
        self.batch = False
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        """Bursts being posted: at most one at a time (the parent waits for each)."""

    async def open(self) -> None:
        aiohttp = self._aiohttp
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=HTTP_CONNECTIONS),
            headers={"Authorization": f"Bearer {GATEWAY_API_KEY}"},
            timeout=aiohttp.ClientTimeout(total=30),
        )
        probe = b'{"to":{"channel":"%s"},"actions":[{"type":"bench/PROBE"}]}' % CHANNEL.encode()
        async with self._session.post(self.url, data=probe) as r:
            self.batch = r.status == 202

    def _body(self, payloads: list[str]) -> list[bytes]:
        to = self.to
        actions = [f'{{"type":"bench/MSG","payload":{p}}}' for p in payloads]
        if self.batch:
            return [f'{to}"actions":[{",".join(actions)}]}}'.encode()]
        return [f'{to}"action":{a}}}'.encode() for a in actions]

    async def _post_all(self, bodies: list[bytes]) -> None:
        assert self._session is not None
        session = self._session

        async def one(body: bytes) -> None:
            async with session.post(self.url, data=body) as r:
                if r.status != 202:
                    raise BenchError(f"POST /v1/publish: {r.status} {await r.text()}")

        await asyncio.gather(*(one(b) for b in bodies))

    def fire(self, payloads: list[str]) -> None:
        """Start posting ``payloads`` (one message each); a failure ends the measurement."""
        task = asyncio.get_running_loop().create_task(self._post_all(self._body(payloads)))
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            exc = None if t.cancelled() else t.exception()
            waiting = self.pool.done
            if exc is not None and waiting is not None and not waiting.done():
                waiting.set_exception(exc)

        task.add_done_callback(done)

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()


async def _worker(args: argparse.Namespace) -> None:
    """Connect, then answer commands on stdin with one JSON line each on stdout.

    Commands: ``burst <mode> <B> <payload bytes>``, ``one <mode> <payload bytes>``,
    ``quit``. Replies: ``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``.
    """
    gateway = args.worker.startswith("gateway")
    pool = Pool(
        gateway=gateway, join=CHANNEL if gateway else None, deflate=args.worker == "gateway+z"
    )
    headers = {"Cookie": f"wsgate_session={args.cookie}"} if gateway else {}
    n = args.worker_n
    api = _ApiPublisher(pool, args.api, args.publish_to) if gateway else None
    try:
        t = time.monotonic()
        [pub] = await pool.connect(args.url, 1, headers, publisher=True)
        receivers = await pool.connect(args.url, n, headers, timeout=60 + n / 50)
        connect_s = time.monotonic() - t
        if api is not None:
            await api.open()
        counting = None
        if args.receivers == "c" and not pool.deflate:
            # A channel past presence_max_members gets its last count update up to
            # large_batch_ms (1 s) after the last join: quiet past it, then hand over.
            settle_s = await pool.quiesce(quiet=1.5)
            counting = await CountingReceivers.start(receivers, pool.expect)
        else:
            settle_s = await pool.quiesce()
        gc.collect()
        gc.freeze()
        reply(
            ok=True, connect_s=connect_s, settle_s=settle_s,
            api_batch=api.batch if api is not None else None,
        )  # fmt: skip
    except BenchError as exc:
        reply(ok=False, error=str(exc))
        return
    seq = 0

    def fire_for(mode: str, count: int, size: int) -> Callable[[], object]:
        """What makes ``count`` bench messages of ``size`` go out, in ``mode``."""
        nonlocal seq
        first, seq = seq, seq + count
        if mode == "relay":
            msgs = [bench_message(first + i, CHANNEL, size) for i in range(count)]
            return Pool.sender(pub, msgs, one_write=args.publisher_writes == "one")
        if api is not None:
            payloads = [bench_payload(first + i, size) for i in range(count)]
            return lambda: api.fire(payloads)
        command = publish_command(count, bench_message(first, CHANNEL, size))
        return lambda: pub.wst.send(_TEXT, command)

    async def measure(count: int, timeout: float, fire: Callable[[], object]) -> tuple[float, ...]:
        """``t0``, the last and the median receiver's arrival, by whichever receivers."""
        if counting is not None:
            return await counting.measure(count, timeout, fire)
        t0, arrivals = await pool.measure(count, n, timeout, fire)
        pool.check_counts(receivers)
        return t0, arrivals[-1], arrivals[len(arrivals) // 2]

    async def do_burst(cmd: list[str]) -> dict[str, Any]:
        mode, burst, size = cmd[1], int(cmd[2]), int(cmd[3])
        fire = fire_for(mode, burst, size)
        c0 = _cpu_self() + (0.0 if counting is None else counting.cpu_seconds())
        t0, last, _ = await measure(burst, 10 + n * burst / 20_000, fire)
        wall = last - t0
        c1 = _cpu_self() + (0.0 if counting is None else counting.cpu_seconds())
        if counting is not None:
            pool.frame_size = counting.frame_size
        return {
            "wall": wall, "client_cpu": c1 - c0, "frame_size": pool.frame_size,
            "wire_size": pool.wire_size or pool.frame_size,
        }  # fmt: skip

    async def do_one(cmd: list[str]) -> dict[str, Any]:
        mode, size = cmd[1], int(cmd[2])
        fire = fire_for(mode, 1, size)
        t0, last, median = await measure(1, 10 + n / 20_000, fire)
        return {"last": last - t0, "p50": median - t0, "errors": len(pool.errors)}

    await serve({"burst": do_burst, "one": do_one})
    if counting is not None:
        await counting.close()
    if pool.errors:
        sys.stderr.write(f"server sent errors: {pool.errors[:3]}\n")
    if api is not None:
        await api.close()
    await pool.close_all()


def _start_worker(
    srv: ServerProcess, n: int, cookie: str, log: Path, args: argparse.Namespace
) -> Worker:
    """The load generator for ``srv``: this file with ``--worker``, N receivers + 1 publisher."""
    argv = [
        __file__, "--worker", srv.name, "--worker-n", str(n), "--url", srv.url,
        "--cookie", cookie, "--api", srv.api_url, "--receivers", args.receivers,
        "--publisher-writes", args.publisher_writes, "--publish-to", args.publish_to,
    ]  # fmt: skip
    return Worker(srv, argv, log, ready_timeout=60 + n / 50)


# -- the parent: servers, interleaved rounds, the table ------------------------


@dataclass
class Result:
    label: str
    mode: str
    n: int
    payload_bytes: int = PAYLOAD
    burst_rate: list[float] = field(default_factory=list)
    """Deliveries per second, one per kept round."""
    burst_time: list[float] = field(default_factory=list)
    server_cpu: list[float] = field(default_factory=list)
    """Server CPU seconds / wall seconds during each kept burst."""
    client_cpu: list[float] = field(default_factory=list)
    other_cpu: list[float] = field(default_factory=list)
    """Share of a CPU other processes used during each kept burst."""
    lat_last: list[float] = field(default_factory=list)
    lat_p50: list[float] = field(default_factory=list)
    deliveries_all: int = 0
    """``--callgrind``: deliveries of every measured burst, kept or not."""
    scrapes: int = 0
    """``/metrics`` scrapes during the measured bursts (from :class:`Scraper`)."""
    ir_per_delivery: float = float("nan")
    """``--callgrind``: server instructions per delivery over every measured burst."""
    server_s: list[float] = field(default_factory=list)
    """Server CPU seconds of each kept burst (same deliveries for every server)."""
    server_cpu_total: float = 0.0
    """Server CPU seconds over all kept bursts (summed: finer than one tick)."""
    deliveries_total: int = 0
    frame_size: int = 0
    """Size of one delivered bench message (JSON text), as the clients saw it."""
    wire_size: int = 0
    """Its payload's size on the wire (compressed for ``gateway+z``)."""
    connect_s: float = 0.0
    noisy: int = 0
    """Rounds during which other processes used more than ``max_other`` of a CPU."""
    rounds_run: int = 0

    @property
    def cpu_us_per_delivery(self) -> float:
        if not self.deliveries_total:
            return float("nan")
        return self.server_cpu_total / self.deliveries_total * 1e6

    def saturated(self, max_other: float) -> str:
        """Which side was the limit in the median burst.

        ``server`` or ``client`` (>= ``SATURATED`` of its core), ``both``; when neither:
        ``starved`` if other processes took more than ``max_other`` of a CPU (median),
        else ``stall`` (the pipeline waited).
        """
        srv, cli = _med(self.server_cpu) >= SATURATED, _med(self.client_cpu) >= SATURATED
        if srv or cli:
            return "both" if srv and cli else "server" if srv else "client"
        return "starved" if _med(self.other_cpu) > max_other else "stall"


@dataclass
class _Burst:
    wall: float
    server_s: float
    client_s: float
    other: float
    frame_size: int
    wire_size: int


def _burst(w: Worker, mode: str, burst: int, payload: int, n: int) -> _Burst:
    """One burst through ``w``, with its server's and the machine's CPU around it."""
    s0, m0, p0 = w.srv.cpu_seconds(), _machine_busy(), _cpu_self()
    k0 = w.cpu_seconds()
    t0 = time.perf_counter()
    answer = w.ask(f"burst {mode} {burst} {payload}", 20 + n * burst / 20_000)
    # The servers idle after the burst: what the pause adds to "other" is
    # other processes' work.
    time.sleep(max(0.05, NOISE_WINDOW_S - (time.perf_counter() - t0)))
    window = time.perf_counter() - t0
    s1, m1, p1, k1 = w.srv.cpu_seconds(), _machine_busy(), _cpu_self(), w.cpu_seconds()
    ours = (s1 - s0) + (k1 - k0) + (p1 - p0)
    return _Burst(
        answer["wall"], s1 - s0, answer["client_cpu"], max(0.0, m1 - m0 - ours) / window,
        answer["frame_size"], answer["wire_size"],
    )  # fmt: skip


def _start(kind: str, workdir: Path, args: argparse.Namespace) -> tuple[ServerProcess, str]:
    if kind == BASE:
        boot = (
            f"import sys; sys.path.insert(0, {str(args.base_src)!r}); "
            "from wsgate.cli import main; sys.exit(main(sys.argv[1:]))"
        )
        return start_gateway(workdir, [sys.executable, "-c", boot], name=BASE)
    if kind in (*GATEWAYS, OBS_GATEWAY):
        obs = "on" if kind == OBS_GATEWAY else "off" if args.obs == "both" else args.obs
        z = kind == "gateway+z"
        if args.callgrind is None:
            return start_gateway(workdir, obs=obs, name=kind, compression=z)
        out = args.callgrind / f"{kind}.callgrind"
        return start_gateway(workdir, callgrind_command(out), obs=obs, name=kind,
                             start_timeout_s=300, compression=z)  # fmt: skip
    if kind == "reference":
        return start_reference(workdir), ""
    return start_anchor(kind, workdir), ""


def run_mode(
    args: argparse.Namespace, mode: str, n: int, workers: dict[str, Worker]
) -> list[Result]:
    """Warm-up, then interleaved bursts until R quiet rounds (at most 3 R), then singles."""
    plan: list[tuple[str, Worker, int]] = [(k, w, PAYLOAD) for k, w in workers.items()]
    results = {k: Result(k, mode, n, connect_s=w.hello["connect_s"]) for k, w in workers.items()}
    for _ in range(WARMUP_ROUNDS):
        sizes = {k: _burst(w, mode, args.burst, size, n).frame_size for k, w, size in plan}
    if (
        not args.no_equal_size
        and "gateway" in workers
        and "reference" in workers
        and sizes["gateway"] > sizes["reference"]
    ):
        pad = PAYLOAD + sizes["gateway"] - sizes["reference"]
        ref = workers["reference"]
        plan.insert(2, ("ref=size", ref, pad))
        results["ref=size"] = Result(
            "ref=size", mode, n, payload_bytes=pad, connect_s=ref.hello["connect_s"]
        )
        _burst(ref, mode, args.burst, pad, n)
    profilers = []
    if args.profile is not None:
        for k in ("gateway", OBS_GATEWAY, "reference"):
            if k in workers:
                srv = workers[k].srv
                out = args.profile / f"{srv.name}-{mode}-{n}.txt"
                profilers.append(start_profiler(srv.pid, out))
        time.sleep(1.0)  # py-spy attaches
    counted = [k for k in ("gateway", OBS_GATEWAY) if args.callgrind is not None and k in workers]
    scrapers = {k: sc for k, m, sc in args.scrapers if m == n}
    scrapes0 = {k: sc.scrapes for k, sc in scrapers.items()}
    for k in counted:
        callgrind_toggle(workers[k].srv.pid, on=True)
    rounds: list[dict[str, _Burst]] = []
    quiet = 0
    try:
        while quiet < args.rounds and len(rounds) < 3 * args.rounds:
            i = len(rounds)
            order = plan[i % len(plan) :] + plan[: i % len(plan)]
            one = {k: _burst(w, mode, args.burst, size, n) for k, w, size in order}
            rounds.append(one)
            if max(b.other for b in one.values()) <= args.max_other:
                quiet += 1
            time.sleep(0.1)
    finally:
        for p in profilers:
            stop_profiler(p)
        for k in counted:
            callgrind_toggle(workers[k].srv.pid, on=False)
        for k, sc in scrapers.items():
            results[k].scrapes = sc.scrapes - scrapes0[k]
    for k in counted:  # every server ran every round: the same deliveries
        ir = callgrind_last_ir(args.callgrind / f"{k}.callgrind")
        results[k].deliveries_all = len(rounds) * n * args.burst
        results[k].ir_per_delivery = ir / results[k].deliveries_all
    kept = sorted(rounds, key=lambda r: max(b.other for b in r.values()))[: args.rounds]
    for label, r in results.items():
        r.noisy = len(rounds) - quiet
        r.rounds_run = len(rounds)
        for one in kept:
            b = one[label]
            r.burst_time.append(b.wall)
            r.burst_rate.append(n * args.burst / b.wall)
            r.server_cpu.append(b.server_s / b.wall)
            r.client_cpu.append(b.client_s / b.wall)
            r.other_cpu.append(b.other)
            r.server_cpu_total += b.server_s
            r.server_s.append(b.server_s)
            r.deliveries_total += n * args.burst
            r.frame_size = b.frame_size
            r.wire_size = b.wire_size
    for i in range(WARMUP_ROUNDS + args.rounds * args.singles):
        order = plan[i % len(plan) :] + plan[: i % len(plan)]
        for label, w, size in order:
            answer = w.ask(f"one {mode} {size}", 20 + n / 20_000)
            if i >= WARMUP_ROUNDS:
                results[label].lat_last.append(answer["last"])
                results[label].lat_p50.append(answer["p50"])
            time.sleep(0.02)
    return list(results.values())


def run_n(args: argparse.Namespace, n: int, workdir: Path) -> list[list[Result]]:
    """Every selected server and its load generator for one N; each mode's rounds."""
    started: list[ServerProcess | Worker | Scraper] = []
    try:
        servers: dict[str, tuple[ServerProcess, str]] = {}
        for kind in args.servers:
            servers[kind] = _start(kind, workdir, args)
            started.append(servers[kind][0])
        print(f"  N={n}: connecting {n} + 1 clients to each of {list(servers)} ...", flush=True)
        workers: dict[str, Worker] = {}
        for kind, (srv, cookie) in servers.items():
            workers[kind] = _start_worker(srv, n, cookie, workdir / f"worker-{kind}-{n}.log", args)
            started.append(workers[kind])
        if "gateway" in workers:
            batch = workers["gateway"].hello["api_batch"]
            how = '"actions" batch per burst' if batch else "one POST /v1/publish per message"
            print(f"    gateway server publish: {how}", flush=True)
        metrics_on = {"gateway": args.obs in (None, "on"), OBS_GATEWAY: True}
        for kind in (k for k in servers if metrics_on.get(k)):
            scraper = Scraper(servers[kind][0].api_url, args.scrape_s)
            started.append(scraper)
            args.scrapers.append((kind, n, scraper))
        out = []
        for mode in args.mode:
            out.append(run_mode(args, mode, n, workers))
            _summary(out[-1])
        for srv, _ in servers.values():
            if not srv.alive():
                raise BenchError(f"{srv.name} died:\n{srv.log_tail()}")
        return out
    except BenchError as exc:
        tails = "".join(
            f"\n--- {s.name} log tail ---\n{s.log_tail(1000)}"
            for s in started
            if isinstance(s, ServerProcess)
        )
        raise BenchError(f"N={n}: {exc}{tails}") from None
    finally:
        for s in reversed(started):
            s.stop()


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _summary(rs: list[Result]) -> None:
    for r in rs:
        print(
            f"    {r.mode:>7} {r.label:>9}: burst {_med(r.burst_rate):,.0f} deliveries/s "
            f"(server CPU {_med(r.server_cpu) * 100:.0f}%, client {_med(r.client_cpu) * 100:.0f}%, "
            f"{r.cpu_us_per_delivery:.3f} us/delivery), one-at-a-time last "
            f"{_med(r.lat_last) * 1e3:.2f} ms",
            flush=True,
        )


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b == b and b and a == a else "-"


def _paired(a: Result, b: Result) -> float:
    return _med([x / y for x, y in zip(a.burst_rate, b.burst_rate, strict=True)])


def report(results: list[list[list[Result]]], args: argparse.Namespace) -> None:
    """One table per mode and N: a row per server, ratios to the reference and to uWS."""
    print()
    hub = " (the gateway's publish: to their hub)" if args.publish_to == "hub" else ""
    print(
        f"fan-out, one channel of N{hub}, 100-byte payload, burst B={args.burst}, "
        f"{args.rounds} interleaved rounds (median); servers pinned to CPU 0, load "
        "generators to CPU 1"
    )
    hdr = (
        f"{'mode':<7} {'N':>6} {'server':<12} {'deliv/s':>10} {'srv CPU':>7} {'cli CPU':>7} "
        f"{'us/deliv':>8} {'last ms':>8} {'msg B':>5} {'wire B':>6} {'x ref':>6} {'x ref=':>6} "
        f"{'x uws':>6} {'saturated':>9}"
    )
    print(hdr)
    print("-" * len(hdr))
    for per_n in results:
        for rs in per_n:
            by = {r.label: r for r in rs}
            ref, eq, uws = by.get("reference"), by.get("ref=size"), by.get("uws")
            for r in rs:
                rate = _med(r.burst_rate)
                x_ref = _ratio(rate, _med(ref.burst_rate)) if ref else "-"
                x_eq = _ratio(rate, _med(eq.burst_rate)) if eq and r.label == "gateway" else "-"
                x_uws = _ratio(rate, _med(uws.burst_rate)) if uws else "-"
                limit = r.saturated(args.max_other)
                print(
                    f"{r.mode:<7} {r.n:>6} {r.label:<12} {rate:>10,.0f} "
                    f"{_med(r.server_cpu) * 100:>6.0f}% {_med(r.client_cpu) * 100:>6.0f}% "
                    f"{r.cpu_us_per_delivery:>8.3f} {_med(r.lat_last) * 1e3:>8.2f} "
                    f"{r.frame_size:>5} {r.wire_size:>6} {x_ref:>6} {x_eq:>6} {x_uws:>6} {limit:>9}"
                )
            print()
    print(
        "msg B / wire B: one delivered message's payload as the client reads it / on the "
        "wire (compressed for gateway+z).\n"
        "x ref / x ref= / x uws: deliveries/s over the reference's / the reference's with "
        "messages padded to the gateway's delivered size / uWebSockets.js's.\n"
        f"saturated: server or client CPU >= {SATURATED:.0%} of its core during the median "
        "burst; when neither was: 'starved' if other processes took more than --max-other of "
        "a CPU, else 'stall' (the pipeline waited)."
    )
    for per_n in results:
        for rs in per_n:
            by = {r.label: r for r in rs}
            first = rs[0]
            others = [x for r in rs for x in r.other_cpu]
            print(
                f"{first.mode} N={first.n}: {first.rounds_run} rounds run, {first.noisy} noisy "
                f"(other CPU > {args.max_other:.0%}); other CPU in kept bursts: median "
                f"{_med(others):.0%}, max {max(others, default=0.0):.0%}"
            )
            gw = by.get("gateway")
            for other in (by.get("reference"), by.get(BASE)):
                if gw is not None and other is not None:
                    lat = sorted(a / b for a, b in zip(gw.lat_last, other.lat_last, strict=True))
                    q1, q3 = lat[len(lat) // 4], lat[(3 * len(lat)) // 4]
                    print(
                        f"  gateway/{other.label}: last-member latency {_med(lat):.3f} "
                        f"(median of {len(lat)} paired samples, quartiles {q1:.2f}-{q3:.2f}), "
                        f"deliveries/s {_paired(gw, other):.3f}, server CPU per delivery "
                        f"{gw.cpu_us_per_delivery / other.cpu_us_per_delivery:.3f}"
                    )
            obs = by.get(OBS_GATEWAY)
            if gw is not None and obs is not None:
                pairs = zip(obs.server_s, gw.server_s, strict=True)
                per_round = _med([a / b for a, b in pairs if b])  # b: 0 ticks in a short burst
                print(
                    f"  {OBS_GATEWAY}/gateway (observability on/off): server CPU per delivery "
                    f"{obs.cpu_us_per_delivery / gw.cpu_us_per_delivery:.3f} over all kept "
                    f"bursts, {per_round:.3f} median of per-round ratios; deliveries/s "
                    f"{_paired(obs, gw):.3f} median of per-round ratios"
                )
                if args.callgrind is not None:
                    extra_ir = (obs.ir_per_delivery - gw.ir_per_delivery) * obs.deliveries_all
                    each = (
                        f" (~{extra_ir / obs.scrapes:,.0f} instructions each, if all the "
                        "difference is theirs)"
                        if obs.scrapes
                        else ""
                    )
                    print(
                        f"  callgrind instructions per delivery: gateway {gw.ir_per_delivery:,.0f}"
                        f", {OBS_GATEWAY} {obs.ir_per_delivery:,.0f}, ratio "
                        f"{obs.ir_per_delivery / gw.ir_per_delivery:.4f}; {obs.scrapes} scrapes "
                        f"meanwhile{each}"
                    )
            if gw is not None and obs is None and args.callgrind is not None:
                print(
                    f"  callgrind instructions per delivery: gateway {gw.ir_per_delivery:,.0f} "
                    f"({gw.deliveries_all:,} deliveries in the measured bursts)"
                )
            for base in ("reference", "ref=size", "uws"):
                if gw is not None and base in by:
                    paired = _paired(gw, by[base])
                    print(f"  gateway/{base}, median of per-round ratios: {paired:.3f}")
            gz = by.get("gateway+z")
            if gw is not None and gz is not None:
                print(
                    f"  compression on/off (gateway+z/gateway): deliveries/s, median of per-round "
                    f"ratios {_paired(gz, gw):.3f}; server CPU per delivery "
                    f"{_ratio(gz.cpu_us_per_delivery, gw.cpu_us_per_delivery)}; wire bytes per "
                    f"delivery {gz.wire_size}/{gw.wire_size} = {_ratio(gz.wire_size, gw.wire_size)}"
                )
            for r in rs:
                rates = [round(x / 1e3) for x in r.burst_rate]
                print(f"  {r.label:>9} k deliveries/s by round: {rates}")
            if max(others, default=0.0) > args.max_other:
                print(
                    "  WARNING: too few quiet rounds; some kept ones ran while other processes "
                    f"used up to {max(others):.0%} of a CPU (noisy figures, ratios less so)"
                )


def amain(args: argparse.Namespace) -> int:
    pinned = pin_self()
    print(
        f"wsgate fan-out bench: N={args.n} B={args.burst} R={args.rounds} mode={args.mode} "
        f"servers={args.servers} receivers={args.receivers} "
        f"publisher-writes={args.publisher_writes} "
        f"cpus={sorted(os.sched_getaffinity(0))} pinned={pinned} "
        f"nofile={resource.getrlimit(resource.RLIMIT_NOFILE)[0]} "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    results: list[list[list[Result]]] = []
    with tempfile.TemporaryDirectory(prefix="wsgate-bench-") as tmp:
        for n in args.n:
            results.append(run_n(args, n, Path(tmp)))
            time.sleep(0.5)
    report(results, args)
    for kind, n, scraper in args.scrapers:
        took = sorted(scraper.seconds)
        how_long = (
            f", each {took[len(took) // 2] * 1e3:.1f} ms (median), {took[-1] * 1e3:.1f} ms (max)"
            if took else ""
        )
        print(f"{kind} N={n}: /metrics scraped {scraper.scrapes} times "
              f"(every {args.scrape_s} s){how_long}, {scraper.failures} failed")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    return 0


def _raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, need), hard))


def main() -> int:
    parser = argparse.ArgumentParser(description="wsgate fan-out benchmark")
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--singles", type=int, default=1,
        help="one-at-a-time messages per server per round (the last-member latency's samples)",
    )  # fmt: skip
    parser.add_argument("--mode", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument(
        "--servers",
        nargs="+",
        choices=SERVERS,
        default=[s for s in SERVERS if s != "gateway+z"],
        help="servers to run (default all but gateway+z, see --compression); uws and ws need "
        "sh bench/anchors/install.sh",
    )
    parser.add_argument("--quick", action="store_true", help="N=1000, 3 rounds")
    parser.add_argument(
        "--compression",
        choices=COMPRESSION,
        default="off",
        help="the gateway with permessage-deflate: off, on (in place of gateway), both (beside it)",
    )
    parser.add_argument(
        "--max-other",
        type=float,
        default=0.25,
        help="a round counts only if other processes used at most this share of a CPU",
    )
    parser.add_argument(
        "--no-equal-size",
        action="store_true",
        help="skip the reference rounds with messages padded to the gateway's delivered size",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="run py-spy on the Python servers during the measured bursts; collapsed stacks to DIR",
    )
    parser.add_argument(
        "--obs",
        choices=("on", "off", "both"),
        help="the gateway with /metrics and JSON logs on, off, or both: two gateways, "
        f"'gateway' (off) and '{OBS_GATEWAY}' (on), interleaved (default: the config's defaults)",
    )
    parser.add_argument(
        "--callgrind",
        type=Path,
        metavar="DIR",
        help="run the gateways under callgrind, counting instructions during the measured "
        "bursts (load-independent; slow: use a small --n and --burst); dumps to DIR",
    )
    parser.add_argument(
        "--base-src", type=Path, metavar="DIR",
        help=f"also run the gateway from DIR (a src/ tree) as {BASE}, interleaved",
    )
    parser.add_argument(
        "--scrape-s", type=float, default=1.0,
        help="seconds between the /metrics scrapes of a gateway with metrics on (1.0)",
    )  # fmt: skip
    parser.add_argument(
        "--receivers", choices=("c", "picows"), default="c",
        help="who reads the receivers' sockets once joined: 'c' (default) a C process "
        "(bench/anchors/recv_count.c, built with cc on first use) walking frame headers; "
        "'picows' the load generator's picows clients (the figures before 2026-12-08: one "
        "generator topped out at ~1.2 M deliveries/s)",
    )  # fmt: skip
    parser.add_argument(
        "--publisher-writes", choices=("each", "one"), default="each",
        help="relay: the publisher writes each message of a burst with its own write "
        "(default, as before), or the whole burst with one (the server reads it at once: "
        "uWebSockets.js relays a burst read at once ~5-7 x slower than messages read one "
        "by one, bench/README.md)",
    )  # fmt: skip
    parser.add_argument(
        "--publish-to", choices=("channel", "hub"), default="channel",
        help="publish: the gateway's batch goes to the bench channel (default) or to the "
        "members' hub, the organization (every member and the publisher are in it)",
    )  # fmt: skip
    # Internal: this file as one server's load generator.
    parser.add_argument("--worker", choices=WORKERS, help=argparse.SUPPRESS)
    parser.add_argument("--worker-n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--cookie", default="", help=argparse.SUPPRESS)
    parser.add_argument("--api", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _raise_nofile(args.worker_n + 200)
        uvloop.run(_worker(args))
        return 0
    if "gateway" in args.servers and args.compression != "off":
        args.servers.append("gateway+z")
        if args.compression == "on":
            args.servers.remove("gateway")
    args.servers = [s for s in SERVERS if s in args.servers]
    if args.base_src is not None:
        args.servers.insert(1 if "gateway" in args.servers else 0, BASE)
    if args.obs == "both":
        if "gateway" not in args.servers:
            args.servers.insert(0, "gateway")
        args.servers.insert(args.servers.index("gateway") + 1, OBS_GATEWAY)
    args.scrapers = []
    args.mode = [m for m in MODES if m in args.mode]
    if args.quick:
        args.n = [1000]
        args.rounds = 3
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    if args.callgrind is not None:
        args.callgrind.mkdir(parents=True, exist_ok=True)
    try:
        return amain(args)
    except BenchError as exc:
        print(f"\nfanout: FAILED: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
