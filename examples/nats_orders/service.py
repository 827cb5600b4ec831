"""The demo's NATS example: a stock service written with the SDK's ``NatsService``.

It announces ``inventory/*`` in its endpoint's ``wsgate.actions`` metadata,
so every gateway with ``[discovery.nats]`` on the same NATS server routes
those actions to it within its discovery interval, with no route written by
hand (docs/routing.md "NATS"):

- ``inventory/CHECK {sku}`` replies ``inventory/STOCK {sku, count, hub}``,
  the count the caller's organization (hub) holds;
- ``inventory/TAKE {sku}`` takes one from the hub's stock and replies
  ``inventory/STOCK``; at zero it is refused (``FORBIDDEN``).

Stock is kept per ``(hub, sku)``; :data:`MAX_ITEMS` bounds it (an unknown
pair starts at :data:`START` and past the bound the oldest is forgotten).

Run: ``python examples/nats_orders/service.py --nats nats://127.0.0.1:4222``
(``wsgate demo`` starts it, with a ``nats-server``, for you).
"""

from __future__ import annotations

import argparse
import asyncio
import re
from typing import Any

import nats

from wsgate.exceptions import Refused
from wsgate.sdk.nats_service import NatsService
from wsgate.sdk.service import Context

__all__ = ["MAX_ITEMS", "START", "build"]

START = 12
"""What a hub holds of a sku it never touched."""
MAX_ITEMS = 10_000
_SKU = re.compile(r"[A-Za-z0-9_-]{1,64}")


def build() -> NatsService:
    """The service (not started: ``await service.start(nc)``, later ``await service.stop()``)."""
    service = NatsService("inventory")
    stock: dict[tuple[str, str], int] = {}

    def key(action: dict[str, Any], ctx: Context) -> tuple[str, str]:
        payload = action.get("payload")
        sku = payload.get("sku") if isinstance(payload, dict) else None
        if not isinstance(sku, str) or not _SKU.fullmatch(sku):
            raise Refused("sku: 1-64 letters, digits, _ or -")
        return (ctx.hub or "-", sku)

    def answer(k: tuple[str, str]) -> dict[str, Any]:
        return {"type": "inventory/STOCK", "payload": {"sku": k[1], "count": stock.get(k, START),
                                                       "hub": k[0]}}

    @service.action("inventory/CHECK")
    async def check(action: dict[str, Any], ctx: Context) -> dict[str, Any]:
        return answer(key(action, ctx))

    @service.action("inventory/TAKE")
    async def take(action: dict[str, Any], ctx: Context) -> dict[str, Any]:
        k = key(action, ctx)
        left = stock.pop(k, START)
        if left <= 0:
            stock[k] = 0
            raise Refused("out of stock")
        stock[k] = left - 1
        while len(stock) > MAX_ITEMS:
            del stock[next(iter(stock))]
        return answer(k)

    return service


async def _main(url: str) -> None:
    nc = await nats.connect(url)
    service = build()
    await service.start(nc)
    print(f"inventory: serving on {service.subject} via {url}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    asyncio.run(_main(parser.parse_args().nats))
