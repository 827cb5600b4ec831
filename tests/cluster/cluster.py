"""Several real nodes (in-process, real sockets) over one cluster backend."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

from wsgate.auth.keyring import new_key
from wsgate.config import Config, from_mapping
from wsgate.node import Node

from ..e2e.gateway import ADMIN_KEY, API_KEY, ORIGIN, Running

__all__ = ["ADMIN_KEY", "API_KEY", "ORIGIN", "cluster", "node_config"]


def node_config(broker_url: str, prefix: str, node_id: str, key: str, **sections: Any) -> Config:
    data: dict[str, Any] = {
        "server": {"listen": "127.0.0.1:0", "allowed_origins": [ORIGIN], "node_id": node_id},
        "api": {"listen": "127.0.0.1:0", "keys": [API_KEY]},
        "admin": {"keys": [ADMIN_KEY]},
        "auth": {"keys": [key]},
        "broker": {"url": broker_url, "prefix": prefix, "presence_ttl_s": 1.0},
        "presence": {"batch_ms": 0},
        "relays": [{"match": "chat/*"}],
    }
    for name, value in sections.items():
        data[name] = {**data.get(name, {}), **value} if isinstance(value, dict) else value
    return from_mapping(data, env={})


@contextlib.asynccontextmanager
async def cluster(broker_url: str, size: int = 3, **sections: Any) -> AsyncIterator[list[Running]]:
    """``size`` started nodes ``a``, ``b``, ``c``… sharing one prefix and one session key."""
    prefix = "t" + uuid.uuid4().hex[:10]
    key = new_key()
    nodes: list[Node] = []
    try:
        for i in range(size):
            node = Node(node_config(broker_url, prefix, "abcdefgh"[i], key, **sections))
            await node.start()
            nodes.append(node)
        yield [Running(n) for n in nodes]
    finally:
        for node in reversed(nodes):
            with contextlib.suppress(Exception):
                await node.stop(deadline_s=1)
