"""A real HTTP action service for the end-to-end tests, run as its own process.

``python -m tests.e2e.service_app --port P --secret S --api URL --api-key K --name N``

Built with wsgate's SDK (so every request's signature is verified), plus raw
routes that answer what no SDK service would (malformed JSON, a wrong shape,
500s, slowness). ``GET /events`` lists the lifecycle events received.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import Any

from aiohttp import web

from wsgate.routing.context import InvocationContext
from wsgate.sdk import Publisher, Refused, Reply, Service


def build(name: str, secret: str, publisher: Publisher) -> web.Application:
    service = Service(secret=secret)
    events: list[dict[str, Any]] = []
    jobs: set[asyncio.Task[None]] = set()

    @service.action("svc/ECHO")
    async def echo(action: dict[str, Any], ctx: InvocationContext) -> Reply:
        context = {"connectionId": ctx.connectionId, "userId": ctx.userId, "hub": ctx.hub,
                   "channel": ctx.channel, "roles": list(ctx.roles), "node": ctx.node}
        return Reply(actions=[{"type": "svc/ECHOED", "payload": {"got": action.get("payload"), "context": context, "by": name}}])

    @service.action("svc/SLOW")
    async def slow_echo(action: dict[str, Any], ctx: InvocationContext) -> list[dict[str, Any]]:
        events.append({"type": action["type"], "connectionId": ctx.connectionId, "channel": ctx.channel})
        await asyncio.sleep(0.5)  # the behaviour: a slow answer
        return [{"type": "svc/SLOWED", "payload": action.get("payload")}]

    @service.action("svc/PUBLISH")
    async def publish(action: dict[str, Any], ctx: InvocationContext) -> Reply:
        payload = action.get("payload") or {}
        return Reply(publish=[{"to": payload["to"], "action": {"type": "svc/NEWS", "payload": payload.get("body")},
                               "exclude": {"connection": ctx.connectionId}}])

    @service.action("svc/LATER")
    async def later(action: dict[str, Any], ctx: InvocationContext) -> None:
        async def push() -> None:
            await asyncio.sleep(0.2)  # the behaviour: a push well after the reply
            await publisher.publish({"connection": ctx.connectionId}, {"type": "svc/PUSHED", "payload": {"by": name}})

        task = asyncio.get_running_loop().create_task(push())
        jobs.add(task)
        task.add_done_callback(jobs.discard)
        return None

    @service.action("@@wsgate/CONNECT")
    async def connect(action: dict[str, Any], ctx: InvocationContext) -> Reply:
        """The connect hook: refuse mallory, stall slowpoke, make vip an admin."""
        events.append({"type": action["type"], "connectionId": ctx.connectionId, "channel": ctx.channel})
        if ctx.userId == "mallory":
            raise Refused("banned")
        if ctx.userId == "slowpoke":
            await asyncio.sleep(5)  # the behaviour: a connect hook past its timeout
        claims = {"roles": ["admin"], "name": "Very Important"} if ctx.userId == "vip" else None
        return Reply(actions=[{"type": "svc/HELLO", "payload": {"ip": (action.get("payload") or {}).get("ip")}}],
                     claims=claims)

    @service.action("@@wsgate/JOIN")
    async def authorize(action: dict[str, Any], ctx: InvocationContext) -> None:
        """The authorize hook: views under secret/ are refused."""
        events.append({"type": action["type"], "connectionId": ctx.connectionId, "channel": ctx.channel})
        if "secret/" in str((action.get("payload") or {}).get("channel")):
            raise Refused("no")
        return None

    @service.action("@@wsgate/*")
    async def lifecycle(action: dict[str, Any], ctx: InvocationContext) -> list[dict[str, Any]]:
        events.append({"type": action["type"], "connectionId": ctx.connectionId, "channel": ctx.channel})
        return [{"type": "svc/IGNORED"}]  # replies to lifecycle events go nowhere

    app = service.app()

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)  # the behaviour: a service past every caller's timeout
        return web.json_response({})

    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=500, text="Traceback: secret internals")

    async def malformed(request: web.Request) -> web.Response:
        return web.Response(status=200, text="{not json", content_type="application/json")

    async def wrong_shape(request: web.Request) -> web.Response:
        return web.json_response({"reply": "not a list"})

    async def list_events(request: web.Request) -> web.Response:
        return web.json_response(events)

    app.router.add_post("/slow", slow)
    app.router.add_post("/fail", fail)
    app.router.add_post("/malformed", malformed)
    app.router.add_post("/shape", wrong_shape)
    app.router.add_get("/events", list_events)
    return app


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--api", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--name", default="svc")
    args = parser.parse_args()
    async with Publisher(args.api, args.api_key) as publisher:
        runner = web.AppRunner(build(args.name, args.secret, publisher), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", args.port).start()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        print("ready", flush=True)
        with contextlib.suppress(TimeoutError):  # bounded: a leaked process ends on its own
            await asyncio.wait_for(stop.wait(), 600)
        await runner.cleanup()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
