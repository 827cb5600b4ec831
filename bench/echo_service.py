"""The HTTP echo service behind the gateway in ``bench/roundtrip.py``.

Answers every ``echo/*`` invocation with one reply ``{"type": "echo/PONG",
"payload": <the action's payload>}``. Two implementations, chosen by
``--mode``:

- ``sdk`` (default): ``wsgate.sdk.Service(secret="bench-secret")`` with one
  ``@service.action("echo/*")`` handler — what a real service costs: the
  signature is checked, the invocation decoded into dicts, the answer
  encoded;
- ``raw``: one bare aiohttp handler that verifies nothing and copies the
  payload through as raw JSON (``msgspec.Raw``, never decoded) — the floor of
  an aiohttp service, to tell the gateway's cost from the service's.

Both run on uvloop with the access log off (a log line per request would be
the benchmark). Run as a subprocess::

    python bench/echo_service.py --port 9000 [--mode sdk|raw] [--cpu 1]

``--cpu`` pins the process (all its threads: it pins itself first thing).
It prints ``echo-service: listening on http://127.0.0.1:<port>/actions``
when ready and runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from typing import Any, Final

import msgspec
import uvloop
from aiohttp import web

__all__ = ["SECRET", "main", "raw_app", "sdk_app"]

SECRET: Final = "bench-secret"
PATH: Final = "/actions"


def sdk_app() -> web.Application:
    """The service written with the SDK, as a service author would."""
    from wsgate import sdk

    service = sdk.Service(secret=SECRET, path=PATH)

    @service.action("echo/*")
    async def echo(action: dict[str, Any], ctx: sdk.Context) -> list[dict[str, Any]]:
        return [{"type": "echo/PONG", "payload": action.get("payload")}]

    return service.app()


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


async def serve(port: int, mode: str) -> None:
    app = sdk_app() if mode == "sdk" else raw_app()
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
    parser.add_argument("--mode", choices=("sdk", "raw"), default="sdk")
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    args = parser.parse_args()
    if args.cpu is not None and args.cpu in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {args.cpu})
    uvloop.run(serve(args.port, args.mode))


if __name__ == "__main__":
    main()
