"""The echo service's own cost per request, without the gateway (issue 14, item 5).

Drives ``bench/echo_service.py --mode M`` (the SDK's built-in server ``sdk``,
``lean``, ...) straight from this process: K keep-alive connections, each
writing P requests at once (one write, as the gateway's pool does with
``pipeline = P``) and waiting for the P answers before the next burst. The
requests are the gateway's own: its head (``Host``, ``Content-Type``,
``User-Agent``, ``Content-Length``, ``X-Wsgate-Connection-Id``, ``traceparent``,
``X-Wsgate-Request-Id``, ``X-Wsgate-Signature``) and an
:func:`~wsgate.routing.request.encode_request` body with a 100-byte payload.
Every answer must be a ``200`` (else the run stops, non-zero).

Two measures, per mode, in the same run:

- ``--callgrind DIR``: the service under ``valgrind --tool=callgrind``,
  instrumented only over the measured requests: **instructions per request**,
  whatever the machine's load (no lock needed);
- otherwise the service's **CPU µs per request** (user + system, from
  ``/proc``) and the requests/s over ``--rounds`` windows, modes interleaved;
  wall-clock, so run it under ``flock /tmp/wsgate-bench.lock``.

::

    python bench/sdk_server.py --callgrind /tmp/cg --requests 4000
    flock /tmp/wsgate-bench.lock python bench/sdk_server.py --requests 40000 --rounds 3
    python bench/sdk_server.py --base-src /tmp/base/src --base-modes sdk lean  # + MODE@base

Bounded: every wait has a timeout; a window is ``--requests`` requests.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Final, cast

import httptools
import msgspec
import uvloop
from _servers import (
    BenchError,
    ServerProcess,
    callgrind_last_ir,
    callgrind_toggle,
    free_port,
    gateway_source,
    pin_self,
)
from echo_service import SECRET

from wsgate.protocol.envelope import Action
from wsgate.routing.context import InvocationContext
from wsgate.routing.request import encode_request
from wsgate.routing.signature import HEADER, sign

BENCH: Final = Path(__file__).resolve().parent
ANSWER_TIMEOUT_S: Final = 30.0
"""A burst not answered within this long stops the run (callgrind is ~50 x slower)."""


def requests(n: int, conn: int) -> bytes:
    """``n`` requests as the gateway writes them, one after another."""
    head = (
        b"POST /actions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"User-Agent: wsgate\r\n"
    )
    payload = msgspec.Raw(b'{"text":"%s"}' % (b"x" * 89))
    out: list[bytes] = []
    now = int(time.time())
    for i in range(n):
        rid = f"r{conn}-{i}"
        context = InvocationContext(
            connectionId=f"node1.c{conn}", userId="u1", sessionId="s1", auth="cookie",
            hub="acme", channel=None, orgs=("acme",), roles=("member",), node="node1",
            requestId=rid, receivedAt=time.time(),
        )  # fmt: skip
        body = encode_request(Action(type="echo/PING", payload=payload), context)
        tp = f"00-{'0' * 31}{conn % 10}-{'0' * 15}{i % 10}-01"
        headers = (
            f"X-Wsgate-Connection-Id: node1.c{conn}\r\ntraceparent: {tp}\r\n"
            f"X-Wsgate-Request-Id: {rid}\r\n{HEADER}: {sign(SECRET, body, now)}\r\n"
        ).encode()
        out.append(b"%sContent-Length: %d\r\n%s\r\n%s" % (head, len(body), headers, body))
    return b"".join(out)


class _Client(asyncio.Protocol):
    """One connection: write a burst, count its answers (all ``200``)."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.answered = 0
        self.bad = 0
        self.want = 0
        self.done: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() != 200:
            self.bad += 1
        self.answered += 1
        if self.answered >= self.want and self.done is not None and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(BenchError(f"the service closed a connection: {exc}"))

    async def burst(self, data: bytes, n: int) -> None:
        assert self.transport is not None
        self.want = self.answered + n
        self.done = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        await asyncio.wait_for(self.done, ANSWER_TIMEOUT_S)
        if self.bad:
            raise BenchError(f"{self.bad} answers were not 200")


async def drive(port: int, conns: int, pipeline: int, total: int) -> float:
    """Send ``total`` requests over ``conns`` connections, ``pipeline`` at a time: seconds."""
    loop = asyncio.get_running_loop()
    clients: list[_Client] = []
    for _ in range(conns):
        _, proto = await loop.create_connection(_Client, "127.0.0.1", port)
        clients.append(proto)
    bursts = [requests(pipeline, c) for c in range(conns)]
    rounds = max(1, total // (conns * pipeline))

    async def one(c: int) -> None:
        for _ in range(rounds):
            await clients[c].burst(bursts[c], pipeline)

    start = time.perf_counter()
    await asyncio.gather(*(one(c) for c in range(conns)))
    elapsed = time.perf_counter() - start
    for client in clients:
        assert client.transport is not None
        client.transport.close()
    return elapsed


def start(
    name: str, workdir: Path, callgrind: Path | None, base_src: Path | None
) -> ServerProcess:
    """``name`` is a mode, or ``mode@base``: the service of ``base_src`` (its ``wsgate``)."""
    mode, _, base = name.partition("@")
    port = free_port()
    argv = [sys.executable, str(BENCH / "echo_service.py"), "--port", str(port), "--mode", mode]
    if callgrind is not None:
        out = callgrind / f"service-{name}.callgrind"
        argv = [
            "valgrind", "--tool=callgrind", "--instr-atstart=no",
            f"--callgrind-out-file={out}", *argv,
        ]  # fmt: skip
    saved = os.environ.get("PYTHONPATH")
    if base:  # ServerProcess's child_env() puts this first
        assert base_src is not None
        os.environ["PYTHONPATH"] = str(base_src)
    try:
        srv = ServerProcess(name, argv, workdir / f"{name}-{port}.log", "listening on ", 120.0)
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    srv.port = port  # type: ignore[attr-defined]
    return srv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", default=["sdk", "lean"])
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--pipeline", type=int, default=16)
    parser.add_argument("--requests", type=int, default=20000, help="per window")
    parser.add_argument("--rounds", type=int, default=3, help="windows per mode (wall clock)")
    parser.add_argument("--callgrind", type=Path, metavar="DIR")
    parser.add_argument(
        "--base-src", type=Path, metavar="DIR",
        help="also run --base-modes with the wsgate of this src/ tree, as MODE@base",
    )  # fmt: skip
    parser.add_argument("--base-modes", nargs="+", default=["sdk"])
    args = parser.parse_args()
    if args.base_src is not None:
        args.modes = [*args.modes, *(f"{m}@base" for m in args.base_modes)]
    pin_self()
    print(f"service source: {gateway_source()}")
    print(f"{args.connections} connections x pipeline {args.pipeline}, {args.requests} requests")
    with tempfile.TemporaryDirectory(prefix="sdk-server-") as tmp:
        workdir = Path(tmp)
        if args.callgrind is not None:
            args.callgrind.mkdir(parents=True, exist_ok=True)
            for mode in args.modes:
                srv = start(mode, workdir, args.callgrind, args.base_src)
                try:
                    port = srv.port  # type: ignore[attr-defined]
                    uvloop.run(drive(port, args.connections, args.pipeline, 200))  # warm up
                    callgrind_toggle(srv.pid, on=True)
                    uvloop.run(drive(port, args.connections, args.pipeline, args.requests))
                    callgrind_toggle(srv.pid, on=False)
                    ir = callgrind_last_ir(args.callgrind / f"service-{mode}.callgrind")
                    made = max(1, args.requests // (args.connections * args.pipeline))
                    made *= args.connections * args.pipeline
                    print(f"{mode:12} instructions per request: {ir / made:,.0f}")
                finally:
                    srv.stop()
            return
        servers = {mode: start(mode, workdir, None, args.base_src) for mode in args.modes}
        try:
            results: dict[str, list[tuple[float, float]]] = {m: [] for m in args.modes}
            for srv in servers.values():
                uvloop.run(drive(srv.port, args.connections, args.pipeline, 2000))  # type: ignore[attr-defined]
            for _ in range(args.rounds):
                for mode, srv in servers.items():
                    cpu0 = srv.cpu_seconds()
                    port = srv.port  # type: ignore[attr-defined]
                    elapsed = uvloop.run(
                        drive(port, args.connections, args.pipeline, args.requests)
                    )
                    cpu = srv.cpu_seconds() - cpu0
                    results[mode].append((args.requests / elapsed, cpu / args.requests * 1e6))
            for mode, rows in results.items():
                rates = ", ".join(f"{r:,.0f}" for r, _ in rows)
                us = ", ".join(f"{u:.1f}" for _, u in rows)
                rate = statistics.median(r for r, _ in rows)
                cost = statistics.median(u for _, u in rows)
                print(
                    f"{mode:12} req/s {rates} (median {rate:,.0f});"
                    f" service CPU us/req {us} (median {cost:.1f})"
                )
        finally:
            for srv in servers.values():
                srv.stop()


if __name__ == "__main__":
    main()
