"""The HTTP echo service behind the gateway in ``bench/roundtrip.py``.

Answers every ``echo/*`` invocation with one reply ``{"type": "echo/PONG",
"payload": <the action's payload>}``. Two implementations, chosen by
``--mode``:

- ``sdk`` (default): ``wsgate.sdk.Service(secret="bench-secret")`` with one
  ``@service.action("echo/*")`` handler — what a real service costs: the
  signature is checked, the invocation decoded into dicts, the answer
  encoded — served by the SDK's built-in httptools server
  (``service.serve``);
- ``sdk-sync``: the same with a plain ``def`` handler (answered without a task,
  in the parser callback: ``Service.dispatch``);
- ``sdk-aiohttp``: the same service through ``service.app()`` on aiohttp's
  server (what the SDK cost before it had a server of its own);
- ``sdk-uvicorn``: the same service as an ASGI app under uvicorn
  (``http="httptools"``, uvloop, no access log);
- ``raw``: one bare aiohttp handler that verifies nothing and copies the
  payload through as raw JSON (``msgspec.Raw``, never decoded) — the floor of
  an aiohttp service, to tell the gateway's cost from the service's;
- ``lean``: no aiohttp at all — a bare ``asyncio.Protocol`` HTTP/1.1
  keep-alive server that verifies the signature
  (``wsgate.routing.signature.verify``) and answers
  ``{"reply":[{"type":"echo/PONG","payload":<the payload, raw>}]}`` with a
  ``Content-Length``: what a fast service costs, so that the gateway's own
  cost shows.

All run on uvloop with the access log off (a log line per request would be
the benchmark). Run as a subprocess::

    python bench/echo_service.py --port 9000 [--mode sdk|sdk-aiohttp|sdk-uvicorn|raw|lean] [--cpu 1]

``--cpu`` pins the process (all its threads: it pins itself first thing).
It prints ``echo-service: listening on http://127.0.0.1:<port>/actions``
when ready and runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
from typing import Any, Final, cast

import msgspec
import uvloop
from aiohttp import web

from wsgate.routing.signature import verify

__all__ = ["MODES", "SECRET", "LeanEcho", "main", "raw_app", "sdk_app", "sdk_service"]

SECRET: Final = "bench-secret"
PATH: Final = "/actions"
MODES: Final = ("sdk", "sdk-sync", "sdk-aiohttp", "sdk-uvicorn", "raw", "lean")


def sdk_service(sync: bool = False) -> Any:
    """The service written with the SDK, as a service author would: ``async def``, or
    (``sync``) a plain ``def``, which the built-in server answers without a task."""
    from wsgate import sdk

    service = sdk.Service(secret=SECRET, path=PATH)
    if sync:

        @service.action("echo/*")
        def echo_sync(action: dict[str, Any], ctx: sdk.Context) -> list[dict[str, Any]]:
            return [{"type": "echo/PONG", "payload": action.get("payload")}]

    else:

        @service.action("echo/*")
        async def echo(action: dict[str, Any], ctx: sdk.Context) -> list[dict[str, Any]]:
            return [{"type": "echo/PONG", "payload": action.get("payload")}]

    return service


def sdk_app() -> web.Application:
    """The SDK service on aiohttp's server."""
    app: web.Application = sdk_service().app()
    return app


class _Action(msgspec.Struct):
    payload: msgspec.Raw = msgspec.Raw(b"null")


class _Invocation(msgspec.Struct):
    action: _Action


class _Pong(msgspec.Struct):
    payload: msgspec.Raw
    type: str = "echo/PONG"


class _Answer(msgspec.Struct):
    reply: list[_Pong]


def raw_app() -> web.Application:
    """A bare handler: no signature check, the payload copied through undecoded."""
    decode = msgspec.json.Decoder(_Invocation).decode
    encode = msgspec.json.Encoder().encode

    async def handle(request: web.Request) -> web.Response:
        try:
            invocation = decode(await request.read())
        except (msgspec.ValidationError, msgspec.DecodeError):
            return web.Response(status=400)
        body = encode(_Answer([_Pong(invocation.action.payload)]))
        return web.Response(body=body, content_type="application/json")

    app = web.Application(client_max_size=1 << 20)
    app.router.add_post(PATH, handle)
    return app


_MAX_REQUEST: Final = 1 << 20


class LeanEcho(asyncio.Protocol):
    """The ``lean`` service: one keep-alive HTTP/1.1 connection, no framework.

    Reads ``POST`` requests with a ``Content-Length`` body (one after another,
    pipelined or not), checks ``X-Wsgate-Signature`` and answers the echo.
    401 for a bad signature, 400 for a body that is not an invocation, 411/413
    for a missing/huge length (then closes).
    """

    __slots__ = ("buf", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        out: list[bytes] = []
        while buf:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > 65536:
                    return self._bail(out, b"431 Request Header Fields Too Large")
                break
            length = -1
            signature = None
            for line in buf[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                lname = name.lower()
                if lname == b"content-length":
                    length = int(value) if value.strip().isdigit() else -2
                elif lname == b"x-wsgate-signature":
                    signature = value.strip().decode("latin-1")
            if length < 0:
                return self._bail(out, b"411 Length Required")
            if length > _MAX_REQUEST:
                return self._bail(out, b"413 Payload Too Large")
            start = end + 4
            if len(buf) < start + length:
                break
            body = buf[start : start + length]
            buf = buf[start + length :]
            out.append(_answer(body, signature))
        self.buf = buf
        if out and self.transport is not None:
            self.transport.write(b"".join(out))

    def _bail(self, out: list[bytes], status: bytes) -> None:
        self.buf = b""
        if self.transport is not None:
            out.append(b"HTTP/1.1 %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % status)
            self.transport.write(b"".join(out))
            self.transport.close()


_lean_decode: Final = msgspec.json.Decoder(_Invocation).decode


def _answer(body: bytes, signature: str | None) -> bytes:
    if not verify(SECRET, signature, body, time.time()):
        return b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"
    try:
        payload = _lean_decode(body).action.payload
    except (msgspec.ValidationError, msgspec.DecodeError):
        return b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
    out = b'{"reply":[{"type":"echo/PONG","payload":%s}]}' % bytes(payload)
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(out),
        out,
    )


async def serve_lean(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(LeanEcho, "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"echo-service (lean): listening on http://127.0.0.1:{port}{PATH}", flush=True)
    await stop.wait()
    server.close()


async def _until_signalled() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve_sdk(port: int, sync: bool) -> None:
    from wsgate.sdk.server import ServerLimits

    server = await sdk_service(sync).serve("127.0.0.1", port, ServerLimits(backlog=1024))
    mode = "sdk-sync" if sync else "sdk"
    print(f"echo-service ({mode}): listening on http://127.0.0.1:{port}{PATH}", flush=True)
    await _until_signalled()
    await server.aclose()


async def serve_uvicorn(port: int) -> None:
    import uvicorn

    config = uvicorn.Config(
        sdk_service(), host="127.0.0.1", port=port, http="httptools", loop="none",
        lifespan="on", access_log=False, log_level="warning", backlog=1024,
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    for _ in range(1000):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    print(f"echo-service (sdk-uvicorn): listening on http://127.0.0.1:{port}{PATH}", flush=True)
    await _until_signalled()
    server.should_exit = True
    await task


async def serve(port: int, mode: str) -> None:
    if mode == "lean":
        await serve_lean(port)
        return
    if mode in ("sdk", "sdk-sync"):
        await serve_sdk(port, mode == "sdk-sync")
        return
    if mode == "sdk-uvicorn":
        await serve_uvicorn(port)
        return
    app = sdk_app() if mode == "sdk-aiohttp" else raw_app()
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"echo-service ({mode}): listening on http://127.0.0.1:{port}{PATH}", flush=True)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=MODES, default="sdk")
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        try:  # (the parent may have started it pinned elsewhere)
            os.sched_setaffinity(0, {args.cpu})
        except OSError as exc:
            print(f"echo-service: not pinned to CPU {args.cpu}: {exc}", flush=True)
    uvloop.run(serve(args.port, args.mode))


if __name__ == "__main__":
    main()
