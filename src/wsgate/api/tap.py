"""The live action tap: ``GET /v1/tap?channel=…`` or ``?connection=…`` as a WebSocket.

Only an ``[admin] keys`` bearer key opens a tap (the middleware of
:mod:`wsgate.api.app` answers 401 without a key, 403 for a service key).
Each frame is one JSON text message::

    {"to": {"kind": "channel", "target": "acme:orders/42"}, "type": "orders/NEW",
     "payload": {...}, "from": {"userId": ..., "connectionId": ...} | null, "dropped": 0}

``dropped`` counts the actions this tap lost so far (its queue was full).
Payload fields named by ``[[tap.redact]]`` show as ``"[redacted]"``.

Costs and bounds: while no tap is open (here, or on another node of the
cluster) :attr:`wsgate.core.fanout.Fanout.taps` is ``None`` and the fan-out
checks nothing else. Each tap holds at most
``[tap] queue`` actions (the oldest is dropped, counted in ``dropped``); at
most ``[tap] max_taps`` taps are open per node (one more: 503). A tap is freed
when its WebSocket closes; the last one closed resets ``Fanout.taps`` to ``None``.
When the node stops (the application's ``on_shutdown``) every tap is closed
with 1001, so the API's shutdown never waits on a tap.

On a cluster a tap shows the actions of every node: the tapping node asks
the others, over the cluster bus, to forward what the tap wants to the tap's
own subject while it is open (:mod:`wsgate.cluster.taps`); an action that
several nodes deliver (a channel's) is shown once.
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

import msgspec
from aiohttp import WSMsgType, web

from wsgate.config import TapRedact
from wsgate.core.delivery import Delivery, TargetKind
from wsgate.core.taps import TapFilter, TapRegistry

__all__ = ["PROTOCOL", "REDACTED", "SEEN", "TAPS", "Remote", "Tap", "TapFull", "Taps", "redact",
           "routes"]

REDACTED = "[redacted]"
"""What a redacted field shows."""


class TapFull(Exception):
    """``[tap] max_taps`` taps are open already."""


def _plain(payload: Any) -> Any:
    if isinstance(payload, msgspec.Raw):
        return msgspec.json.decode(bytes(payload)) if len(payload) else None
    return msgspec.to_builtins(payload)


def redact(rules: Sequence[TapRedact], type_: str, payload: Any) -> Any:
    """``payload`` as plain JSON values, each field a rule matching ``type_`` names replaced.

    A path is ``payload.<key>.<key>…``; a missing key is ignored. The
    delivered payload is never changed (the redacted copy is the tap's own).
    """
    plain = _plain(payload)
    for rule in rules:
        if not fnmatch.fnmatchcase(type_, rule.match):
            continue
        for path in rule.fields:
            head, *keys = path.split(".")
            if head != "payload" or not keys:
                continue
            node = plain
            for key in keys[:-1]:
                node = node.get(key) if isinstance(node, dict) else None
            if isinstance(node, dict) and keys[-1] in node:
                node[keys[-1]] = REDACTED
    return plain


SEEN = 1024
"""Channel offsets a tap remembers to drop the same action forwarded by two nodes."""


class Tap:
    """One open tap: the actions of one channel or one connection, bounded by ``cap``.

    A :class:`~wsgate.core.taps.Watcher` of this node's fan-out, and on a
    cluster the receiver of what other nodes forward (:mod:`wsgate.cluster.taps`):
    a channel's action seen by several nodes arrives more than once, so
    channel deliveries are taken once per ``(channel, offset)``, over the last
    :data:`SEEN` offsets.
    """

    __slots__ = ("_ready", "_seen", "_seen_order", "dropped", "ended", "filter", "queue")

    def __init__(self, channel: str | None, connection: str | None, cap: int) -> None:
        self.filter = TapFilter(channel, connection)
        self.queue: deque[Delivery] = deque(maxlen=cap)
        """Bounded by ``cap`` (``[tap] queue``); drained by :meth:`next`."""
        self.dropped = 0
        self.ended = False
        """Set by :meth:`end` (the node stops): :meth:`next` answers ``None``."""
        self._ready = asyncio.Event()
        self._seen: set[tuple[str, int]] = set()
        self._seen_order: deque[tuple[str, int]] = deque()
        """With :attr:`_seen`: at most :data:`SEEN` entries, the oldest forgotten first."""

    @property
    def channel(self) -> str | None:
        return self.filter.channel

    @property
    def connection(self) -> str | None:
        return self.filter.connection

    def offer(self, d: Delivery, offset: int) -> None:
        """Queue ``d`` unless seen already; a full queue drops its oldest (counted in
        :attr:`dropped`)."""
        if offset and d.kind is TargetKind.CHANNEL:
            key = (d.target, offset)
            if key in self._seen:
                return
            self._seen.add(key)
            self._seen_order.append(key)
            if len(self._seen_order) > SEEN:
                self._seen.discard(self._seen_order.popleft())
        if len(self.queue) == self.queue.maxlen:
            self.dropped += 1
        self.queue.append(d)
        self._ready.set()

    async def next(self) -> Delivery | None:
        """Wait for and take the oldest queued delivery; ``None`` once :meth:`end` ran."""
        while not self.queue and not self.ended:
            self._ready.clear()
            await self._ready.wait()
        return None if self.ended else self.queue.popleft()

    def end(self) -> None:
        """The node stops: wake :meth:`next`, which answers ``None`` from now on."""
        self.ended = True
        self._ready.set()


class Remote(Protocol):
    """The cluster's side of a tap (:class:`wsgate.cluster.taps.ClusterTaps`)."""

    def opened(self, tap: Tap) -> None:
        """Ask the other nodes to forward what ``tap`` wants to it, until :meth:`closed`."""
        ...

    def closed(self, tap: Tap) -> None: ...


class Taps:
    """The taps open on one node, at most ``max_taps``; each a watcher of ``registry``
    while open, and on a cluster told to ``remote`` (the other nodes forward to it)."""

    def __init__(
        self,
        registry: TapRegistry,
        rules: Sequence[TapRedact],
        queue: int,
        max_taps: int,
        remote: Remote | None = None,
    ) -> None:
        self._registry = registry
        self.rules = list(rules)
        self._queue = queue
        self._max = max_taps
        self._remote = remote
        self.open_taps: list[Tap] = []
        """Bounded by ``max_taps``; a tap leaves it on :meth:`close`."""

    def open(self, channel: str | None, connection: str | None) -> Tap:
        """A new tap; raises :class:`TapFull` past ``max_taps``."""
        if len(self.open_taps) >= self._max:
            raise TapFull
        tap = Tap(channel, connection, self._queue)
        self.open_taps.append(tap)
        self._registry.add(tap)
        if self._remote is not None:
            self._remote.opened(tap)
        return tap

    def close(self, tap: Tap) -> None:
        """Free ``tap``: this node's fan-out and the other nodes stop offering to it."""
        if tap in self.open_taps:
            self.open_taps.remove(tap)
        self._registry.remove(tap)
        if self._remote is not None:
            self._remote.closed(tap)

    def end_all(self) -> None:
        """The node stops: every open tap's handler closes its WebSocket (1001)."""
        for tap in self.open_taps:
            tap.end()

    def frame(self, tap: Tap, d: Delivery) -> dict[str, Any]:
        """The JSON object a tap's client gets for ``d``."""
        origin = None if d.origin is None else msgspec.to_builtins(d.origin)
        return {
            "to": {"kind": d.kind.value, "target": d.target},
            "type": d.type,
            "payload": redact(self.rules, d.type, d.payload),
            "error": d.error,
            "from": origin,
            "dropped": tap.dropped,
        }


PROTOCOL = "wsgate.tap"
"""The subprotocol a tap answers with when the client offers it (a browser does, beside
its ``bearer.`` key: :data:`wsgate.api.app.BEARER_PROTOCOL`)."""

TAPS: web.AppKey[Taps] = web.AppKey("wsgate_taps", Taps)

routes = web.RouteTableDef()


@routes.get("/v1/tap")
async def tap(request: web.Request) -> web.StreamResponse:
    """Stream one channel's or connection's actions until the client closes."""
    channel = request.query.get("channel") or None
    connection = request.query.get("connection") or None
    if (channel is None) == (connection is None):
        raise web.HTTPBadRequest(reason="give one of ?channel= or ?connection=")
    taps = request.app[TAPS]
    try:
        opened = taps.open(channel, connection)
    except TapFull:
        raise web.HTTPServiceUnavailable(reason="too many taps open on this node") from None
    ws = web.WebSocketResponse(heartbeat=30, protocols=(PROTOCOL,))
    try:
        await ws.prepare(request)
        reader = asyncio.ensure_future(ws.receive())
        while not ws.closed:
            taken = asyncio.ensure_future(opened.next())
            done, _ = await asyncio.wait({reader, taken}, return_when=asyncio.FIRST_COMPLETED)
            if taken in done:
                delivery = taken.result()
                if delivery is None:  # the node stops
                    await ws.close(code=1001, message=b"node stopping")
                    break
                await ws.send_json(taps.frame(opened, delivery))
            else:
                taken.cancel()
            if reader in done:
                if reader.result().type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
                reader = asyncio.ensure_future(ws.receive())
        reader.cancel()
    finally:
        taps.close(opened)
    return ws
