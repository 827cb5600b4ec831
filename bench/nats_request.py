"""The gateway's NATS call alone: nats-py's ``request`` against wsgate's NatsInvoker (issue 10).

This process plays the gateway's side of a NATS call (pinned to CPU 0); a
``nats-server`` and the bench's NATS echo service (``bench/echo_procedures.py
--mode nats``, the SDK's ``NatsService``) run on CPU 1. K closed-loop callers
(default 100) call the echo's subject, through one of two sides, in
interleaved windows (``request``, ``invoker``, the order alternating each
round):

- ``request``: what the invoker did before issue 10's rework, as one
  function: ``encode_request`` of the action and context, the context as a
  header dict, ``nc.request(subject, body, timeout, headers)`` (a task, a
  future, ``wait_for`` and a random token per call; the headers encoded by
  nats-py), the error headers checked, ``decode_result``;
- ``invoker``: :meth:`wsgate.routing.nats_invoker.NatsInvoker.invoke`, the
  same body, headers and decoding (one reply subscription, ids of its own,
  the ``HPUB`` built by :mod:`wsgate.routing.nats_wire`).

Reported per side: the median calls/s and this process's CPU µs per call,
the ``nats-server``'s and the echo service's CPU µs per call (CPU 1: the
side that limits calls/s here), and the ratio invoker / request.
``--publish`` first measures one publish alone: nats-py's ``publish`` with
the six context headers as a dict, without headers, and the same ``HPUB``
built by ``nats_wire`` and written through the client's buffer (CPU µs per
publish, N publishes each, interleaved).

``--callgrind OUT``: this process runs under callgrind (the command below),
only the ``invoker`` side, and reports its instructions per call over each
window (instrumentation on for the window only). This process is then the
slow side by far, so every batch it reads and writes is full and the windows'
counts agree within ~5 %; the figure to compare two trees' invoker by (run
each with ``PYTHONPATH=<tree>/src``; bench/README.md, "The NATS invoker").

Usage::

    python bench/nats_request.py [--clients 100] [--seconds 3] [--rounds 5] [--publish]
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/cg/inv \
        python bench/nats_request.py --callgrind /tmp/cg/inv --seconds 10 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

import msgspec
from _servers import (
    BENCH_DIR,
    CLIENT_CPU,
    SERVER_CPU,
    BenchError,
    ServerProcess,
    callgrind_last_ir,
    callgrind_toggle,
    free_port,
    pin_self,
)
from echo_procedures import NATS_NAME
from nats.aio.client import Client

from wsgate.backends.nats import close_client, connect_nats
from wsgate.protocol.codes import ErrorCode
from wsgate.protocol.envelope import Action, Meta
from wsgate.routing.context import InvocationContext
from wsgate.routing.instances import Instance, Service, ServicePool
from wsgate.routing.nats_invoker import ERROR_CODE_HEADER, NatsInvoker
from wsgate.routing.nats_wire import flush, header_block, hpub, write
from wsgate.routing.request import encode_request
from wsgate.routing.results import InvocationResult, decode_result

SIDES: Final = ("request", "invoker")
SUBJECT: Final = f"wsgate.{NATS_NAME}"
TRACEPARENT: Final = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
CONTEXT: Final = InvocationContext(
    connectionId="n1.AbCdEfGh", userId="u1", sessionId="s1", auth="cookie", hub="acme",
    node="n1", requestId="n1.AbCdEfGh.1", receivedAt=1.5,
)  # fmt: skip
ACTION: Final = Action(
    type="nats/PING", payload=msgspec.Raw(b'{"pad":"' + b"x" * 90 + b'"}'), meta=Meta(id="1")
)


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _on_cpu1(argv: list[str]) -> list[str]:
    taskset = shutil.which("taskset")
    return [taskset, "-c", str(CLIENT_CPU), *argv] if taskset else argv


def _header_dict(context: InvocationContext, traceparent: str) -> dict[str, str]:
    """The context as the header dict the invoker gave nats-py before."""
    headers = {"Wsgate-Connection-Id": context.connectionId, "Wsgate-Hub": context.hub,
               "traceparent": traceparent}  # fmt: skip
    if context.userId:
        headers["Wsgate-User"] = context.userId
    if context.channel:
        headers["Wsgate-Channel"] = context.channel
    if context.requestId:
        headers["Wsgate-Request-Id"] = context.requestId
    if not "".join(headers.values()).isprintable():
        raise ValueError("a context value is not printable")
    return headers


async def request_side(nc: Client) -> InvocationResult | ErrorCode:
    """One call the way the invoker made it through ``nc.request``."""
    body = encode_request(ACTION, CONTEXT)
    msg = await nc.request(SUBJECT, body, timeout=5, headers=_header_dict(CONTEXT, TRACEPARENT))
    if msg.headers and msg.headers.get(ERROR_CODE_HEADER) is not None:
        return ErrorCode.UPSTREAM_ERROR
    result = decode_result(msg.data)
    return ErrorCode.UPSTREAM_ERROR if isinstance(result, str) else result


async def callers(
    call: Callable[[], Awaitable[InvocationResult | ErrorCode]],
    k: int,
    seconds: float,
    procs: list[ServerProcess],
    callgrind: Path | None = None,
) -> tuple[float, float, list[float]]:
    """K closed-loop callers of ``call``, a warm-up second, then ``seconds``.

    Returns (calls/s, this process's CPU µs per call, each of ``procs``' CPU µs per call);
    with ``callgrind`` (this process under callgrind), the CPU µs are instructions per call.
    """
    state = {"calls": 0, "stop": False}
    failures: list[object] = []

    async def caller() -> None:
        for _ in range(10**9):  # until stopped
            if state["stop"]:
                return
            result = await call()
            if not isinstance(result, InvocationResult) or not result.replies:
                failures.append(result)
                return
            state["calls"] += 1

    tasks = [asyncio.get_running_loop().create_task(caller()) for _ in range(k)]
    try:
        await asyncio.sleep(1.0)  # the warm-up's length
        if callgrind is not None:  # in a thread: valgrind serves the request meanwhile
            await asyncio.to_thread(callgrind_toggle, os.getpid(), True)
        n0, c0, t0 = state["calls"], _cpu_self(), time.perf_counter()
        p0 = [p.cpu_seconds() for p in procs]
        await asyncio.sleep(seconds)  # the window's length
        n1, c1, t1 = state["calls"], _cpu_self(), time.perf_counter()
        p1 = [p.cpu_seconds() for p in procs]
        if callgrind is not None:
            await asyncio.to_thread(callgrind_toggle, os.getpid(), False)
    finally:
        state["stop"] = True
        await asyncio.wait(tasks, timeout=10)
        for t in tasks:
            t.cancel()
    if failures:
        raise BenchError(f"calls failed: {failures[:3]}")
    calls = max(1, n1 - n0)
    others = [(b - a) / calls * 1e6 for a, b in zip(p0, p1, strict=True)]
    if callgrind is not None:
        return calls / (t1 - t0), callgrind_last_ir(callgrind) / calls, others
    return calls / (t1 - t0), (c1 - c0) / calls * 1e6, others


async def publish_costs(nc: Client, n: int, rounds: int) -> dict[str, list[float]]:
    """CPU µs per publish: nats-py with the header dict, without headers, and ``nats_wire``."""
    body = encode_request(ACTION, CONTEXT)
    headers = _header_dict(CONTEXT, TRACEPARENT)
    reply = nc.new_inbox() + ".1"
    out: dict[str, list[float]] = {"publish(headers=dict)": [], "publish()": [], "nats_wire": []}

    async def one(kind: str) -> None:
        if kind == "publish(headers=dict)":
            await nc.publish("bench.void", body, reply=reply, headers=headers)
        elif kind == "publish()":
            await nc.publish("bench.void", body, reply=reply)
        else:
            header = header_block(CONTEXT, TRACEPARENT)
            await write(nc, hpub("bench.void", reply, header, body))
            await flush(nc)

    for r in range(rounds):
        kinds = list(out) if r % 2 == 0 else list(reversed(out))
        for kind in kinds:
            c0 = _cpu_self()
            for i in range(n):
                await one(kind)
                if i % 256 == 255:
                    await asyncio.sleep(0)  # let the flusher write
            out[kind].append((_cpu_self() - c0) / n * 1e6)
            await nc.flush()
    return out


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    return s[len(s) // 2] if s else float("nan")


async def amain(args: argparse.Namespace) -> int:
    pinned = pin_self(SERVER_CPU)
    print(
        f"nats_request bench: K={args.clients}, {args.seconds:g} s windows, {args.rounds} "
        f"rounds, this process pinned to CPU {SERVER_CPU}: {pinned}",
        flush=True,
    )
    binary = shutil.which("nats-server") or str(Path(sys.executable).parent / "nats-server")
    with tempfile.TemporaryDirectory(prefix="wsgate-natsreq-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        argv = _on_cpu1([binary, "-a", "127.0.0.1", "-p", str(port)])
        procs = [ServerProcess("nats-server", argv, workdir / "nats-server.log", "Server is ready")]
        url = f"nats://127.0.0.1:{port}"
        nc: Client | None = None
        invoker: NatsInvoker | None = None
        try:
            procs.append(ServerProcess(
                "echo-nats",
                _on_cpu1([sys.executable, str(BENCH_DIR / "echo_procedures.py"), "--mode", "nats",
                          "--nats", url, "--cpu", str(CLIENT_CPU)]),
                workdir / "echo-nats.log", "listening on ",
            ))  # fmt: skip
            nc = await connect_nats(url, name="bench nats_request")
            if args.publish:
                costs = await publish_costs(nc, args.publishes, args.rounds)
                print(f"one publish, CPU us (median of {args.rounds} x {args.publishes}):")
                for kind, xs in costs.items():
                    print(f"  {kind:<22} {_median(xs):6.2f}")
            pool = ServicePool(NATS_NAME, timeout_ms=5000, secret="", max_concurrency=512,
                               static=False, clock=asyncio.get_running_loop().time,
                               transport="nats")  # fmt: skip
            pool.instances.append(Instance(SUBJECT, "nats"))
            service = Service(pool)
            invoker = NatsInvoker(nc)
            inv = invoker
            side_call: dict[str, Callable[[], Awaitable[InvocationResult | ErrorCode]]] = {
                "request": lambda: request_side(nc),  # type: ignore[arg-type]
                "invoker": lambda: inv.invoke(service, ACTION, CONTEXT, TRACEPARENT),
            }
            results: dict[str, list[tuple[float, float]]] = {s: [] for s in SIDES}
            served: dict[str, list[list[float]]] = {s: [] for s in SIDES}
            for r in range(args.rounds):
                for side in SIDES if r % 2 == 0 else tuple(reversed(SIDES)):
                    if args.callgrind is not None and side != "invoker":
                        continue
                    rate, us, others = await callers(
                        side_call[side], args.clients, args.seconds, procs, args.callgrind
                    )
                    results[side].append((rate, us))
                    served[side].append(others)
                    print(f"  round {r + 1} {side:<8} {rate:>8,.0f} calls/s {us:6.1f} us CPU/call"
                          f"  (CPU 1: nats-server {others[0]:5.1f}, echo service {others[1]:5.1f}"
                          f" us/call)", flush=True)  # fmt: skip
        finally:
            if invoker is not None:
                await invoker.aclose()
            if nc is not None:
                await close_client(nc)
            for p in reversed(procs):
                p.stop()
    print()
    if args.callgrind is not None:
        xs = [x[1] for x in results["invoker"]]
        print(f"callgrind: NatsInvoker.invoke, K={args.clients}: {_median(xs):,.0f} instructions "
              f"per call (median of {len(xs)}: {', '.join(f'{x:,.0f}' for x in xs)})")  # fmt: skip
        return 0
    print(f"the gateway's side of a NATS call, K={args.clients}, medians of {args.rounds} "
          "interleaved windows (this process's CPU on CPU 0):")  # fmt: skip
    med = {s: (_median([x[0] for x in results[s]]), _median([x[1] for x in results[s]]))
           for s in SIDES}  # fmt: skip
    for side in SIDES:
        srv = _median([o[0] for o in served[side]])
        svc = _median([o[1] for o in served[side]])
        print(f"  {side:<8} {med[side][0]:>8,.0f} calls/s {med[side][1]:6.1f} us CPU/call; "
              f"CPU 1: nats-server {srv:.1f}, echo service {svc:.1f} us/call")  # fmt: skip
    print(f"  invoker / request: calls/s {med['invoker'][0] / med['request'][0]:.2f} x, "
          f"CPU per call {med['invoker'][1] / med['request'][1]:.2f} x")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100, help="K callers (100)")
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring window (3)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (5)")
    parser.add_argument("--publish", action="store_true", help="also time one publish alone")
    parser.add_argument(
        "--publishes", type=int, default=20000, help="publishes per --publish window (20000)"
    )
    parser.add_argument(
        "--callgrind", type=Path, metavar="OUT",
        help="this process runs under callgrind with --callgrind-out-file=OUT: the invoker "
        "side only, instructions per call",
    )  # fmt: skip
    args = parser.parse_args()
    if not 1 <= args.clients <= 1000 or not 1 <= args.rounds <= 20 or not 0.5 <= args.seconds <= 60:
        parser.error("--clients 1..1000, --rounds 1..20, --seconds 0.5..60")
    if not 100 <= args.publishes <= 10**6:
        parser.error("--publishes 100..1000000")
    try:
        return uvloop.run(amain(args))
    except BenchError as exc:
        print(f"nats_request: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
