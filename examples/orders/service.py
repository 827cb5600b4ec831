"""The demo's orders service, built with wsgate's SDK.

Every order is kept per hub (the caller's organization): order 42 of acme
and order 42 of globex are two orders, and neither organization sees the
other's.

- ``orders/GET {id}`` replies ``orders/ITEM {id, status}`` to the sender;
- ``orders/UPDATE {id, status}`` stores the status, publishes
  ``orders/UPDATED`` to the order's view channel (``<hub>:orders/<id>``) for
  everyone else there, and replies ``orders/SAVED`` to the sender;
- ``orders/WATCH {id}`` replies nothing now (202) and, two seconds later, a
  background job pushes ``orders/REMINDER`` to that connection by its id
  through the gateway's internal API — the way any service answers later;
- ``procedures/LIST`` replies ``procedures/LISTED {procedures: [{type,
  source, transport, service, targets: [{url, healthy}]}]}``: the routes the
  gateway discovered by itself (sources ``grpc`` and ``nats``), read from
  the live table (``GET /v1/routes``) — the demo page's "Procedures" panel.
  The table is the gateway's configuration, the same for every hub; the
  services behind it keep their state per hub.

Run: ``python examples/orders/service.py --port 9000 --secret S --api URL --api-key K``
(``wsgate demo`` starts it for you).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any

from aiohttp import web

from wsgate.routing.context import InvocationContext
from wsgate.sdk import Publisher, Reply, Service

WATCH_DELAY_S = 2.0
MAX_ORDERS = 10_000
"""Orders remembered across all hubs; past it the oldest is forgotten."""
DISCOVERED = ("grpc", "nats")
"""The route sources ``procedures/LIST`` shows: what no one wrote by hand."""
MAX_PROCEDURES = 200
"""Procedures listed at most (the rest are left out of the answer)."""


def build(
    secret: str, publisher: Publisher, watch_delay_s: float = WATCH_DELAY_S
) -> web.Application:
    service = Service(secret=secret)
    orders: dict[tuple[str, str], str] = {}
    """(hub, order id) → status: each organization has its own orders."""
    jobs: set[asyncio.Task[None]] = set()

    def order_id(action: dict[str, Any]) -> str:
        payload = action.get("payload") or {}
        return str(payload.get("id", "")) if isinstance(payload, dict) else ""

    @service.action("orders/GET")
    async def get(action: dict[str, Any], ctx: InvocationContext) -> Reply:
        oid = order_id(action)
        status = orders.get((ctx.hub, oid), "new")
        return Reply(actions=[{"type": "orders/ITEM", "payload": {"id": oid, "status": status}}])

    @service.action("orders/UPDATE")
    async def update(action: dict[str, Any], ctx: InvocationContext) -> Reply:
        oid = order_id(action)
        status = str((action.get("payload") or {}).get("status", "new"))
        orders.pop((ctx.hub, oid), None)  # re-insert: the newest is forgotten last
        if len(orders) >= MAX_ORDERS:
            del orders[next(iter(orders))]
        orders[(ctx.hub, oid)] = status
        channel = f"{ctx.hub}:orders/{oid}"
        updated = {
            "type": "orders/UPDATED",
            "payload": {"id": oid, "status": status, "by": ctx.userId},
        }
        return Reply(
            actions=[{"type": "orders/SAVED", "payload": {"id": oid, "status": status}}],
            publish=[
                {
                    "to": {"channel": channel},
                    "action": updated,
                    "exclude": {"connection": ctx.connectionId},
                }
            ],
        )

    @service.action("orders/WATCH")
    async def watch(action: dict[str, Any], ctx: InvocationContext) -> None:
        oid = order_id(action)

        async def remind() -> None:
            await asyncio.sleep(watch_delay_s)
            reminder = {
                "type": "orders/REMINDER",
                "payload": {"id": oid, "status": orders.get((ctx.hub, oid), "new")},
            }
            with contextlib.suppress(Exception):  # the connection may be gone: nothing to do
                await publisher.publish({"connection": ctx.connectionId}, reminder)

        task = asyncio.get_running_loop().create_task(remind())
        jobs.add(task)
        task.add_done_callback(jobs.discard)
        return None

    @service.action("procedures/LIST")
    async def procedures(action: dict[str, Any], ctx: InvocationContext) -> Reply:
        listed = [
            {
                "type": route["pattern"],
                "source": route["source"],
                "transport": route["transport"],
                "service": route["service"],
                "targets": [
                    {"url": i["url"], "healthy": i["healthy"]} for i in route["instances"]
                ],
            }
            for route in await publisher.routes()
            if route.get("source") in DISCOVERED
        ]
        payload = {"procedures": listed[:MAX_PROCEDURES]}
        return Reply(actions=[{"type": "procedures/LISTED", "payload": payload}])

    return service.app()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--api", required=True, help="the gateway's internal API URL")
    parser.add_argument("--api-key", required=True)
    args = parser.parse_args()
    async with Publisher(args.api, args.api_key) as publisher:
        runner = web.AppRunner(build(args.secret, publisher), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, args.host, args.port).start()
        print(f"orders service on http://{args.host}:{args.port}/actions", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
