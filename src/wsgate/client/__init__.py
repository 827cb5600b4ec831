"""wsgate's Python client: asyncio, for backend consumers, native tools and tests.

```python
from wsgate.client import Client

async with Client("ws://127.0.0.1:8080/ws", token=jwt) as client:
    client.on("orders/*", print)
    joined = await client.join("acme:orders/42")
    reply = await client.send("orders/GET", {"id": 42})
```

The connection runs on ``websockets`` (``pip install 'wsgate[client]'``), which
is imported when the first connection opens: importing this package needs
nothing else. ``docs/client.md`` documents it beside the JS client.

Modules, one concept each: :mod:`~wsgate.client.client` (the connection),
:mod:`~wsgate.client.policy` (reconnect by close code, the JS client's table),
:mod:`~wsgate.client.requests` (futures by ``meta.id``),
:mod:`~wsgate.client.channels` (channels and offsets),
:mod:`~wsgate.client.presence` (members per channel),
:mod:`~wsgate.client.handlers` (handlers by type pattern),
:mod:`~wsgate.client.errors` (:class:`ClientError` and the client's codes).
"""

from __future__ import annotations

from wsgate.client.client import (
    AUTH,
    EVENTS,
    REFRESH,
    SESSION_EXPIRING,
    SUBPROTOCOL,
    Client,
    State,
    TokenSource,
)
from wsgate.client.errors import ClientError
from wsgate.client.policy import DEFAULT_BACKOFF, Backoff, reconnect_delay, should_reconnect
from wsgate.client.presence import Member, PresenceBook

__all__ = [
    "AUTH",
    "DEFAULT_BACKOFF",
    "EVENTS",
    "REFRESH",
    "SESSION_EXPIRING",
    "SUBPROTOCOL",
    "Backoff",
    "Client",
    "ClientError",
    "Member",
    "PresenceBook",
    "State",
    "TokenSource",
    "reconnect_delay",
    "should_reconnect",
]
