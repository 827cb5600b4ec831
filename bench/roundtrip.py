"""Round trips through a service, and what flooding clients cost the others.

K closed-loop clients (default 100) each send ``{"type": "echo/PING",
"payload": {~100 bytes}, "meta": {"id": "<n>"}}`` and wait for the answer
carrying ``meta.inReplyTo == "<n>"`` before sending the next. Two servers
run in the same invocation, one after the other:

- **gateway**: ``wsgate serve`` (subprocess, pinned to CPU 0) routing
  ``echo/*`` to ``bench/echo_service.py`` (the SDK on its built-in httptools
  server by default; ``--service sdk-sync`` the same with a plain ``def``
  handler (no task per request); ``sdk-aiohttp`` the SDK on aiohttp's server,
  ``sdk-uvicorn`` the SDK as an ASGI app under uvicorn, ``raw`` a bare
  aiohttp handler; ``lean``: no framework, a bare ``asyncio.Protocol``
  HTTP/1.1 server checking the signature — what a fast service costs; pinned
  to CPU 1 by default);
- **reference**: ``bench/echo_reference.py``, a bare picows echo server
  (pinned to CPU 0): each text message straight back.

This process (the load generator: picows clients on uvloop) is pinned to
CPU 1. For each server, after a warm-up: round trips per second, p50 and p99
latency, and CPU seconds per round trip of the server (and of the service,
and of this process) over a ``--seconds`` window; then the ratios
gateway/reference against the targets (round trips >= 0.25x, p99 < 4x).

Clients sign in as users u1, u2, ... 25 connections each (the gateway caps
one user's connections, 64 by default) and retry a refused handshake (the
per-address handshake rate) after a short pause. A refusal made before the
message was decoded (``RATE_LIMITED`` without ``meta.inReplyTo``) is taken to
be the client's one request in flight; refused requests are re-sent after
``retryAfterMs`` and counted. Each window starts once other processes have
used at most ``--max-other`` of a CPU for 1 s (waiting at most
``--quiet-wait``); a window during which they used more is measured again,
up to ``--attempts`` times, and the quietest kept.

Reading the figures: the loop is closed, so latency is about K / (round
trips per second) and p99 follows throughput. The gateway (CPU 0) is the
busiest stage with a fast service; the service and the load generator share
CPU 1. Server CPU µs per round trip is the figure noise moves least, but on
this VM it still varies by ±20 % between runs (the reference's much less):
run it several times. ``--pipeline N`` sets the echo service's ``pipeline``
(HTTP/1.1 pipelining, docs/routing.md).

``--flood F`` adds, for the gateway, a second window with F flooding
clients (a child process running this file with ``--flooder``, pinned to
CPU 1 at ``nice`` +10 so that it takes the load generator's spare time, not
its share). Each flooder cycles through junk (not JSON), an unrouted type,
a routed ``echo/FLOOD`` and a binary frame, pre-encoded 32 frames to one
write, keeping at most 64 unanswered (so it floods as fast as the gateway
answers, never more than the loopback holds); one that is closed (4429 when
the gateway closes abusers) reconnects after 0.5 s, at most 100 times.
Reported: the well-behaved clients' round trips/s and p99 without and with
the flood, from the same gateway process, and their ratio.

``--http-clients`` first measures the gateway's HTTP client on its own:
this process posts signed echo invocations straight to the echo service
(pinned to the other CPU; no gateway running) with K callers, through the
hand-written pool (``wsgate.routing.http1.Http1Client``) and through
``aiohttp.ClientSession``, ``--client-rounds`` windows each, interleaved;
it reports calls/s, p50/p99, this process's and the service's CPU per call,
and aiohttp's CPU per call over the pool's (the pool is kept at >= 1.3 x).
``--http-clients-only`` stops there.

``--limits`` adds a default rate limit to the gateway's config::

    [[rate_limits]]
    match = "*"
    per = "connection"
    rate = "200/1s"
    burst = 50

Usage::

    . .venv/bin/activate
    python bench/roundtrip.py [--clients 100] [--seconds 10]
                              [--service sdk|sdk-sync|sdk-aiohttp|sdk-uvicorn|raw|lean]
    python bench/roundtrip.py --service lean --pipeline 16   # HTTP/1.1 pipelining
    python bench/roundtrip.py --flood 10 [--limits]
    python bench/roundtrip.py --profile /tmp/prof     # py-spy on the gateway
    python bench/roundtrip.py --http-clients-only --service sdk   # the pool vs aiohttp
    python bench/roundtrip.py --obs both [--obs-rounds 5] [--scrape-s 1]  # metrics+JSON logs
    python bench/roundtrip.py --obs both --callgrind DIR --clients 20     # ... in instructions
    python bench/roundtrip.py --callgrind DIR --clients 20 --service lean   # one gateway's

``--obs both`` alternates fresh gateways with ``/metrics`` and JSON logs off and
on (off, on, on, off, ...), the one on scraped every ``--scrape-s`` s, and prints
the paired ratio of server CPU per round trip; with ``--callgrind`` also the
gateways' instructions per round trip over each window (bench/README.md).

Exits non-zero, saying what happened, when a server fails to start (a
refused config key included), a client cannot connect, or the closed loop
stalls. Missing a target is reported, not an exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import uvloop
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _servers import (
    BENCH_DIR,
    CLIENT_CPU,
    OBS_CONFIG,
    START_TIMEOUT_S,
    BenchError,
    Scraper,
    ServerProcess,
    _cli,
    callgrind_command,
    callgrind_last_ir,
    callgrind_toggle,
    free_port,
    gateway_source,
    pin_self,
    start_profiler,
    stop_profiler,
)

_TEXT: Final = WSMsgType.TEXT
_BINARY: Final = WSMsgType.BINARY
_CLOSE: Final = WSMsgType.CLOSE
_WELCOME: Final = b'"@@wsgate/WELCOME"'
_ERROR: Final = b'"@@wsgate/ERROR"'
_RATE_LIMITED: Final = b'"RATE_LIMITED"'
_CLK_TCK: Final = os.sysconf("SC_CLK_TCK")

perf_counter: Final = time.perf_counter

GATEWAY_CONFIG: Final = """\
[server]
listen = "127.0.0.1:{port}"
allowed_origins = ["*"]

[api]
listen = "127.0.0.1:{api_port}"
keys = ["bench"]

[auth]
keys = ["{key}"]

[services.echo]
url = "http://127.0.0.1:{svc_port}/actions"
secret = "bench-secret"
timeout_ms = 5000
max_concurrency = 512
pipeline = {pipeline}

[[routes]]
match = "echo/*"
service = "echo"
"""

LIMITS_CONFIG: Final = """
[[rate_limits]]
match = "*"
per = "connection"
rate = "200/1s"
burst = 50
"""


CONNECT_ATTEMPTS: Final = 50
"""Tries per client when the gateway refuses handshakes (RATE_LIMITED, 4429)."""
CLIENTS_PER_USER: Final = 25
"""Connections per user id: the gateway caps one user's connections (64 by default)."""


def request_format(payload_bytes: int, action_type: str = "echo/PING") -> bytes:
    """The request with ``%d`` for ``meta.id``; its payload JSON is ``payload_bytes`` long."""
    head = '{"pad":"'
    pad = "x" * max(0, payload_bytes - len(head) - 2)
    return f'{{"type":"{action_type}","payload":{head}{pad}"}},"meta":{{"id":"%d"}}}}'.encode()


# -- the well-behaved clients ----------------------------------------------------


class RtClient(WSListener):
    """One closed-loop client: one request in flight, the next sent from the answer's callback."""

    __slots__ = ("closed", "expect", "got", "n", "pending", "ready", "run", "t", "wst")

    def __init__(self, run: Run) -> None:
        self.run = run
        self.n = 0
        """``meta.id`` of the request in flight."""
        self.expect = b"\0none"
        """What marks its answer (``"inReplyTo":"<n>"``, or ``"id":"<n>"`` for the echo)."""
        self.t = 0.0
        """When the request in flight was first sent (a retry after RATE_LIMITED keeps it)."""
        self.got = 0
        """Answers received (cumulative)."""
        self.pending = False
        """A request is in flight (or waiting to be retried)."""
        self.closed = False
        self.ready: asyncio.Future[None] | None = run.loop.create_future()

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.wst = transport
        if not self.run.gateway:
            self._set_ready()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is _TEXT:
            data = frame.get_payload_as_bytes()
            if _ERROR in data:
                self.run.error(self, data)
            elif self.expect in data:
                now = perf_counter()
                run = self.run
                self.got += 1
                if run.recording:
                    run.lat.append(now - self.t)
                if run.stopping:
                    self.pending = False
                    return
                self.send_next(now)
            elif _WELCOME in data:
                self._set_ready()
        elif frame.msg_type is _CLOSE:
            if self.ready is None:
                self.run.closes[frame.get_close_code().value] += 1
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.pending = False
        self.closed = True
        if self.ready is not None and not self.ready.done():
            self.ready.set_exception(BenchError("disconnected before WELCOME"))

    def send_next(self, now: float) -> None:
        run = self.run
        self.n = n = self.n + 1
        self.expect = run.marker % n
        self.pending = True
        self.t = now
        self.wst.send(_TEXT, run.fmt % n)

    def resend(self) -> None:
        """Send the request in flight again (after RATE_LIMITED), unless stopping."""
        if self.run.stopping or self.closed:
            self.pending = False
            return
        self.wst.send(_TEXT, self.run.fmt % self.n)

    def _set_ready(self) -> None:
        ready = self.ready
        if ready is not None and not ready.done():
            ready.set_result(None)
        self.ready = None


class Run:
    """The clients of one server, their counters and the measuring window."""

    def __init__(
        self, *, gateway: bool, payload_bytes: int, action_type: str = "echo/PING"
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.gateway = gateway
        self.fmt = request_format(payload_bytes, action_type)
        self.marker = b'"inReplyTo":"%d"' if gateway else b'"id":"%d"'
        self.clients: list[RtClient] = []
        self.recording = False
        self.stopping = False
        self.lat: array[float] = array("d")
        """Latencies (s) of the round trips completed while recording."""
        self.refused = 0
        """Requests answered RATE_LIMITED (retried after ``retryAfterMs``)."""
        self.errors: Counter[str] = Counter()
        """Other ERROR answers, by code (the round trip is abandoned, the next sent)."""
        self.error_samples: list[bytes] = []
        self.closes: Counter[int] = Counter()
        """Close codes received by admitted clients (none expected)."""
        self.connect_retries = 0

    def error(self, client: RtClient, data: bytes) -> None:
        if len(self.error_samples) < 5:
            self.error_samples.append(data[:300])
        try:
            body = json.loads(data)
            payload = body.get("payload") or {}
            code = str(payload.get("code"))
        except (ValueError, AttributeError):
            payload, code = {}, "?"
        if client.ready is not None and not client.ready.done():
            client.ready.set_exception(BenchError(f"ERROR before WELCOME: {data[:300]!r}"))
            return
        matched = client.expect in data
        if not matched and client.pending and b'"inReplyTo"' not in data:
            # A refusal made before the message was decoded carries no id; one
            # request in flight per client (closed loop) says which it was.
            matched = True
        if not matched:
            self.errors[f"{code} (unmatched)"] += 1
            return
        if data.find(_RATE_LIMITED) >= 0:
            self.refused += 1
            retry_ms = payload.get("retryAfterMs") if isinstance(payload, dict) else None
            delay = min(1.0, max(0.001, (retry_ms or 10) / 1000))
            self.loop.call_later(delay, client.resend)
            return
        self.errors[code] += 1
        if self.stopping:
            client.pending = False
        else:
            client.send_next(perf_counter())

    async def connect(self, url: str, k: int, headers: list[dict[str, str]]) -> None:
        """Open ``k`` clients, client ``i`` with ``headers[i // CLIENTS_PER_USER]``."""

        async def one(i: int) -> RtClient:
            # The gateway limits handshakes per address (a burst, then a rate):
            # a refused client waits as told and tries again, a bounded number of times.
            client: RtClient | None = None
            for attempt in range(CONNECT_ATTEMPTS):
                _, listener = await ws_connect(
                    lambda: RtClient(self),
                    url,
                    extra_headers=headers[min(len(headers) - 1, i // CLIENTS_PER_USER)],
                    websocket_handshake_timeout=15,
                    read_buffer_init_size=8192,
                )
                assert isinstance(listener, RtClient)
                client = listener
                if client.ready is None:
                    break
                try:
                    await asyncio.wait_for(client.ready, 15)
                    break
                except BenchError as exc:
                    client.wst.disconnect(graceful=False)
                    if "RATE_LIMITED" not in str(exc) or attempt == CONNECT_ATTEMPTS - 1:
                        raise
                    self.connect_retries += 1
                    await asyncio.sleep(0.05 + 0.2 * (i % 10) / 10)
            assert client is not None
            self.clients.append(client)
            return client

        results = await asyncio.gather(*(one(i) for i in range(k)), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise BenchError(
                f"{len(failed)}/{k} clients failed to connect: {failed[0]!r}; "
                f"errors {self.error_samples[:2]}"
            )

    def start(self) -> None:
        now = perf_counter()
        for c in self.clients:
            c.send_next(now)

    async def stop(self, timeout: float = 10.0) -> None:
        """Send nothing more; wait (bounded) until no request is in flight."""
        self.stopping = True
        deadline = time.monotonic() + timeout
        while any(c.pending for c in self.clients):
            if time.monotonic() > deadline:
                stuck = sum(c.pending for c in self.clients)
                raise BenchError(f"{stuck} requests still unanswered {timeout:.0f}s after the end")
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        for c in self.clients:
            c.wst.disconnect(graceful=False)
        deadline = time.monotonic() + 10
        while not all(c.closed for c in self.clients) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)


# -- measuring -------------------------------------------------------------------


def _machine_busy() -> float:
    """CPU seconds all CPUs have spent busy since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / _CLK_TCK


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _cpu_pid(pid: int) -> float:
    return sum(_cpu_split(pid))


def _cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of ``pid`` (all its threads) so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    return int(fields[11]) / _CLK_TCK, int(fields[12]) / _CLK_TCK


def _pct(sorted_xs: array[float] | list[float], q: float) -> float:
    if not sorted_xs:
        return float("nan")
    return sorted_xs[min(len(sorted_xs) - 1, int(q * len(sorted_xs)))]


@dataclass
class Window:
    """One measuring window of one server."""

    label: str
    seconds: float = 0.0
    round_trips: int = 0
    p50: float = float("nan")
    p99: float = float("nan")
    p999: float = float("nan")
    max: float = float("nan")
    server_cpu: float = 0.0
    server_sys: float = 0.0
    """The part of ``server_cpu`` spent in the kernel."""
    service_cpu: float = 0.0
    client_cpu: float = 0.0
    flooder_cpu: float = 0.0
    other_cpu: float = 0.0
    per_client_min: float = 0.0
    per_client_max: float = 0.0
    refused: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    flood: dict[str, Any] | None = None
    ir_per_rt: float = float("nan")
    """``--callgrind``: the gateway's instructions per round trip (load-independent)."""
    noisy: int = 0
    """Windows discarded (and measured again) because other processes were busy."""

    @property
    def rate(self) -> float:
        return self.round_trips / self.seconds if self.seconds else float("nan")

    def per_rt_us(self, cpu: float) -> float:
        return cpu / self.round_trips * 1e6 if self.round_trips else float("nan")


async def measure(
    run: Run,
    label: str,
    seconds: float,
    server: ServerProcess,
    service: ServerProcess | None = None,
    flooder_pid: int | None = None,
) -> Window:
    """Record ``seconds`` of the running closed loop."""
    w = Window(label)
    got0 = [c.got for c in run.clients]
    refused0 = run.refused
    errors0 = Counter(run.errors)
    run.lat = array("d")
    sys0 = _cpu_split(server.pid)[1]
    cpu = (
        server.cpu_seconds(),
        service.cpu_seconds() if service else 0.0,
        _cpu_self(),
        _cpu_pid(flooder_pid) if flooder_pid else 0.0,
        _machine_busy(),
    )
    run.recording = True
    t0 = perf_counter()
    await asyncio.sleep(seconds)
    run.recording = False
    w.seconds = perf_counter() - t0
    w.server_sys = _cpu_split(server.pid)[1] - sys0
    cpu1 = (
        server.cpu_seconds(),
        service.cpu_seconds() if service else 0.0,
        _cpu_self(),
        _cpu_pid(flooder_pid) if flooder_pid else 0.0,
        _machine_busy(),
    )
    w.server_cpu, w.service_cpu, w.client_cpu, w.flooder_cpu = (cpu1[i] - cpu[i] for i in range(4))
    w.other_cpu = max(
        0.0, cpu1[4] - cpu[4] - w.server_cpu - w.service_cpu - w.client_cpu - w.flooder_cpu
    )
    lat = sorted(run.lat)
    w.round_trips = len(lat)
    w.p50, w.p99, w.p999 = (_pct(lat, q) for q in (0.5, 0.99, 0.999))
    w.max = lat[-1] if lat else float("nan")
    per = [c.got - g for c, g in zip(run.clients, got0, strict=True)]
    w.per_client_min = min(per) / w.seconds
    w.per_client_max = max(per) / w.seconds
    w.refused = run.refused - refused0
    w.errors = dict(Counter(run.errors) - errors0)
    if min(per) == 0:
        raise BenchError(f"{label}: {per.count(0)} clients completed no round trip in the window")
    return w


def _own_cpu(
    server: ServerProcess, service: ServerProcess | None, flooder_pid: int | None
) -> float:
    return (
        server.cpu_seconds()
        + (service.cpu_seconds() if service else 0.0)
        + _cpu_self()
        + (_cpu_pid(flooder_pid) if flooder_pid else 0.0)
    )


async def wait_quiet(
    server: ServerProcess,
    service: ServerProcess | None,
    flooder_pid: int | None,
    max_other: float,
    limit: float,
) -> float:
    """Wait (at most ``limit`` s) for 1 s in which other processes used <= ``max_other`` of a CPU.

    The machine may be shared; CPU ticks are 10 ms, so 1 s keeps the estimate
    within a few percent. Returns the share seen last.
    """
    deadline = time.monotonic() + limit
    while True:
        m0, o0, t0 = _machine_busy(), _own_cpu(server, service, flooder_pid), perf_counter()
        await asyncio.sleep(1.0)
        m1, o1 = _machine_busy(), _own_cpu(server, service, flooder_pid)
        other = max(0.0, (m1 - m0) - (o1 - o0)) / (perf_counter() - t0)
        if other <= max_other or time.monotonic() > deadline:
            return other


async def measure_quietly(
    args: argparse.Namespace,
    run: Run,
    label: str,
    server: ServerProcess,
    service: ServerProcess | None = None,
    flooder_pid: int | None = None,
) -> Window:
    """Measure while the machine is quiet; repeat a noisy window (bounded), keep the quietest."""
    best: Window | None = None
    attempt = 0
    for attempt in range(args.attempts):  # noqa: B007 - used after the loop
        await wait_quiet(server, service, flooder_pid, args.max_other, args.quiet_wait)
        w = await measure(run, label, args.seconds, server, service, flooder_pid)
        if best is None or w.other_cpu < best.other_cpu:
            best = w
        if w.other_cpu / w.seconds <= args.max_other:
            break
        print(
            f"    {label}: other processes used {w.other_cpu / w.seconds:.0%} of a CPU "
            f"(> {args.max_other:.0%}); measuring again",
            flush=True,
        )
    assert best is not None
    best.noisy = attempt if best.other_cpu / best.seconds <= args.max_other else attempt + 1
    return best


# -- the servers -------------------------------------------------------------------


def start_echo_reference(workdir: Path) -> ServerProcess:
    port = free_port()
    argv = [sys.executable, str(BENCH_DIR / "echo_reference.py"), "--port", str(port)]
    return ServerProcess("echo-reference", argv, workdir / f"echo-ref-{port}.log", "listening on ")


def start_echo_service(workdir: Path, mode: str, cpu: int | None) -> tuple[ServerProcess, int]:
    port = free_port()
    argv = [sys.executable, str(BENCH_DIR / "echo_service.py"), "--port", str(port), "--mode", mode]
    if cpu is not None:
        argv += ["--cpu", str(cpu)]
    srv = ServerProcess("echo-service", argv, workdir / f"echo-svc-{port}.log", "listening on ")
    return srv, port


def start_gateway(
    workdir: Path, svc_port: int, extra: str, users: int, pipeline: int = 1,
    command: list[str] | None = None,
) -> tuple[ServerProcess, list[str], str]:
    """Start ``wsgate serve``; return it, cookies of users u1..u<users>, the flooders' cookie.

    ``command`` replaces ``python -m wsgate.cli`` (``--callgrind``: it under valgrind)."""
    port, api_port = free_port(), free_port()
    config = workdir / f"gateway-{port}.toml"
    text = GATEWAY_CONFIG.format(
        port=port,
        api_port=api_port,
        svc_port=svc_port,
        key=_cli("keys", "new"),
        pipeline=pipeline,
    )
    config.write_text(text + extra)
    cookies = [
        _cli("cookie", "--config", str(config), "--user", f"u{i + 1}", "--org", "acme")
        for i in range(users)
    ]
    flood_cookie = _cli("cookie", "--config", str(config), "--user", "flooder", "--org", "acme")
    argv = [*(command or [sys.executable, "-m", "wsgate.cli"]), "serve", "--config", str(config)]
    try:
        srv = ServerProcess("gateway", argv, workdir / f"gateway-{port}.log", "listening on ",
                            300 if command else START_TIMEOUT_S)  # fmt: skip
    except BenchError as exc:
        if "config" in str(exc) and extra:
            raise BenchError(f"the gateway refused the extra config:\n{extra}\n{exc}") from None
        raise
    srv.api_url = f"http://127.0.0.1:{api_port}"
    return srv, cookies, flood_cookie


# -- the flooders (a child process) ------------------------------------------------

FLOOD_WINDOW: Final = 64
"""Unanswered messages one flooder allows itself (the loopback holds no more)."""
FLOOD_CHUNK: Final = 32
"""Frames pre-encoded into one write."""
FLOOD_RECONNECTS: Final = 100
"""Reconnects per flooder, at most (each after FLOOD_RECONNECT_DELAY_S)."""
FLOOD_RECONNECT_DELAY_S: Final = 0.5


def _masked_frame(opcode: int, payload: bytes) -> bytes:
    """A final client frame with a zero mask key (RFC 6455 §5.3: any key is valid)."""
    n = len(payload)
    assert n < 126
    return bytes((0x80 | opcode, 0x80 | n)) + b"\0\0\0\0" + payload


def flood_chunk() -> tuple[bytes, Counter[str]]:
    """FLOOD_CHUNK frames: junk, unrouted, routed (in-flight/rate limited), binary, in turn."""
    kinds = [
        ("junk", 0x1, b"{not json at all"),
        ("unrouted", 0x1, b'{"type":"nowhere/NOTHING","payload":1,"meta":{"id":"f"}}'),
        ("routed", 0x1, b'{"type":"echo/FLOOD","payload":{"x":1},"meta":{"id":"f"}}'),
        ("binary", 0x2, b"\x00\x01\x02\x03"),
    ]
    out = bytearray()
    counts: Counter[str] = Counter()
    for i in range(FLOOD_CHUNK):
        name, op, body = kinds[i % len(kinds)]
        out += _masked_frame(op, body)
        counts[name] += 1
    return bytes(out), counts


class Flooder(WSListener):
    """One flooding connection: pre-encoded chunks, at most FLOOD_WINDOW unanswered."""

    def __init__(self, fl: FloodRun) -> None:
        self.fl = fl
        self.outstanding = 0
        self.paused = False
        self.welcomed = False
        self.scheduled = False
        self.answers_at_tick = 0
        self.answers = 0
        self.closed = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.wst = transport
        self.tr = transport.underlying_transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        op = frame.msg_type
        fl = self.fl
        if op is _TEXT:
            data = frame.get_payload_as_bytes()
            self.answers += 1
            self.outstanding -= 1
            if _ERROR in data:
                if _RATE_LIMITED in data:
                    cap = b"in flight" in data
                    fl.answers["RATE_LIMITED (in-flight cap)" if cap else "RATE_LIMITED"] += 1
                else:
                    code = data.split(b'"code":"', 1)[-1].split(b'"', 1)[0]
                    fl.answers[code.decode(errors="replace")[:32]] += 1
            elif _WELCOME in data:
                self.welcomed = True
                self.outstanding = 0
                fl.answers["WELCOME"] += 1
            else:
                fl.answers["other (PONG...)"] += 1
            self.maybe_send()
        elif op is _CLOSE:
            fl.closes[frame.get_close_code().value] += 1
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()

    def maybe_send(self) -> None:
        if (
            self.welcomed
            and not self.paused
            and not self.scheduled
            and self.outstanding <= FLOOD_WINDOW - FLOOD_CHUNK
            and not self.fl.stopping
        ):
            self.scheduled = True
            self.fl.loop.call_soon(self.send_chunk)

    def send_chunk(self) -> None:
        self.scheduled = False
        if self.fl.stopping or self.closed or self.paused:
            return
        self.tr.write(self.fl.chunk)
        self.outstanding += FLOOD_CHUNK
        self.fl.sent += FLOOD_CHUNK

    def tick(self) -> None:
        """No answer for a tick: assume the window's answers will never come, send anyway."""
        if self.welcomed and self.answers == self.answers_at_tick and self.outstanding > 0:
            self.fl.stalls += 1
            self.outstanding = 0
            self.maybe_send()
        self.answers_at_tick = self.answers

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.maybe_send()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.closed = True
        self.fl.gone(self)


class FloodRun:
    def __init__(self, url: str, headers: dict[str, str], deadline: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.url = url
        self.headers = headers
        self.deadline = deadline
        self.stopping = False
        self.chunk, self.chunk_counts = flood_chunk()
        self.sent = 0
        self.stalls = 0
        self.reconnects = 0
        self.connect_failures = 0
        self.answers: Counter[str] = Counter()
        self.closes: Counter[int] = Counter()
        self.live: set[Flooder] = set()
        self.max_reconnects = 0

    async def open_one(self) -> None:
        try:
            _, fld = await ws_connect(
                lambda: Flooder(self),
                self.url,
                extra_headers=self.headers,
                websocket_handshake_timeout=5,
                read_buffer_init_size=8192,
            )
        except Exception:
            self.connect_failures += 1
            if not self.stopping and self.connect_failures < self.max_reconnects:
                self.loop.call_later(FLOOD_RECONNECT_DELAY_S, self._reopen)
            return
        assert isinstance(fld, Flooder)
        self.live.add(fld)

    def _reopen(self) -> None:
        if not self.stopping:
            self.loop.create_task(self.open_one())

    def gone(self, fld: Flooder) -> None:
        self.live.discard(fld)
        if not self.stopping and self.reconnects < self.max_reconnects:
            self.reconnects += 1
            self.loop.call_later(FLOOD_RECONNECT_DELAY_S, self._reopen)

    async def run(self, n: int) -> dict[str, Any]:
        self.max_reconnects = n * FLOOD_RECONNECTS
        await asyncio.gather(*(self.open_one() for _ in range(n)))
        for _ in range(500):  # WELCOMEs, bounded (5 s)
            if sum(f.welcomed for f in self.live) >= n:
                break
            await asyncio.sleep(0.01)
        for f in self.live:
            f.maybe_send()
        print(json.dumps({"flooding": len(self.live)}), flush=True)
        t0 = perf_counter()
        stop = asyncio.Event()
        self.loop.add_signal_handler(signal.SIGTERM, stop.set)
        while time.monotonic() < self.deadline and not stop.is_set():
            await asyncio.sleep(0.05)
            for f in list(self.live):
                f.tick()
        self.stopping = True
        seconds = perf_counter() - t0
        for f in list(self.live):
            f.wst.disconnect(graceful=False)
        await asyncio.sleep(0.2)
        per_kind = {k: v * self.sent // FLOOD_CHUNK for k, v in self.chunk_counts.items()}
        return {
            "seconds": seconds,
            "sent": self.sent,
            "sent_by_kind": per_kind,
            "answers": dict(self.answers),
            "closes": {str(k): v for k, v in self.closes.items()},
            "reconnects": self.reconnects,
            "connect_failures": self.connect_failures,
            "stalls": self.stalls,
        }


async def flooder_main(args: argparse.Namespace) -> int:
    headers = {"Cookie": f"wsgate_session={args.cookie}"}
    fl = FloodRun(args.url, headers, time.monotonic() + args.flood_seconds)
    result = await fl.run(args.flood)
    print(json.dumps({"result": result}), flush=True)
    return 0


class FloodChild:
    """The flooder process, as seen from the bench: start, wait for it to flood, collect."""

    def __init__(self, url: str, cookie: str, n: int, seconds: float, nice: int) -> None:
        def preexec() -> None:
            if CLIENT_CPU in os.sched_getaffinity(0) and len(os.sched_getaffinity(0)) > 1:
                os.sched_setaffinity(0, {CLIENT_CPU})
            os.nice(nice)

        argv = [
            sys.executable, str(Path(__file__).resolve()), "--flooder",
            "--url", url, "--cookie", cookie, "--flood", str(n),
            "--flood-seconds", f"{seconds:.1f}",
        ]  # fmt: skip
        self.seconds = seconds
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=preexec,
            text=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def flooding(self) -> int:
        """Wait (bounded) for the child to say its flooders are connected."""
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), 20)
        if not line:
            err = self.proc.stderr.read()[-1500:] if self.proc.stderr else ""
            raise BenchError(f"flooder exited: {err}")
        return int(json.loads(line)["flooding"])

    async def result(self) -> dict[str, Any]:
        """Stop the flood (SIGTERM) and collect what the child counted."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = await asyncio.to_thread(self.proc.communicate, None, self.seconds + 30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise BenchError("flooder did not stop") from None
        for line in out.splitlines():
            if line.startswith('{"result"'):
                result: dict[str, Any] = json.loads(line)["result"]
                return result
        raise BenchError(f"flooder gave no result (exit {self.proc.returncode}): {err[-1500:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


# -- one server --------------------------------------------------------------------


@dataclass
class Outcome:
    quiet: Window
    flood: Window | None = None
    flooders: int = 0


async def run_server(
    kind: str, args: argparse.Namespace, workdir: Path, obs: str | None = None
) -> Outcome:
    """One server's windows; ``obs`` (gateway): a key of ``OBS_CONFIG`` added to its config,
    and with ``"on"`` its ``/metrics`` scraped every ``--scrape-s`` seconds meanwhile."""
    gateway = kind == "gateway"
    service: ServerProcess | None = None
    headers: list[dict[str, str]] = [{}]
    flood_cookie = ""
    if gateway:
        service, svc_port = start_echo_service(workdir, args.service, args.service_cpu)
        extra = (LIMITS_CONFIG if args.limits else "") + (
            args.extra_config.read_text() if args.extra_config else ""
        ) + ("" if obs is None else "\n" + OBS_CONFIG[obs])
        try:
            users = -(-args.clients // CLIENTS_PER_USER)
            command = None
            if args.callgrind is not None:
                args.callgrind_runs += 1
                out = args.callgrind / f"gateway-{obs}-{args.callgrind_runs}.callgrind"
                command = callgrind_command(out)
            srv, cookies, flood_cookie = start_gateway(
                workdir, svc_port, extra, users, args.pipeline, command
            )
        except BaseException:
            service.stop()
            raise
        headers = [{"Cookie": f"wsgate_session={c}"} for c in cookies]
    else:
        srv = start_echo_reference(workdir)
    run = Run(gateway=gateway, payload_bytes=args.payload)
    flood: FloodChild | None = None
    prof = None
    scraper = Scraper(srv.api_url, args.scrape_s) if obs == "on" else None
    try:
        await run.connect(srv.url, args.clients, headers)
        if run.connect_retries:
            print(f"    {run.connect_retries} handshakes refused and retried", flush=True)
        gc.collect()
        gc.freeze()
        run.start()
        await asyncio.sleep(args.warmup)
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
            prof = start_profiler(srv.pid, args.profile / f"{kind}-{args.service}.txt")
            await asyncio.sleep(1.0)  # py-spy attaches
        counted = gateway and args.callgrind is not None
        if counted:  # instructions from here to the end of the window, per round trip made
            got0 = sum(c.got for c in run.clients)
            callgrind_toggle(srv.pid, on=True)
        quiet = await measure_quietly(args, run, kind, srv, service)
        if counted:
            callgrind_toggle(srv.pid, on=False)
            made = sum(c.got for c in run.clients) - got0
            quiet.ir_per_rt = callgrind_last_ir(out) / max(made, 1)
        if prof is not None:
            stop_profiler(prof)
            prof = None
        outcome = Outcome(quiet)
        if gateway and args.flood:
            flood = FloodChild(
                srv.url,
                flood_cookie,
                args.flood,
                # a hard bound; normally stopped (SIGTERM) after the window
                args.warmup + args.attempts * (args.seconds + args.quiet_wait + 2) + 5,
                args.flood_nice,
            )
            outcome.flooders = await flood.flooding()
            await asyncio.sleep(args.warmup)
            if args.profile is not None:
                prof = start_profiler(srv.pid, args.profile / f"{kind}-flood.txt")
                await asyncio.sleep(1.0)
            w = await measure_quietly(args, run, "gateway+flood", srv, service, flood.pid)
            if prof is not None:
                stop_profiler(prof)
                prof = None
            w.flood = await flood.result()
            outcome.flood = w
        await run.stop()
        if run.closes:
            raise BenchError(f"well-behaved clients were closed: {dict(run.closes)}")
        if not srv.alive():
            raise BenchError(f"{kind} died")
        return outcome
    except BenchError as exc:
        raise BenchError(f"{kind}: {exc}\n--- {kind} log tail ---\n{srv.log_tail(1500)}") from None
    finally:
        gc.unfreeze()
        if prof is not None:
            stop_profiler(prof)
        if flood is not None:
            flood.kill()
        await run.close()
        if scraper is not None:
            scraper.stop()
            print(f"    /metrics scraped {scraper.scrapes} times, {scraper.failures} failed")
        srv.stop()
        if service is not None:
            service.stop()
        await asyncio.sleep(0.3)


# -- report --------------------------------------------------------------------------


def _ms(x: float) -> str:
    return f"{x * 1e3:.2f}"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "nan"


def _rows(w: Window) -> list[tuple[str, float, str]]:
    s = w.seconds
    return [
        ("round trips/s", w.rate, "{:,.0f}"),
        ("latency p50 (ms)", w.p50 * 1e3, "{:.2f}"),
        ("latency p99 (ms)", w.p99 * 1e3, "{:.2f}"),
        ("latency p99.9 (ms)", w.p999 * 1e3, "{:.2f}"),
        ("latency max (ms)", w.max * 1e3, "{:.2f}"),
        ("server CPU (% of a core)", w.server_cpu / s * 100, "{:.0f}"),
        ("server CPU us/round trip", w.per_rt_us(w.server_cpu), "{:.1f}"),
        (
            "  of which kernel (%)",
            w.server_sys / w.server_cpu * 100 if w.server_cpu else 0,
            "{:.0f}",
        ),
        ("server rt/s per core (est.)", 1e6 / w.per_rt_us(w.server_cpu), "{:,.0f}"),
        ("service CPU (% of a core)", w.service_cpu / s * 100, "{:.0f}"),
        ("service CPU us/round trip", w.per_rt_us(w.service_cpu), "{:.1f}"),
        ("clients CPU (% of a core)", w.client_cpu / s * 100, "{:.0f}"),
        ("clients CPU us/round trip", w.per_rt_us(w.client_cpu), "{:.1f}"),
        (
            "all bench processes us/rt",
            w.per_rt_us(w.server_cpu + w.service_cpu + w.client_cpu + w.flooder_cpu),
            "{:.1f}",
        ),
        ("flooders CPU (% of a core)", w.flooder_cpu / s * 100, "{:.0f}"),
        ("other CPU (% of a core)", w.other_cpu / s * 100, "{:.0f}"),
        ("per-client rt/s min", w.per_client_min, "{:.0f}"),
        ("per-client rt/s max", w.per_client_max, "{:.0f}"),
        ("refused (RATE_LIMITED)", w.refused, "{:.0f}"),
        ("other errors", sum(w.errors.values()), "{:.0f}"),
        ("noisy windows repeated", w.noisy, "{:.0f}"),
    ]


def _table(title: str, a: Window, b: Window, names: tuple[str, str, str]) -> None:
    print(title)
    hdr = f"{'metric':<28} {names[0]:>12} {names[1]:>12} {names[2]:>8}"
    print(hdr)
    print("-" * len(hdr))
    for (name, x, fmt), (_, y, _) in zip(_rows(a), _rows(b), strict=True):
        print(f"{name:<28} {fmt.format(x):>12} {fmt.format(y):>12} {_ratio(x, y):>8}")
    print()


def report(args: argparse.Namespace, gw: Outcome, ref: Outcome) -> None:
    print()
    _table(
        f"round trips through a service: K={args.clients} closed-loop clients, "
        f"{args.payload}-byte payload, {args.seconds:.0f} s window, service={args.service}, "
        f"pipeline={args.pipeline}"
        f"{', limits' if args.limits else ''}",
        gw.quiet,
        ref.quiet,
        ("gateway", "reference", "gw/ref"),
    )
    rr = gw.quiet.rate / ref.quiet.rate
    pr = gw.quiet.p99 / ref.quiet.p99
    if args.callgrind is not None:
        print(f"callgrind instructions per round trip (gateway): {gw.quiet.ir_per_rt:,.0f}")
    print(
        f"round trips/s: gateway = {rr:.2f} x reference (target >= 0.25): "
        f"{'OK' if rr >= 0.25 else 'BELOW TARGET'}"
    )
    print(
        f"p99 latency:   gateway = {pr:.2f} x reference (target < 4): "
        f"{'OK' if pr < 4 else 'ABOVE TARGET'}"
    )
    for w in (gw.quiet, gw.flood):
        if w is not None and (w.errors or w.refused):
            print(f"  {w.label}: well-behaved refused {w.refused}, errors {w.errors}")
    if gw.flood is None:
        return
    f = gw.flood
    print()
    _table(
        f"flood cost: the same gateway, K={args.clients} well-behaved clients, "
        f"then + F={args.flood} flooders ({gw.flooders} connected)",
        f,
        gw.quiet,
        ("with flood", "without", "ratio"),
    )
    fr = f.flood or {}
    secs = fr.get("seconds") or 1.0
    print(
        f"flooders: sent {fr.get('sent', 0):,} frames in {secs:.1f} s "
        f"({fr.get('sent', 0) / secs:,.0f}/s; by kind {fr.get('sent_by_kind')})"
    )
    print(f"  answers: {fr.get('answers')}")
    print(
        f"  closes {fr.get('closes')}, reconnects {fr.get('reconnects')}, "
        f"connect failures {fr.get('connect_failures')}, stalled windows {fr.get('stalls')}"
    )
    answers = fr.get("answers") or {}
    if args.limits and not any(
        k.startswith("RATE_LIMITED") and "in-flight" not in k for k in answers
    ):
        print("  NOTE: --limits was accepted, but no flooder message was refused by a rate limit")
    print(
        f"well-behaved under flood: round trips/s x{f.rate / gw.quiet.rate:.2f}, "
        f"p99 x{f.p99 / gw.quiet.p99:.2f}"
    )


# -- the gateway's HTTP client against aiohttp's ----------------------------------------


@dataclass
class ClientWindow:
    """One window of K closed-loop callers posting to the echo service."""

    label: str
    calls: int
    seconds: float
    cpu: float
    latencies: array[float]
    service_cpu: float = 0.0

    @property
    def service_us(self) -> float:
        return self.service_cpu / self.calls * 1e6 if self.calls else 0.0

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0

    @property
    def cpu_us(self) -> float:
        return self.cpu / self.calls * 1e6 if self.calls else 0.0


async def _client_window(
    label: str, post: Any, k: int, warmup: float, seconds: float, service: ServerProcess
) -> ClientWindow:
    """K callers, each posting and awaiting its answer in a loop; measured after ``warmup``."""
    from wsgate.routing.signature import sign

    body = json.dumps(
        {"action": {"type": "echo/PING", "payload": {"text": "x" * 80}},
         "context": {"connectionId": "n1.bench", "userId": "u1", "hub": "acme"}}
    ).encode()
    lat = array("d")
    state = {"measuring": False, "calls": 0, "stop": False}
    loop = asyncio.get_running_loop()

    async def caller() -> None:
        for _ in range(10**9):  # until stopped
            if state["stop"]:
                return
            t0 = perf_counter()
            status = await post(body, sign("bench-secret", body, int(time.time())))
            if status != 200:
                raise BenchError(f"{label}: the echo service answered {status}")
            if state["measuring"]:
                lat.append(perf_counter() - t0)
                state["calls"] += 1

    tasks = [loop.create_task(caller()) for _ in range(k)]
    try:
        await asyncio.sleep(warmup)  # the warm-up's length, not a synchronization
        state["measuring"] = True
        c0, s0, t0 = _cpu_self(), service.cpu_seconds(), perf_counter()
        await asyncio.sleep(seconds)  # the window's length
        c1, s1, t1 = _cpu_self(), service.cpu_seconds(), perf_counter()
        state["measuring"] = False
        calls = int(state["calls"])
    finally:
        state["stop"] = True
        done, _ = await asyncio.wait(tasks, timeout=10)
        for t in tasks:
            t.cancel()
        for t in done:
            if not t.cancelled() and t.exception() is not None:
                raise BenchError(f"{label}: {t.exception()!r}")
    return ClientWindow(label, calls, t1 - t0, c1 - c0, lat, s1 - s0)


async def compare_clients(args: argparse.Namespace, workdir: Path) -> list[ClientWindow]:
    """The hand-written pool (wsgate.routing.http1) and aiohttp's client, interleaved.

    This process (CPU 1) posts straight to the echo service (pinned to the
    other CPU: the gateway is not running then); the figure that matters is
    this process's CPU per call, the client's cost.
    """
    import aiohttp

    from wsgate.routing.http1 import Http1Client

    service, port = start_echo_service(workdir, args.service, 0 if args.service_cpu == 1 else 1)
    url = f"http://127.0.0.1:{port}/actions"
    windows: list[ClientWindow] = []
    try:
        pool = Http1Client()
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=args.clients, limit_per_host=args.clients),
            skip_auto_headers=("User-Agent",),
        )
        loop = asyncio.get_running_loop()

        async def via_pool(body: bytes, sig: str) -> int:
            headers = b"X-Wsgate-Signature: %s\r\n" % sig.encode()
            answer = await pool.post(url, headers, body, loop.time() + 5)
            return int(answer[0])

        async def via_aiohttp(body: bytes, sig: str) -> int:
            async with session.post(
                url, data=body,
                headers={"Content-Type": "application/json", "X-Wsgate-Signature": sig},
            ) as resp:
                await resp.read()
                return resp.status

        try:
            for round_ in range(args.client_rounds):
                for label, post in (("pool", via_pool), ("aiohttp", via_aiohttp)):
                    w = await _client_window(
                        label, post, args.clients, args.warmup, args.seconds, service
                    )
                    print(f"    {label} #{round_ + 1}: {w.rate:,.0f} calls/s, "
                          f"p99 {_ms(w.pct(0.99))} ms, {w.cpu_us:.1f} us CPU/call, "
                          f"service {w.service_us:.1f} us/call", flush=True)
                    windows.append(w)
        finally:
            await pool.aclose()
            await session.close()
    finally:
        service.stop()
    return windows


def report_clients(args: argparse.Namespace, windows: list[ClientWindow]) -> None:
    def median(label: str, key: Any) -> float:
        xs = sorted(key(w) for w in windows if w.label == label)
        return xs[len(xs) // 2]

    print()
    print(f"the gateway's HTTP client: K={args.clients} callers straight to the echo service "
          f"({args.service}), {args.client_rounds} interleaved windows each, medians")
    hdr = f"{'metric':<28} {'pool':>12} {'aiohttp':>12} {'pool/aio':>9}"
    print(hdr)
    print("-" * len(hdr))
    rows: list[tuple[str, Any, str]] = [
        ("calls/s", lambda w: w.rate, "{:,.0f}"),
        ("latency p50 (ms)", lambda w: w.pct(0.5) * 1e3, "{:.2f}"),
        ("latency p99 (ms)", lambda w: w.pct(0.99) * 1e3, "{:.2f}"),
        ("client CPU us/call", lambda w: w.cpu_us, "{:.1f}"),
        ("service CPU us/call", lambda w: w.service_us, "{:.1f}"),
    ]
    for name, key, fmt in rows:
        a, b = median("pool", key), median("aiohttp", key)
        print(f"{name:<28} {fmt.format(a):>12} {fmt.format(b):>12} {_ratio(a, b):>9}")
    cpu = median("aiohttp", lambda w: w.cpu_us) / median("pool", lambda w: w.cpu_us)
    print(f"client CPU per call: aiohttp = {cpu:.2f} x the pool (keep the pool at >= 1.3): "
          f"{'KEEP' if cpu >= 1.3 else 'BELOW 1.3'}")


async def amain(args: argparse.Namespace) -> int:
    pinned = pin_self()
    print(
        f"wsgate round-trip bench: K={args.clients} window={args.seconds:.0f}s "
        f"warmup={args.warmup:.0f}s service={args.service} (CPU {args.service_cpu}) "
        f"pipeline={args.pipeline} "
        f"flood={args.flood} limits={args.limits} cpus={sorted(os.sched_getaffinity(0))} "
        f"clients pinned={pinned}",
        flush=True,
    )
    print(f"  gateway source: {gateway_source()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="wsgate-rt-") as tmp:
        workdir = Path(tmp)
        if args.http_clients:
            print("  the gateway's HTTP client against aiohttp's ...", flush=True)
            report_clients(args, await compare_clients(args, workdir))
            if args.http_clients_only:
                return 0
        if args.obs == "both":
            report_obs(args, await compare_obs(args, workdir))
            return 0
        print("  gateway ...", flush=True)
        gw = await run_server("gateway", args, workdir, args.obs)
        print(f"    {gw.quiet.rate:,.0f} rt/s, p99 {_ms(gw.quiet.p99)} ms", flush=True)
        if gw.flood is not None:
            print(f"    flood: {gw.flood.rate:,.0f} rt/s, p99 {_ms(gw.flood.p99)} ms", flush=True)
        print("  reference ...", flush=True)
        ref = await run_server("reference", args, workdir)
        print(f"    {ref.quiet.rate:,.0f} rt/s, p99 {_ms(ref.quiet.p99)} ms", flush=True)
    report(args, gw, ref)
    return 0


async def compare_obs(args: argparse.Namespace, workdir: Path) -> dict[str, list[Window]]:
    """``--obs both``: the gateway with observability off and on, one fresh gateway (and
    service) per window, alternating off, on, on, off, ... for ``--obs-rounds`` of each."""
    got: dict[str, list[Window]] = {"off": [], "on": []}
    for i in range(args.obs_rounds):
        for obs in ("off", "on") if i % 2 == 0 else ("on", "off"):
            print(f"  round {i + 1}: gateway, observability {obs} ...", flush=True)
            w = (await run_server("gateway", args, workdir, obs)).quiet
            got[obs].append(w)
            print(
                f"    {w.rate:,.0f} rt/s, server {w.per_rt_us(w.server_cpu):.1f} us/rt, "
                f"p99 {_ms(w.p99)} ms, other CPU {w.other_cpu / w.seconds:.0%}",
                flush=True,
            )
    return got


def report_obs(args: argparse.Namespace, got: dict[str, list[Window]]) -> None:
    def med(obs: str, key: Any) -> float:
        return statistics.median(key(w) for w in got[obs])

    print(
        f"\nround trips, observability (/metrics scraped every {args.scrape_s} s, JSON logs) "
        f"on against off; K={args.clients}, {args.seconds:.0f} s windows, median of "
        f"{args.obs_rounds} each, alternating"
    )
    for obs in ("off", "on"):
        print(
            f"  {obs:>3}: {med(obs, lambda w: w.rate):>9,.0f} rt/s, server "
            f"{med(obs, lambda w: w.per_rt_us(w.server_cpu)):.2f} us/rt (by window: "
            f"{[round(w.per_rt_us(w.server_cpu), 1) for w in got[obs]]}), p99 "
            f"{_ms(med(obs, lambda w: w.p99))} ms"
        )
    cpu = [
        on.per_rt_us(on.server_cpu) / off.per_rt_us(off.server_cpu)
        for on, off in zip(got["on"], got["off"], strict=True)
    ]
    if args.callgrind is not None:
        ir = {obs: med(obs, lambda w: w.ir_per_rt) for obs in ("off", "on")}
        print(
            f"  callgrind instructions per round trip: off {ir['off']:,.0f}, on {ir['on']:,.0f}"
            f" (by window: off {[round(w.ir_per_rt) for w in got['off']]}, on "
            f"{[round(w.ir_per_rt) for w in got['on']]}); on/off {ir['on'] / ir['off']:.4f}"
        )
    print(
        f"  on/off server CPU per round trip: {statistics.median(cpu):.3f} (median of paired "
        f"ratios; by pair {[round(x, 3) for x in cpu]}); round trips/s "
        f"{med('on', lambda w: w.rate) / med('off', lambda w: w.rate):.3f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description="wsgate round-trip and flood benchmark")
    parser.add_argument("--clients", type=int, default=100, help="K well-behaved clients (100)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring window (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up before a window (2)")
    parser.add_argument("--payload", type=int, default=100, help="payload JSON bytes (100)")
    parser.add_argument(
        "--service", choices=("sdk", "sdk-sync", "sdk-aiohttp", "sdk-uvicorn", "raw", "lean"),
        default="sdk",
        help="echo service: the SDK on its httptools server (default; sdk-sync: its handler a "
        "plain def), on aiohttp, under uvicorn; a bare aiohttp handler, or a bare asyncio one",
    )  # fmt: skip
    parser.add_argument(
        "--pipeline", type=int, default=1, metavar="N",
        help="the echo service's pipeline setting: requests per connection in flight (1)",
    )  # fmt: skip
    parser.add_argument(
        "--service-cpu", type=int, default=CLIENT_CPU,
        help=f"pin the echo service to this CPU ({CLIENT_CPU}; -1: not pinned)",
    )  # fmt: skip
    parser.add_argument("--flood", type=int, default=0, metavar="F", help="flooding clients (0)")
    parser.add_argument(
        "--flood-nice", type=int, default=10, help="nice of the flooder process (10)"
    )
    parser.add_argument(
        "--limits", action="store_true", help="add a default per-connection rate limit"
    )
    parser.add_argument("--extra-config", type=Path, help="TOML appended to the gateway's config")
    parser.add_argument(
        "--max-other", type=float, default=0.25,
        help="measure again when other processes used more than this share of a CPU (0.25)",
    )  # fmt: skip
    parser.add_argument("--attempts", type=int, default=3, help="windows tried per measurement (3)")
    parser.add_argument(
        "--quiet-wait", type=float, default=30.0,
        help="wait at most this long for a quiet machine before a window (30 s)",
    )  # fmt: skip
    parser.add_argument("--profile", type=Path, metavar="DIR", help="py-spy the servers into DIR")
    parser.add_argument(
        "--http-clients", action="store_true",
        help="first compare the gateway's HTTP client (the pool) with aiohttp's, same service",
    )  # fmt: skip
    parser.add_argument(
        "--http-clients-only", action="store_true", help="--http-clients, and nothing else"
    )
    parser.add_argument(
        "--client-rounds", type=int, default=3, help="windows per HTTP client, interleaved (3)"
    )
    parser.add_argument(
        "--obs", choices=("on", "off", "both"),
        help="the gateway with /metrics and JSON logs on, off, or both: alternating windows "
        "of each, their server CPU per round trip compared (no reference, no flood)",
    )  # fmt: skip
    parser.add_argument("--obs-rounds", type=int, default=5, help="--obs both: windows each (5)")
    parser.add_argument(
        "--callgrind", type=Path, metavar="DIR",
        help="run the gateway(s) under callgrind and count their instructions per round trip "
        "over each window (slow: use small --clients); dumps to DIR. Load-independent: "
        "with --obs both per observability setting, without it for the plain gateway "
        "(e.g. a base commit that has no [metrics] section)",
    )  # fmt: skip
    parser.add_argument(
        "--scrape-s", type=float, default=1.0,
        help="seconds between /metrics scrapes of a gateway with --obs on (1.0)",
    )  # fmt: skip
    # The flooder child process:
    parser.add_argument("--flooder", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--cookie", help=argparse.SUPPRESS)
    parser.add_argument("--flood-seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.service_cpu is not None and args.service_cpu < 0:
        args.service_cpu = None
    if args.flooder:
        return uvloop.run(flooder_main(args))
    args.http_clients = args.http_clients or args.http_clients_only
    args.callgrind_runs = 0
    if args.callgrind is not None:
        if args.flood or args.profile is not None:
            parser.error("--callgrind goes without --flood and --profile")
        args.callgrind.mkdir(parents=True, exist_ok=True)
        args.attempts = 1  # a window measured again would be counted twice
    if not 1 <= args.clients <= 1000 or not 0 <= args.flood <= 1000:
        parser.error("--clients must be in 1..1000 and --flood in 0..1000")
    if not 0.5 <= args.seconds <= 120:
        parser.error("--seconds must be in 0.5..120")
    try:
        return uvloop.run(amain(args))
    except BenchError as exc:
        print(f"\nroundtrip: FAILED: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
