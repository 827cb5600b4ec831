"""gRPC clients and echo servers side by side: CPU µs per unary call (issue 10).

Which gRPC client should the gateway call services with, and which echo
service should ``bench/procedures.py`` put behind it? For every server in
``--servers`` (started on CPU 1) and every client in ``--clients`` (this
process, pinned to CPU 0), K concurrent callers (default 100) call
``bench.v1.Echo/Echo`` with the bench payload (``{"pad": 90 x "x"}``) and
the gateway's five metadata pairs for ``--seconds``; the (server, client)
pairs are interleaved over ``--rounds`` rounds. Reported per pair, medians:
calls/s, the client's CPU µs per call (this process, all its threads) and
the server's (its process), and which side was saturated (≥ 85 % of a core).

Clients:

- ``aio``: grpcio's ``grpc.aio`` (what the gateway used before);
- ``sync``: grpcio's synchronous client, ``.future()`` per call, its result
  handed to the event loop with ``call_soon_threadsafe``;
- ``h2``: the ``h2`` library (python-hyper) on an asyncio Protocol;
- ``wsgate``: :class:`wsgate.routing.grpc_channel.Channel` (our HTTP/2 client,
  hpack for the answers' headers), what the gateway uses now.

Servers: ``aio`` (grpcio's ``grpc.aio`` server), ``sync`` (grpcio's sync
server, 4 threads), ``node`` (@grpc/grpc-js, ``bench/anchors/grpc_echo.mjs``;
needs ``sh bench/anchors/install.sh``), ``cpp`` (gRPC C++'s async API, one
thread, ``bench/anchors/grpc_echo.cc``, built on first use as
``procedures.py`` builds it). Every one serves reflection.

Usage::

    flock /tmp/wsgate-bench.lock python bench/grpc_clients.py [--rounds 3] [--seconds 3]
        [--clients aio,sync,h2,wsgate] [--servers aio,sync,node,cpp] [-k 100]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

import roundtrip as rt
from _servers import BENCH_DIR, BenchError, ServerProcess, free_port, pin_self

PATH = "/bench.v1.Echo/Echo"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
METADATA: tuple[tuple[str, str], ...] = (
    ("wsgate-connection-id", "n1.AbCdEf"), ("wsgate-user", "u1"),
    ("wsgate-organization", "acme"), ("wsgate-request-id", "1"),
    ("traceparent", TRACEPARENT),
)  # fmt: skip
SATURATED = 0.85


def start_server(kind: str, port: int, workdir: Path) -> ServerProcess:
    if kind == "cpp":
        from procedures import CPP_ECHO, cpp_echo_reason

        reason = cpp_echo_reason()
        if reason is not None:
            raise BenchError(f"cpp server: {reason}")
        argv = ["taskset", "-c", "1", str(CPP_ECHO), str(port)]
    elif kind == "node":
        argv = ["node", str(BENCH_DIR / "anchors" / "grpc_echo.mjs"), str(port)]
        if not (BENCH_DIR / ".anchors" / "grpc" / "node_modules").is_dir():
            raise BenchError("node server: run `sh bench/anchors/install.sh` first")
        argv = ["taskset", "-c", "1", *argv]
    else:
        mode = "grpc" if kind == "aio" else "grpc-sync"
        argv = [sys.executable, str(BENCH_DIR / "echo_procedures.py"), "--mode", mode,
                "--port", str(port), "--cpu", "1"]
    return ServerProcess(f"echo-{kind}", argv, workdir / f"echo-{kind}.log",
                         "echo-grpc: listening on ")


# Clients: each makes ``call() -> Awaitable`` and a closer. --------------------------------


async def client_aio(port: int, pad: Any) -> tuple[Callable[[], Awaitable[Any]], Any]:
    import grpc.aio

    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    rpc = channel.unary_unary(PATH, request_serializer=lambda m: m.SerializeToString(),
                              response_deserializer=pad.FromString)
    request = pad(pad="x" * 90)
    return (lambda: rpc(request, timeout=5, metadata=METADATA)), channel.close


async def client_sync(port: int, pad: Any) -> tuple[Callable[[], Awaitable[Any]], Any]:
    import grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    rpc = channel.unary_unary(PATH, request_serializer=lambda m: m.SerializeToString(),
                              response_deserializer=pad.FromString)
    request = pad(pad="x" * 90)
    loop = asyncio.get_running_loop()

    def call() -> Awaitable[Any]:
        fut = loop.create_future()
        grpc_fut = rpc.future(request, timeout=5, metadata=METADATA)

        def done(f: Any) -> None:
            loop.call_soon_threadsafe(_settle, fut, f)

        grpc_fut.add_done_callback(done)
        return fut

    async def close() -> None:
        channel.close()

    return call, close


def _settle(fut: asyncio.Future[Any], grpc_fut: Any) -> None:
    if not fut.done():
        try:
            fut.set_result(grpc_fut.result())
        except Exception as exc:
            fut.set_exception(exc)


class _H2Proto(asyncio.Protocol):
    def __init__(self) -> None:
        import h2.config
        import h2.connection

        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.waiting: dict[int, list[Any]] = {}
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(1 << 22)
        transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        import h2.events as ev

        for event in self.conn.receive_data(data):
            if isinstance(event, ev.DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                self.waiting[event.stream_id][1] = event.data
            elif isinstance(event, ev.TrailersReceived):
                state = self.waiting.pop(event.stream_id)
                status = dict(event.headers).get(b"grpc-status")
                if status == b"0":
                    state[0].set_result(state[1])
                else:
                    state[0].set_exception(RuntimeError(f"grpc-status {status!r}"))
            elif isinstance(event, ev.ConnectionTerminated):
                print("h2: GOAWAY", event, flush=True)
            elif isinstance(event, ev.StreamReset):
                state = self.waiting.pop(event.stream_id, None)
                if state is not None:
                    state[0].set_exception(RuntimeError("reset"))
        self.transport.write(self.conn.data_to_send())


async def client_h2(port: int, pad: Any) -> tuple[Callable[[], Awaitable[Any]], Any]:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(_H2Proto, "127.0.0.1", port)
    authority = f"127.0.0.1:{port}".encode()
    base = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", PATH.encode()),
            (b":authority", authority), (b"content-type", b"application/grpc"),
            (b"te", b"trailers"), (b"grpc-timeout", b"5000m")]
    headers = base + [(k.encode(), v.encode()) for k, v in METADATA]

    def call() -> Awaitable[Any]:
        body = pad(pad="x" * 90).SerializeToString()
        conn = proto.conn
        sid = conn.get_next_available_stream_id()
        fut = loop.create_future()
        proto.waiting[sid] = [fut, b""]
        conn.send_headers(sid, headers)
        conn.send_data(sid, b"\x00" + len(body).to_bytes(4, "big") + body, end_stream=True)
        proto.transport.write(conn.data_to_send())
        return _decode(fut, pad)

    async def close() -> None:
        proto.transport.close()

    return call, close


async def _decode(fut: Awaitable[bytes], pad: Any) -> Any:
    data = await fut
    return pad.FromString(data[5:])


async def client_wsgate(port: int, pad: Any) -> tuple[Callable[[], Awaitable[Any]], Any]:
    from wsgate.routing.grpc_channel import Channel
    from wsgate.routing.grpc_h2 import metadata_block, timeout_header

    channel = Channel(f"127.0.0.1:{port}")

    async def call() -> Any:
        body = pad(pad="x" * 90).SerializeToString()
        block = metadata_block(METADATA) + timeout_header(5.0)
        return pad.FromString(await channel.unary(PATH, body, block, 5.0))

    return call, channel.aclose


CLIENTS = {"aio": client_aio, "sync": client_sync, "h2": client_h2, "wsgate": client_wsgate}


async def window(
    call: Callable[[], Awaitable[Any]], server: ServerProcess, k: int, seconds: float
) -> tuple[float, float, float, float, float]:
    """K callers for ``seconds`` after a 1 s warm-up: calls/s, client µs, server µs, shares."""
    state = {"calls": 0, "stop": False, "errors": 0}

    async def caller() -> None:
        for _ in range(10**9):  # until stopped
            if state["stop"]:
                return
            try:
                await call()
            except Exception:
                state["errors"] += 1
                if state["errors"] > 100:
                    raise
            state["calls"] += 1

    tasks = [asyncio.get_running_loop().create_task(caller()) for _ in range(k)]
    try:
        await asyncio.sleep(1.0)  # the warm-up's length
        n0, c0, s0, t0 = state["calls"], rt._cpu_self(), server.cpu_seconds(), time.perf_counter()
        await asyncio.sleep(seconds)  # the window's length
        n1, c1, s1, t1 = state["calls"], rt._cpu_self(), server.cpu_seconds(), time.perf_counter()
    finally:
        state["stop"] = True
        await asyncio.wait(tasks, timeout=10)
        for t in tasks:
            t.cancel()
    if state["errors"]:
        raise BenchError(f"{state['errors']} calls failed")
    calls = max(1, n1 - n0)
    span = t1 - t0
    return (calls / span, (c1 - c0) / calls * 1e6, (s1 - s0) / calls * 1e6,
            (c1 - c0) / span, (s1 - s0) / span)


async def run(args: argparse.Namespace) -> None:
    from echo_procedures import _pad_class

    pad = _pad_class()
    pin_self(0)
    servers = args.servers.split(",")
    clients = args.clients.split(",")
    results: dict[tuple[str, str], list[tuple[float, ...]]] = {}
    with tempfile.TemporaryDirectory(prefix="wsgate-grpc-clients-") as tmp:
        procs = {s: start_server(s, free_port(), Path(tmp)) for s in servers}
        try:
            made = {}
            for s, proc in procs.items():
                port = int(proc.url.rsplit(":", 1)[1])
                for c in clients:
                    made[s, c] = await CLIENTS[c](port, pad)
            for r in range(args.rounds):
                order = list(made)
                order = order[r % len(order):] + order[: r % len(order)]
                for key in order:
                    figures = await window(made[key][0], procs[key[0]], args.k, args.seconds)
                    results.setdefault(key, []).append(figures)
                    print(f"round {r + 1}: server {key[0]:5} client {key[1]:7} "
                          f"{figures[0]:8.0f} calls/s  client {figures[1]:6.1f} µs  "
                          f"server {figures[2]:6.1f} µs", flush=True)
            for _, close in made.values():
                await close()
        finally:
            for proc in procs.values():
                proc.stop()
    print(f"\nmedians of {args.rounds} rounds, K = {args.k}, {args.seconds} s windows:")
    print("| server | client | calls/s | client µs/call | server µs/call | saturated |")
    print("|---|---|---:|---:|---:|---|")
    for (s, c), rows in results.items():
        med = [statistics.median(col) for col in zip(*rows, strict=True)]
        sat = [n for n, share in (("client", med[3]), ("server", med[4])) if share >= SATURATED]
        print(f"| {s} | {c} | {med[0]:,.0f} | {med[1]:.1f} | {med[2]:.1f} | "
              f"{', '.join(sat) or 'none'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("-k", type=int, default=100, help="concurrent callers")
    parser.add_argument("--clients", default="aio,sync,h2,wsgate")
    parser.add_argument("--servers", default="aio,sync,node,cpp")
    args = parser.parse_args()
    try:
        uvloop.run(run(args))
    except BenchError as exc:
        sys.exit(f"grpc_clients: {exc}")


if __name__ == "__main__":
    main()
