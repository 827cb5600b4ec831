"""Round trips through the three ways to a service: HTTP, gRPC and NATS (issue 10).

K closed-loop clients per path (default 100; ``bench/roundtrip.py``'s
clients, measuring and windows) send ``{"type": "<path>/PING", "payload":
{~100 bytes}}`` and wait for the answer (``meta.inReplyTo``) before sending
the next. One gateway (``wsgate serve``, pinned to CPU 0) routes, with no
route written by hand for the last two:

- ``echo/*`` to ``bench/echo_service.py`` (the SDK, HTTP; a ``[[routes]]``);
- ``grpc/PING`` to ``bench.v1.Echo/Echo`` on the echo service
  ``--grpc-server`` names (found by reflection, routed by a
  ``[grpc.aliases]`` entry; the payload transcoded to protobuf and back):
  ``cpp`` (default, ``bench/anchors/grpc_echo.cc``: gRPC C++'s async API,
  one thread, standing in for the compiled services users run; built on
  first use by ``bench/anchors/build_grpc_echo.sh``, and when it cannot be
  the bench says why and uses ``node``), ``node``
  (``bench/anchors/grpc_echo.mjs``, @grpc/grpc-js: the cheapest of the
  others measured by ``bench/grpc_clients.py``), ``aio`` or ``sync``
  (grpcio's servers, ``bench/echo_procedures.py``);
- ``nats/*`` to the NATS echo service ``--nats-service`` names, found over
  ``$SRV.INFO`` on a ``nats-server`` this bench starts: ``go``
  (default, ``bench/anchors/nats_echo.go``: nats.go, standing in for the Go
  services users run; built on first use by
  ``bench/anchors/build_nats_echo.sh``, and when it cannot be the bench says
  why and uses ``python``) or ``python`` (``bench/echo_procedures.py --mode
  nats``, the SDK's ``NatsService``). Both announce the same service,
  endpoint, subject, queue group and ``wsgate.actions`` and answer alike.

The reference is ``bench/echo_reference.py``, the bare picows echo server
(CPU 0 too). The services, the ``nats-server`` and this process (the load
generator) are on CPU 1. All four client sets stay connected; each window
runs one set alone, and the rounds are interleaved (reference, HTTP, gRPC,
NATS, the order rotating each round). Reported per path: the median over
``--rounds`` windows of round trips/s, p50/p99 latency, server (gateway or
reference) CPU µs per round trip and the service side's (for NATS: service
+ ``nats-server``), the ratio to the reference's round trips/s, the same
ratio per core of server CPU (``x ref cpu``: the reference's µs per round
trip over the path's; on a shared machine the figure load moves least), and which
side was saturated (≥ 85 % of a core: ``gateway``/``reference`` on CPU 0,
``service`` or ``clients``; ``cpu1`` when service + clients together used
≥ 85 % of CPU 1; ``starved`` when none was and other processes used more
than ``--max-other`` of a CPU; else ``none``). Targets: gRPC and NATS each ≥ 0.2 × the
reference.

``--floors`` adds, after the rounds, what the client libraries cost on
their own: K callers in this process calling the same echo services straight
(no gateway) through the gateway's gRPC client (``wsgate.routing.grpc_channel``),
grpcio's ``grpc.aio`` client (the one it used before) and nats-py's
``request`` (with the gateway's body and headers), this process's CPU µs per
call, against the gateway's server CPU µs per round trip on that path (the
gateway's own cost of a call is the difference).

``--callgrind DIR`` counts instructions instead (load-independent, for
before/after comparisons on a shared machine): the gateway runs under
callgrind (with ``--callgrind-service``, the NATS echo service too, instead
of the gateway when ``--callgrind-path`` is nats, the default); only that
path is measured (no reference), and each round reports the instructions per
round trip over its window (callgrind's instrumentation on for the window
only). The counts include the gateway's background work (discovery, the
heartbeats of every connected client set), which at the few round trips/s
under valgrind swung them by 30 % between windows (bench/README.md, "The
NATS invoker"): to compare two trees' NATS invoker, ``bench/nats_request.py
--callgrind`` is steadier.

Usage::

    . .venv/bin/activate
    python bench/procedures.py [--clients 100] [--seconds 5] [--rounds 5]
    python bench/procedures.py --callgrind /tmp/cg --rounds 2   # instructions per NATS rt
    python bench/procedures.py --profile /tmp/prof   # py-spy on the gateway, per path
    python bench/procedures.py --floors              # + the gRPC / nats-py clients alone
    python bench/procedures.py --grpc-server node    # the grpc-js echo service (aio, sync)
    python bench/procedures.py --nats-service python # the SDK's NatsService echo

Exits non-zero, saying what happened, when a server does not start, the
gRPC or NATS route is not discovered within 20 s, a client cannot connect,
or the closed loop stalls. Missing a target is reported, not an exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

import roundtrip as rt
from _servers import (
    BENCH_DIR,
    CLIENT_CPU,
    START_TIMEOUT_S,
    BenchError,
    ServerProcess,
    callgrind_command,
    callgrind_last_ir,
    callgrind_toggle,
    free_port,
    pin_self,
    start_profiler,
    stop_profiler,
)

PATHS: Final = ("reference", "http", "grpc", "nats")
ACTION: Final = {"reference": "echo/PING", "http": "echo/PING", "grpc": "grpc/PING",
                 "nats": "nats/PING"}  # fmt: skip
TARGET: Final = 0.2
"""gRPC and NATS round trips/s, each at least this times the reference's."""
SATURATED: Final = 0.85
DISCOVERY_WAIT_S: Final = 20.0
CALLGRIND_DISCOVERY_WAIT_S: Final = 180.0
"""Under valgrind the gateway starts and discovers many times slower."""

EXTRA_CONFIG: Final = """
[[grpc]]
target = "127.0.0.1:{grpc_port}"
timeout_ms = 5000
max_concurrency = 512
discover_every_s = 5

[grpc.aliases]
"grpc/PING" = {{ method = "bench.v1.Echo/Echo", reply = "grpc/PONG" }}

[discovery.nats]
url = "nats://127.0.0.1:{nats_port}"
interval_s = 2
timeout_ms = 5000
max_concurrency = 512
"""


class Group:
    """Several processes measured as one (``cpu_seconds`` summed): a path's service side."""

    def __init__(self, *procs: ServerProcess) -> None:
        self.procs = procs
        self.pid = procs[0].pid

    def cpu_seconds(self) -> float:
        return sum(p.cpu_seconds() for p in self.procs)


def _on_cpu1(argv: list[str]) -> list[str]:
    """``argv`` pinned to the load generator's CPU (``ServerProcess`` pins to the server's)."""
    taskset = shutil.which("taskset")
    return [taskset, "-c", str(CLIENT_CPU), *argv] if taskset else argv


CPP_ECHO: Final = BENCH_DIR / ".anchors" / "grpc-cpp" / "grpc_echo"
CPP_SOURCES: Final = tuple(
    BENCH_DIR / "anchors" / name
    for name in ("grpc_echo.cc", "echo.proto", "build_grpc_echo.sh")
)
GO_ECHO: Final = BENCH_DIR / ".anchors" / "nats-go" / "nats_echo"
GO_SOURCES: Final = tuple(
    BENCH_DIR / "anchors" / name for name in ("nats_echo.go", "build_nats_echo.sh")
)


def _build_reason(binary: Path, sources: tuple[Path, ...], script: str, what: str) -> str | None:
    """Build ``binary`` with ``bench/anchors/<script>`` if it is missing or older than its
    ``sources``; ``None`` when it is ready, else why it is not (the build's last lines)."""
    if binary.is_file() and all(binary.stat().st_mtime >= s.stat().st_mtime for s in sources):
        return None
    print(f"building the {what} (bench/anchors/{script})", flush=True)
    try:
        done = subprocess.run(
            ["sh", str(BENCH_DIR / "anchors" / script)],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{script}: {exc}"
    if done.returncode != 0 or not binary.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return f"{script} exit {done.returncode}: " + " | ".join(tail)
    return None


def cpp_echo_reason() -> str | None:
    """Build the C++ gRPC echo service if needed; ``None`` when it is ready, else why not."""
    return _build_reason(CPP_ECHO, CPP_SOURCES, "build_grpc_echo.sh", "C++ gRPC echo service")


def go_echo_reason() -> str | None:
    """Build the Go NATS echo service if needed; ``None`` when it is ready, else why not."""
    return _build_reason(GO_ECHO, GO_SOURCES, "build_nats_echo.sh", "Go NATS echo service")


def _grpc_echo(kind: str, port: int) -> list[str]:
    """The command of the gRPC echo service ``kind`` (cpp, node, aio, sync), pinned to CPU 1."""
    if kind == "cpp":
        return _on_cpu1([str(CPP_ECHO), str(port)])
    if kind == "node":
        if not (BENCH_DIR / ".anchors" / "grpc" / "node_modules").is_dir():
            raise BenchError("--grpc-server node: run `sh bench/anchors/install.sh` first")
        return _on_cpu1(["node", str(BENCH_DIR / "anchors" / "grpc_echo.mjs"), str(port)])
    mode = "grpc" if kind == "aio" else "grpc-sync"
    return [sys.executable, str(BENCH_DIR / "echo_procedures.py"), "--mode", mode,
            "--port", str(port), "--cpu", str(CLIENT_CPU)]  # fmt: skip


def _nats_echo(kind: str, url: str) -> list[str]:
    """The command of the NATS echo service ``kind`` (go, python) on ``url``, pinned to CPU 1."""
    if kind == "go":
        return _on_cpu1([str(GO_ECHO), url])
    return [sys.executable, str(BENCH_DIR / "echo_procedures.py"), "--mode", "nats",
            "--nats", url, "--cpu", str(CLIENT_CPU)]  # fmt: skip


def start_services(
    workdir: Path,
    grpc_server: str = "cpp",
    nats_callgrind: Path | None = None,
    nats_service: str = "go",
) -> tuple[dict[str, ServerProcess], int, int, int]:
    """nats-server, the HTTP, gRPC and NATS echo services; their processes and ports.

    ``nats_callgrind``: run the NATS echo service under callgrind, dumping there."""
    binary = shutil.which("nats-server") or str(Path(sys.executable).parent / "nats-server")
    procs: dict[str, ServerProcess] = {}
    try:
        nats_port = free_port()
        procs["nats-server"] = ServerProcess(
            "nats-server",
            _on_cpu1([binary, "-a", "127.0.0.1", "-p", str(nats_port)]),
            workdir / "nats-server.log",
            "Server is ready",
        )
        svc, http_port = rt.start_echo_service(workdir, "sdk", CLIENT_CPU)
        procs["http"] = svc
        grpc_port = free_port()
        procs["grpc"] = ServerProcess(
            "echo-grpc", _grpc_echo(grpc_server, grpc_port), workdir / "echo-grpc.log",
            "listening on ",
        )
        argv = _nats_echo(nats_service, f"nats://127.0.0.1:{nats_port}")
        if nats_callgrind is not None:
            argv = callgrind_command(nats_callgrind, argv)
        procs["nats"] = ServerProcess(
            "echo-nats", argv, workdir / "echo-nats.log", "listening on ",
            300 if nats_callgrind is not None else START_TIMEOUT_S,
        )  # fmt: skip
    except BaseException:
        for p in procs.values():
            p.stop()
        raise
    return procs, http_port, grpc_port, nats_port


def _routes(api_url: str) -> list[dict[str, object]]:
    req = urllib.request.Request(
        f"{api_url}/v1/routes", headers={"Authorization": "Bearer bench"}
    )
    with urllib.request.urlopen(req, timeout=2) as resp:
        body = json.loads(resp.read())
    routes: list[dict[str, object]] = body["routes"] if isinstance(body, dict) else body
    return routes


async def wait_discovered(api_url: str, wait_s: float = DISCOVERY_WAIT_S) -> None:
    """Until ``GET /v1/routes`` shows the gRPC alias and the NATS pattern (bounded)."""
    deadline = time.monotonic() + wait_s
    seen: set[str] = set()
    while time.monotonic() < deadline:
        try:
            routes = await asyncio.to_thread(_routes, api_url)
        except OSError:
            routes = []
        seen = {str(r.get("source")) + " " + str(r.get("match") or r.get("pattern"))
                for r in routes}  # fmt: skip
        if {"grpc grpc/PING", "nats nats/*"} <= seen:
            return
        await asyncio.sleep(0.2)  # polling the route table, bounded by the deadline
    raise BenchError(f"gRPC/NATS routes not discovered in {wait_s:.0f} s: {seen}")


TRACEPARENT: Final = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"


async def _callers(
    call: Callable[[], Awaitable[object]], k: int, warmup: float, seconds: float
) -> tuple[float, float]:
    """K closed-loop callers of ``call``: (calls/s, this process's CPU us per call)."""
    state = {"calls": 0, "stop": False}

    async def caller() -> None:
        for _ in range(10**9):  # until stopped
            if state["stop"]:
                return
            await call()
            state["calls"] += 1

    tasks = [asyncio.get_running_loop().create_task(caller()) for _ in range(k)]
    try:
        await asyncio.sleep(warmup)  # the warm-up's length
        n0, c0, t0 = state["calls"], rt._cpu_self(), time.perf_counter()
        await asyncio.sleep(seconds)  # the window's length
        n1, c1, t1 = state["calls"], rt._cpu_self(), time.perf_counter()
    finally:
        state["stop"] = True
        await asyncio.wait(tasks, timeout=10)
        for t in tasks:
            t.cancel()
    calls = max(1, n1 - n0)
    return calls / (t1 - t0), (c1 - c0) / calls * 1e6


async def grpc_floor(port: int, k: int, warmup: float, seconds: float) -> tuple[float, float]:
    """grpcio's ``grpc.aio`` client straight to the echo service, as the gateway called it:
    ``bench.v1.Pad`` with the bench payload and the gateway's five metadata pairs."""
    import grpc.aio
    from echo_procedures import _pad_class

    pad = _pad_class()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        rpc = channel.unary_unary(
            "/bench.v1.Echo/Echo",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=pad.FromString,
        )
        request = pad(pad="x" * 90)
        metadata = (
            ("wsgate-connection-id", "n1.AbCdEf"), ("wsgate-user", "u1"),
            ("wsgate-organization", "acme"), ("wsgate-request-id", "1"),
            ("traceparent", TRACEPARENT),
        )  # fmt: skip
        return await _callers(
            lambda: rpc(request, timeout=5, metadata=metadata), k, warmup, seconds
        )


async def wsgate_grpc_floor(
    port: int, k: int, warmup: float, seconds: float
) -> tuple[float, float]:
    """The gateway's own gRPC client (``grpc_channel.Channel``) straight to the echo service,
    as the gateway calls it: the same message, metadata and deadline header."""
    from echo_procedures import _pad_class

    from wsgate.routing.grpc_channel import Channel
    from wsgate.routing.grpc_h2 import metadata_block, timeout_header

    pad = _pad_class()
    channel = Channel(f"127.0.0.1:{port}")
    metadata = (
        ("wsgate-connection-id", "n1.AbCdEf"), ("wsgate-user", "u1"),
        ("wsgate-organization", "acme"), ("wsgate-request-id", "1"),
        ("traceparent", TRACEPARENT),
    )  # fmt: skip

    async def call() -> object:
        request = pad(pad="x" * 90).SerializeToString()
        block = metadata_block(metadata) + timeout_header(5.0)
        return pad.FromString(await channel.unary("/bench.v1.Echo/Echo", request, block, 5.0))

    try:
        return await _callers(call, k, warmup, seconds)
    finally:
        await channel.aclose()


async def nats_floor(url: str, k: int, warmup: float, seconds: float) -> tuple[float, float]:
    """nats-py's ``request`` straight to the echo service's subject, with the gateway's
    ``{action, context}`` body and its context headers."""
    import nats
    from echo_procedures import NATS_NAME

    from wsgate.backends.nats import close_client

    nc = await nats.connect(url, connect_timeout=10)
    body = json.dumps(
        {"action": {"type": "nats/PING", "payload": {"pad": "x" * 90}, "meta": {"id": "1"}},
         "context": {"connectionId": "n1.AbCdEf", "userId": "u1", "hub": "acme",
                     "requestId": "1"}}
    ).encode()  # fmt: skip
    headers = {"Wsgate-Connection-Id": "n1.AbCdEf", "Wsgate-Hub": "acme", "Wsgate-User": "u1",
               "Wsgate-Request-Id": "1", "traceparent": TRACEPARENT}  # fmt: skip
    try:
        return await _callers(
            lambda: nc.request(f"wsgate.{NATS_NAME}", body, timeout=5, headers=headers),
            k, warmup, seconds,
        )  # fmt: skip
    finally:
        await close_client(nc)


@dataclass
class PathResult:
    path: str
    windows: list[rt.Window]

    def median(self, key: str) -> float:
        """The median over the windows of the attribute (or property) ``key``."""
        return self.median_of(lambda w: float(getattr(w, key)))

    def median_of(self, f: Callable[[rt.Window], float]) -> float:
        xs = sorted(f(w) for w in self.windows)
        return xs[len(xs) // 2] if xs else float("nan")


def saturated(path: str, w: rt.Window, max_other: float) -> str:
    s = w.seconds
    sides = []
    if w.server_cpu / s >= SATURATED:
        sides.append("reference" if path == "reference" else "gateway")
    if w.service_cpu / s >= SATURATED:
        sides.append("service")
    if w.client_cpu / s >= SATURATED:
        sides.append("clients")
    if not sides and (w.service_cpu + w.client_cpu) / s >= SATURATED:
        sides.append("cpu1")
    if not sides and w.other_cpu / s > max_other:
        sides.append("starved")  # other processes took the CPU: the shared machine was the limit
    return "+".join(sides) or "none"


async def amain(args: argparse.Namespace) -> int:
    pinned = pin_self()
    print(
        f"wsgate procedures bench: K={args.clients} per path, window={args.seconds:.0f}s "
        f"warmup={args.warmup:.0f}s rounds={args.rounds} cpus={sorted(os.sched_getaffinity(0))} "
        f"clients pinned={pinned}",
        flush=True,
    )
    results = {p: PathResult(p, []) for p in PATHS}
    cg: Path | None = args.callgrind
    measured = PATHS if cg is None else (args.callgrind_path,)
    counted: dict[str, list[float]] = {"gateway": [], "service": []}
    """``--callgrind``: instructions per round trip, one figure a round."""
    with tempfile.TemporaryDirectory(prefix="wsgate-proc-") as tmp:
        workdir = Path(tmp)
        service_cg = cg / "service.callgrind" if cg and args.callgrind_service else None
        procs, http_port, grpc_port, nats_port = start_services(
            workdir, args.grpc_server, service_cg, args.nats_service
        )
        floors: dict[str, tuple[float, float]] = {}
        gateway: ServerProcess | None = None
        reference: ServerProcess | None = None
        runs: dict[str, rt.Run] = {}
        try:
            users = 3 * -(-args.clients // rt.CLIENTS_PER_USER)  # per_path users for each of 3
            extra = EXTRA_CONFIG.format(grpc_port=grpc_port, nats_port=nats_port)
            gateway_cg = None if cg is None or service_cg else cg / "gateway.callgrind"
            command = None if gateway_cg is None else callgrind_command(gateway_cg)
            gateway, cookies, _ = rt.start_gateway(
                workdir, http_port, extra, users, command=command
            )
            config_file = next(workdir.glob("gateway-*.toml"))
            api = tomllib.loads(config_file.read_text())["api"]["listen"]
            await wait_discovered(
                f"http://{api}", DISCOVERY_WAIT_S if cg is None else CALLGRIND_DISCOVERY_WAIT_S
            )
            reference = rt.start_echo_reference(workdir)
            headers = [{"Cookie": f"wsgate_session={c}"} for c in cookies]
            per_path = -(-args.clients // rt.CLIENTS_PER_USER)
            for i, path in enumerate(PATHS):
                if path not in measured:
                    continue
                run = rt.Run(
                    gateway=path != "reference", payload_bytes=args.payload,
                    action_type=ACTION[path],
                )  # fmt: skip
                server = reference if path == "reference" else gateway
                mine = headers[(i - 1) * per_path : i * per_path] if i else [{}]
                await run.connect(server.url, args.clients, mine)
                runs[path] = run
            service_of: dict[str, Group | None] = {
                "reference": None,
                "http": Group(procs["http"]),
                "grpc": Group(procs["grpc"]),
                "nats": Group(procs["nats"], procs["nats-server"]),
            }
            gc.collect()
            gc.freeze()
            for r in range(args.rounds):
                order = measured[r % len(measured) :] + measured[: r % len(measured)]
                for path in order:
                    run = runs[path]
                    server = reference if path == "reference" else gateway
                    run.stopping = False
                    run.start()
                    await asyncio.sleep(args.warmup)  # the warm-up's length
                    prof = None
                    if args.profile is not None and r == 0 and path != "reference":
                        args.profile.mkdir(parents=True, exist_ok=True)
                        prof = start_profiler(server.pid, args.profile / f"gateway-{path}.txt")
                        await asyncio.sleep(1.0)  # py-spy attaches
                    service = service_of[path]
                    try:
                        if cg is not None:
                            w = await _counted(
                                args, run, path, server, service, gateway_cg, service_cg,
                                counted,
                            )  # fmt: skip
                        else:
                            w = await rt.measure_quietly(
                                args, run, path, server, service  # type: ignore[arg-type]  # a Group has cpu_seconds()
                            )
                    finally:
                        if prof is not None:
                            stop_profiler(prof)
                    await run.stop()
                    if run.errors:
                        raise BenchError(f"{path}: errors {dict(run.errors)} "
                                         f"{run.error_samples[:2]}")  # fmt: skip
                    results[path].windows.append(w)
                    ir = "".join(
                        f"  instructions/rt {k} {v[-1]:,.0f}" for k, v in counted.items() if v
                    )
                    print(
                        f"    round {r + 1} {path:<9} {w.rate:>8,.0f} rt/s  "
                        f"p99 {w.p99 * 1e3:6.2f} ms  server {w.per_rt_us(w.server_cpu):5.1f} "
                        f"us/rt  saturated {saturated(path, w, args.max_other)}{ir}",
                        flush=True,
                    )
            for name, srv in (("gateway", gateway), ("reference", reference)):
                if not srv.alive():
                    raise BenchError(f"{name} died")
            if cg is not None:
                _report_counted(args, counted)
                return 0
            if args.floors:
                floors["grpc"] = await wsgate_grpc_floor(
                    grpc_port, args.clients, args.warmup, args.seconds
                )
                floors["grpcio"] = await grpc_floor(
                    grpc_port, args.clients, args.warmup, args.seconds
                )
                floors["nats"] = await nats_floor(
                    f"nats://127.0.0.1:{nats_port}", args.clients, args.warmup, args.seconds
                )
        except BenchError as exc:
            tail = gateway.log_tail(1500) if gateway is not None else ""
            raise BenchError(f"{exc}\n--- gateway log tail ---\n{tail}") from None
        finally:
            gc.unfreeze()
            for run in runs.values():
                await run.close()
            for srv in (gateway, reference, *reversed(procs.values())):
                if srv is not None:
                    srv.stop()
    report(args, results, floors)
    return 0


async def _counted(
    args: argparse.Namespace,
    run: rt.Run,
    path: str,
    gateway: ServerProcess,
    service: Group | None,
    gateway_cg: Path | None,
    service_cg: Path | None,
    counted: dict[str, list[float]],
) -> rt.Window:
    """``--callgrind``: one window with instrumentation on; its instructions per round trip."""
    pids = [] if gateway_cg is None else [(gateway.pid, gateway_cg, "gateway")]
    if service_cg is not None and service is not None:
        pids.append((service.pid, service_cg, "service"))
    got0 = sum(c.got for c in run.clients)
    for pid, _, _ in pids:
        callgrind_toggle(pid, on=True)
    w = await rt.measure(run, path, args.seconds, gateway, service)  # type: ignore[arg-type]  # a Group has cpu_seconds()
    for pid, _, _ in pids:
        callgrind_toggle(pid, on=False)
    made = max(1, sum(c.got for c in run.clients) - got0)
    for _, out, key in pids:
        counted[key].append(callgrind_last_ir(out) / made)
    return w


def _report_counted(args: argparse.Namespace, counted: dict[str, list[float]]) -> None:
    print()
    for key, xs in counted.items():
        if xs:
            print(
                f"callgrind, {args.callgrind_path} path, K={args.clients}, {args.seconds:.0f} s "
                f"windows: {key} {sorted(xs)[len(xs) // 2]:,.0f} instructions per round trip "
                f"(median of {len(xs)}; all: {', '.join(f'{x:,.0f}' for x in xs)}; dumps in "
                f"{args.callgrind})"
            )


def report(
    args: argparse.Namespace,
    results: dict[str, PathResult],
    floors: dict[str, tuple[float, float]],
) -> None:
    ref = results["reference"].median("rate")
    print()
    print(
        f"round trips through HTTP, gRPC and NATS: K={args.clients} closed-loop clients per "
        f"path, {args.payload}-byte payload, {args.seconds:.0f} s windows, medians of "
        f"{args.rounds} interleaved rounds (shared machine: compare ratios, not absolutes); "
        f"gRPC echo service: {args.grpc_server}, NATS echo service: {args.nats_service}"
    )
    ref_us = results["reference"].median_of(lambda w: w.per_rt_us(w.server_cpu))
    hdr = (
        f"{'path':<10} {'rt/s':>9} {'x ref':>6} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'srv us/rt':>9} {'x ref cpu':>9} {'svc us/rt':>9} {'cli us/rt':>9} "
        f"{'saturated (per round)':<24}"
    )
    print(hdr)
    print("-" * len(hdr))
    for path in PATHS:
        res = results[path]
        rate = res.median("rate")
        sat = ",".join(saturated(path, w, args.max_other) for w in res.windows)
        srv_us = res.median_of(lambda w: w.per_rt_us(w.server_cpu))
        print(
            f"{path:<10} {rate:>9,.0f} {rate / ref:>6.2f} {res.median('p50') * 1e3:>7.2f} "
            f"{res.median('p99') * 1e3:>7.2f} "
            f"{srv_us:>9.1f} {ref_us / srv_us:>9.3f} "
            f"{res.median_of(lambda w: w.per_rt_us(w.service_cpu)):>9.1f} "
            f"{res.median_of(lambda w: w.per_rt_us(w.client_cpu)):>9.1f} {sat:<24}"
        )
    print()
    for path in ("grpc", "nats"):
        ratio = results[path].median("rate") / ref
        us = results[path].median_of(lambda w: w.per_rt_us(w.server_cpu))
        print(
            f"{path}: round trips/s = {ratio:.2f} x reference (target >= {TARGET}): "
            f"{'OK' if ratio >= TARGET else 'BELOW TARGET'}; per core of the server "
            f"(1 / CPU per round trip, what load moves least) {ref_us / us:.3f} x"
        )
    libs = {"grpc": "the gateway's gRPC client", "grpcio": "grpcio's grpc.aio client",
            "nats": "nats-py's request"}  # fmt: skip
    for name, (rate, us) in floors.items():
        path = "grpc" if name == "grpcio" else name
        gw_us = results[path].median_of(lambda w: w.per_rt_us(w.server_cpu))
        lib = libs[name]
        print(
            f"{lib} alone, K={args.clients} callers, no gateway: {rate:,.0f} calls/s, "
            f"{us:.1f} us CPU/call; the gateway's {path} path {gw_us:.1f} us/rt "
            f"= {gw_us / us:.2f} x that"
        )
    noisy = sum(w.noisy for r in results.values() for w in r.windows)
    if noisy:
        print(f"noisy windows measured again: {noisy}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100, help="K clients per path (100)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring window (5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up before a window (1)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (5)")
    parser.add_argument("--payload", type=int, default=100, help="payload JSON bytes (100)")
    parser.add_argument(
        "--max-other", type=float, default=0.25,
        help="measure again when other processes used more than this share of a CPU (0.25)",
    )  # fmt: skip
    parser.add_argument("--attempts", type=int, default=2, help="windows tried per measurement")
    parser.add_argument(
        "--quiet-wait", type=float, default=10.0, help="wait at most this long for quiet (10 s)"
    )
    parser.add_argument(
        "--grpc-server", choices=("cpp", "node", "aio", "sync"), default="cpp",
        help="the gRPC echo service: cpp (gRPC C++, default; node when it cannot be built), "
        "node (grpc-js), aio or sync (grpcio's)",
    )  # fmt: skip
    parser.add_argument(
        "--nats-service", choices=("go", "python"), default="go",
        help="the NATS echo service: go (nats.go, default; python when it cannot be built), "
        "python (the SDK's NatsService)",
    )  # fmt: skip
    parser.add_argument("--profile", type=Path, metavar="DIR", help="py-spy the gateway into DIR")
    parser.add_argument(
        "--callgrind", type=Path, metavar="DIR",
        help="count instructions per round trip of one path under callgrind (the gateway; for "
        "nats the echo service too); dumps in DIR",
    )  # fmt: skip
    parser.add_argument(
        "--callgrind-path", choices=PATHS[1:], default="nats",
        help="the path --callgrind measures (nats)",
    )  # fmt: skip
    parser.add_argument(
        "--callgrind-service", action="store_true",
        help="with --callgrind: count the (python) NATS echo service instead of the gateway",
    )  # fmt: skip
    parser.add_argument(
        "--floors", action="store_true",
        help="after the rounds, measure the gRPC and nats-py clients calling the echoes straight",
    )  # fmt: skip
    args = parser.parse_args()
    if not 1 <= args.clients <= 400 or not 1 <= args.rounds <= 20:
        parser.error("--clients must be in 1..400 and --rounds in 1..20")
    if not 0.5 <= args.seconds <= 120:
        parser.error("--seconds must be in 0.5..120")
    if args.callgrind is not None:
        if args.profile is not None or args.floors:
            parser.error("--callgrind goes without --profile and --floors")
        if args.callgrind_service and args.callgrind_path != "nats":
            parser.error("--callgrind-service counts the NATS echo service: --callgrind-path nats")
        if args.callgrind_service and args.nats_service != "python":
            parser.error("--callgrind-service counts the Python NATS echo: --nats-service python")
        args.callgrind.mkdir(parents=True, exist_ok=True)
    if args.grpc_server == "cpp":
        reason = cpp_echo_reason()
        if reason is not None:
            print(f"--grpc-server cpp unavailable ({reason}); using node", flush=True)
            args.grpc_server = "node"
    if args.nats_service == "go":
        reason = go_echo_reason()
        if reason is not None:
            print(f"--nats-service go unavailable ({reason}); using python", flush=True)
            args.nats_service = "python"
    try:
        return uvloop.run(amain(args))
    except BenchError as exc:
        print(f"\nprocedures: FAILED: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
