"""Fan-out: deliveries per second and latency for one channel of N members.

For each N, the reference (``bench/reference_server.py``, bare picows with
coalesced writes) and the gateway (``wsgate serve``) run side by side, each a
subprocess pinned to CPU 0. Each has its own load generator (a child process
running this file with ``--worker``: N receivers + 1 publisher, picows
clients on uvloop), pinned to CPU 1. The rounds are **interleaved** —
gateway, reference, reference with gateway-sized messages, in a rotating
order — so that whatever else runs on the (shared) machine hits all three
alike, and the ratios stay meaningful.

Measured, for each server:

- burst: the publisher sends B messages (100-byte payload) back to back; the
  time from the first send until every receiver has all B gives
  deliveries/s = N * B / t. R rounds, median;
- one at a time: one message; latency from the send until the last member
  has it, and until the median member has it. R rounds, median;
- the server's CPU time per delivery over all measured bursts, and its CPU
  use during the bursts (near 100 % means the server is the limit; well below
  means the load generator or the kernel is).

The machine is shared: for each round the bench reads ``/proc/stat`` and
subtracts the servers' and load generators' CPU time; a round during which
other processes used more than ``--max-other`` of a CPU does not count and
another is run, up to 3 x R rounds; then the quietest R are kept.

Usage::

    . .venv/bin/activate
    python bench/fanout.py --n 1000 10000 [--burst 50] [--rounds 10] [--quick]
                           [--profile DIR] [--no-equal-size] [--max-other 0.25]

Exits non-zero, saying what happened, when a server fails to start, a
client cannot connect or join, or a round times out or loses messages.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import select
import statistics
import subprocess
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
    pin_self,
    start_gateway,
    start_profiler,
    start_reference,
    stop_profiler,
)

CHANNEL = "acme:bench"
NOISE_WINDOW_S = 0.3
"""CPU times tick at 10 ms: a measuring window of at least 0.3 s keeps the
noise estimate within about 10 % of a CPU."""
WARMUP_ROUNDS = 3
PAYLOAD = 100


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


async def _worker(args: argparse.Namespace) -> None:
    """Connect, then answer commands on stdin with one JSON line each on stdout.

    Commands: ``burst <B> <payload bytes>``, ``one <payload bytes>``,
    ``quit``. Replies: ``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``.
    """
    gateway = args.worker == "gateway"
    pool = Pool(gateway=gateway, join=CHANNEL if gateway else None)
    headers = {"Cookie": f"wsgate_session={args.cookie}"} if gateway else {}
    loop = asyncio.get_running_loop()
    n = args.worker_n
    out = sys.stdout

    def reply(**kw: Any) -> None:
        out.write(json.dumps(kw) + "\n")
        out.flush()

    try:
        t = time.monotonic()
        [pub] = await pool.connect(args.url, 1, headers)
        receivers = await pool.connect(args.url, n, headers, timeout=60 + n / 50)
        connect_s = time.monotonic() - t
        settle_s = await pool.quiesce()
        gc.collect()
        gc.freeze()
        reply(ok=True, connect_s=connect_s, settle_s=settle_s)
    except BenchError as exc:
        reply(ok=False, error=str(exc))
        return
    seq = 0
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        try:
            if cmd[0] == "burst":
                burst, size = int(cmd[1]), int(cmd[2])
                msgs = [bench_message(seq + i, CHANNEL, size) for i in range(burst)]
                seq += burst
                c0 = _cpu_self()
                t0, arrivals = await pool.publish(pub, msgs, n, 10 + n * burst / 20_000)
                wall = arrivals[-1] - t0
                c1 = _cpu_self()
                pool.check_counts(receivers)
                reply(ok=True, wall=wall, client_cpu=c1 - c0, frame_size=pool.frame_size)
            elif cmd[0] == "one":
                size = int(cmd[1])
                t0, arrivals = await pool.publish(
                    pub, [bench_message(seq, CHANNEL, size)], n, 10 + n / 20_000
                )
                seq += 1
                pool.check_counts(receivers)
                reply(
                    ok=True,
                    last=arrivals[-1] - t0,
                    p50=arrivals[len(arrivals) // 2] - t0,
                    errors=len(pool.errors),
                )
            else:
                reply(ok=False, error=f"unknown command {cmd!r}")
        except BenchError as exc:
            reply(ok=False, error=str(exc))
    if pool.errors:
        sys.stderr.write(f"server sent errors: {pool.errors[:3]}\n")
    await pool.close_all()


class Worker:
    """The parent's handle on one worker process."""

    def __init__(self, kind: str, srv: ServerProcess, n: int, cookie: str, log: Path) -> None:
        self.kind = kind
        self.srv = srv
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.log_path = log
        self.proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--worker",
                kind,
                "--worker-n",
                str(n),
                "--url",
                srv.url,
                "--cookie",
                cookie,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        self.hello = self._read(60 + n / 50)

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.proc.kill()
            err = self.log_path.read_text(errors="replace")[-1500:]
            why = "timed out" if not ready else f"exited ({self.proc.wait()})"
            raise BenchError(f"{self.kind} load generator {why}:\n{err}")
        answer: dict[str, Any] = json.loads(line)
        if not answer.get("ok"):
            raise BenchError(f"{self.kind}: {answer.get('error')}")
        return answer

    def ask(self, command: str, timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()
        return self._read(timeout)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(b"quit\n")
                self.proc.stdin.flush()
                self.proc.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


# -- the parent: servers, interleaved rounds, the table ------------------------


@dataclass
class Result:
    label: str
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
    server_cpu_total: float = 0.0
    """Server CPU seconds over all kept bursts (summed: finer than one tick)."""
    deliveries_total: int = 0
    frame_size: int = 0
    """Size of one delivered bench message (JSON text), as the clients saw it."""
    connect_s: float = 0.0
    noisy: int = 0
    """Rounds during which other processes used more than ``max_other`` of a CPU."""

    @property
    def cpu_us_per_delivery(self) -> float:
        if not self.deliveries_total:
            return float("nan")
        return self.server_cpu_total / self.deliveries_total * 1e6


@dataclass
class _Burst:
    wall: float
    server_s: float
    client_s: float
    other: float
    frame_size: int


def _burst(w: Worker, burst: int, payload: int, n: int) -> _Burst:
    """One burst through ``w``, with its server's and the machine's CPU around it."""
    s0, m0, p0 = w.srv.cpu_seconds(), _machine_busy(), _cpu_self()
    k0 = w.cpu_seconds()
    t0 = time.perf_counter()
    answer = w.ask(f"burst {burst} {payload}", 20 + n * burst / 20_000)
    # The servers idle after the burst: what the pause adds to "other" is
    # other processes' work.
    time.sleep(max(0.05, NOISE_WINDOW_S - (time.perf_counter() - t0)))
    window = time.perf_counter() - t0
    s1, m1, p1, k1 = w.srv.cpu_seconds(), _machine_busy(), _cpu_self(), w.cpu_seconds()
    ours = (s1 - s0) + (k1 - k0) + (p1 - p0)
    return _Burst(
        answer["wall"], s1 - s0, answer["client_cpu"], max(0.0, m1 - m0 - ours) / window,
        answer["frame_size"],
    )  # fmt: skip


def run_n(args: argparse.Namespace, n: int, workdir: Path) -> list[Result]:
    """Both servers and their load generators for one N; interleaved rounds."""
    started: list[ServerProcess | Worker] = []
    try:
        gw_srv, cookie = start_gateway(workdir)
        started.append(gw_srv)
        ref_srv = start_reference(workdir)
        started.append(ref_srv)
        print(f"  N={n}: connecting {n} + 1 clients to each server ...", flush=True)
        gw = Worker("gateway", gw_srv, n, cookie, workdir / f"worker-gateway-{n}.log")
        started.append(gw)
        ref = Worker("reference", ref_srv, n, "", workdir / f"worker-reference-{n}.log")
        started.append(ref)
        results = {
            "gateway": Result("gateway", n, connect_s=gw.hello["connect_s"]),
            "reference": Result("reference", n, connect_s=ref.hello["connect_s"]),
        }
        plan: list[tuple[str, Worker, int]] = [
            ("gateway", gw, PAYLOAD),
            ("reference", ref, PAYLOAD),
        ]
        for _ in range(WARMUP_ROUNDS):
            sizes = {label: _burst(w, args.burst, size, n).frame_size for label, w, size in plan}
        if not args.no_equal_size and sizes["gateway"] > sizes["reference"]:
            pad = PAYLOAD + sizes["gateway"] - sizes["reference"]
            plan.append(("reference-eqsize", ref, pad))
            results["reference-eqsize"] = Result(
                "reference-eqsize", n, payload_bytes=pad, connect_s=ref.hello["connect_s"]
            )
            _burst(ref, args.burst, pad, n)
        profilers = []
        if args.profile is not None:
            for srv in (gw_srv, ref_srv):
                profilers.append(start_profiler(srv.pid, args.profile / f"{srv.name}-{n}.txt"))
            time.sleep(1.0)  # py-spy attaches
        rounds: list[dict[str, _Burst]] = []
        try:
            quiet = 0
            while quiet < args.rounds and len(rounds) < 3 * args.rounds:
                i = len(rounds)
                order = plan[i % len(plan) :] + plan[: i % len(plan)]
                one = {label: _burst(w, args.burst, size, n) for label, w, size in order}
                rounds.append(one)
                if max(b.other for b in one.values()) <= args.max_other:
                    quiet += 1
                time.sleep(0.1)
        finally:
            for p in profilers:
                stop_profiler(p)
        kept = sorted(rounds, key=lambda r: max(b.other for b in r.values()))[: args.rounds]
        for label, r in results.items():
            r.noisy = len(rounds) - quiet
            for one in kept:
                b = one[label]
                r.burst_time.append(b.wall)
                r.burst_rate.append(n * args.burst / b.wall)
                r.server_cpu.append(b.server_s / b.wall)
                r.client_cpu.append(b.client_s / b.wall)
                r.other_cpu.append(b.other)
                r.server_cpu_total += b.server_s
                r.deliveries_total += n * args.burst
                r.frame_size = b.frame_size
        for i in range(WARMUP_ROUNDS + args.rounds):
            order = plan[i % len(plan) :] + plan[: i % len(plan)]
            for label, w, size in order:
                answer = w.ask(f"one {size}", 20 + n / 20_000)
                if i >= WARMUP_ROUNDS:
                    results[label].lat_last.append(answer["last"])
                    results[label].lat_p50.append(answer["p50"])
                time.sleep(0.02)
        for srv in (gw_srv, ref_srv):
            if not srv.alive():
                raise BenchError(f"{srv.name} died:\n{srv.log_tail()}")
        return list(results.values())
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


_PCT = "{:.0f}"


def _rows(gw: Result, ref: Result) -> list[tuple[str, float, float, str]]:
    return [
        ("burst deliveries/s", _med(gw.burst_rate), _med(ref.burst_rate), "{:,.0f}"),
        ("  best round", max(gw.burst_rate), max(ref.burst_rate), "{:,.0f}"),
        ("burst time (ms)", _med(gw.burst_time) * 1e3, _med(ref.burst_time) * 1e3, "{:.1f}"),
        ("server CPU in burst (%)", _med(gw.server_cpu) * 100, _med(ref.server_cpu) * 100, _PCT),
        ("client CPU in burst (%)", _med(gw.client_cpu) * 100, _med(ref.client_cpu) * 100, _PCT),
        ("other CPU in burst (%)", _med(gw.other_cpu) * 100, _med(ref.other_cpu) * 100, _PCT),
        ("server CPU us/delivery", gw.cpu_us_per_delivery, ref.cpu_us_per_delivery, "{:.3f}"),
        ("1-at-a-time last (ms)", _med(gw.lat_last) * 1e3, _med(ref.lat_last) * 1e3, "{:.2f}"),
        ("1-at-a-time p50 (ms)", _med(gw.lat_p50) * 1e3, _med(ref.lat_p50) * 1e3, "{:.2f}"),
        ("delivered message (B)", gw.frame_size, ref.frame_size, "{:.0f}"),
        ("connect+join all (s)", gw.connect_s, ref.connect_s, "{:.1f}"),
    ]


def report(results: list[list[Result]], args: argparse.Namespace) -> None:
    """The table: gateway, reference, ratio (and the equal-size reference, its ratio)."""
    print()
    print(
        f"fan-out, one channel of N, 100-byte payload, burst B={args.burst}, {args.rounds} "
        "interleaved rounds (median); servers pinned to CPU 0, load generators to CPU 1"
    )
    eq = any(len(rs) > 2 for rs in results)
    hdr = f"{'N':>6} {'metric':<24} {'gateway':>11} {'reference':>11} {'gw/ref':>7}"
    if eq:
        hdr += f" {'ref=size':>11} {'gw/ref=':>7}"
    print(hdr)
    print("-" * len(hdr))
    for rs in results:
        gw, ref = rs[0], rs[1]
        rows = _rows(gw, ref)
        rows_eq = _rows(gw, rs[2]) if len(rs) > 2 else None
        for i, (name, g, r, fmt) in enumerate(rows):
            line = f"{gw.n:>6} {name:<24} {fmt.format(g):>11} {fmt.format(r):>11} "
            line += f"{(g / r if r else float('nan')):>7.2f}"
            if rows_eq is not None:
                r2 = rows_eq[i][2]
                line += f" {fmt.format(r2):>11} {(g / r2 if r2 else float('nan')):>7.2f}"
            print(line)
        print()
    if eq:
        print(
            "ref=size: the reference relaying messages padded to the size the gateway "
            "delivers (meta.offset, meta.from added), to separate wire bytes from Python work."
        )
    for rs in results:
        gw, ref = rs[0], rs[1]
        ratio = _med(gw.burst_rate) / _med(ref.burst_rate)
        verdict = "OK" if ratio >= 0.8 else "BELOW TARGET"
        print(
            f"N={gw.n}: gateway deliveries/s = {ratio:.3f} x reference (target >= 0.80): "
            f"{verdict}; {gw.noisy} noisy rounds"
        )
        paired = _med([g / r for g, r in zip(gw.burst_rate, ref.burst_rate, strict=True)])
        print(f"  median of per-round ratios (gateway, reference back to back): {paired:.3f}")
        for r in rs:
            rates = [round(x / 1e3) for x in r.burst_rate]
            print(f"  {r.label:>17} k deliveries/s by round: {rates}")
        worst = max(max(r.other_cpu, default=0.0) for r in rs)
        if worst > args.max_other:
            print(
                f"  WARNING: too few quiet rounds; some kept ones ran while other processes "
                f"used up to {worst:.0%} of a CPU (noisy figures, ratios less so)"
            )


def amain(args: argparse.Namespace) -> int:
    pinned = pin_self()
    print(
        f"wsgate fan-out bench: N={args.n} B={args.burst} R={args.rounds} "
        f"cpus={sorted(os.sched_getaffinity(0))} pinned={pinned} "
        f"nofile={resource.getrlimit(resource.RLIMIT_NOFILE)[0]}",
        flush=True,
    )
    results: list[list[Result]] = []
    with tempfile.TemporaryDirectory(prefix="wsgate-bench-") as tmp:
        for n in args.n:
            rs = run_n(args, n, Path(tmp))
            for r in rs:
                print(
                    f"    {r.label}: burst {_med(r.burst_rate):,.0f} deliveries/s "
                    f"(server CPU {_med(r.server_cpu) * 100:.0f}%, "
                    f"{r.cpu_us_per_delivery:.3f} us/delivery), one-at-a-time last "
                    f"{_med(r.lat_last) * 1e3:.2f} ms, p50 {_med(r.lat_p50) * 1e3:.2f} ms",
                    flush=True,
                )
            results.append(rs)
            time.sleep(0.5)
    report(results, args)
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
    parser.add_argument("--quick", action="store_true", help="N=1000, 3 rounds")
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
        help="run py-spy on each server during the measured bursts; collapsed stacks to DIR",
    )
    # Internal: this file as one server's load generator.
    parser.add_argument("--worker", choices=("gateway", "reference"), help=argparse.SUPPRESS)
    parser.add_argument("--worker-n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--cookie", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _raise_nofile(args.worker_n + 200)
        uvloop.run(_worker(args))
        return 0
    if args.quick:
        args.n = [1000]
        args.rounds = 3
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    try:
        return amain(args)
    except BenchError as exc:
        print(f"\nfanout: FAILED: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
