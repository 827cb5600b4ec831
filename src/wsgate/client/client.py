"""The asyncio client: one WebSocket to a gateway, kept up by close code.

Mirrors ``clients/js/wsgate.js`` (``docs/client.md``), on ``websockets``
(the ``client`` extra), imported when the first connection opens so that
``import wsgate.client`` needs nothing beyond wsgate.

Lifecycle: :meth:`Client.start` (or ``async with``) starts one task that
connects, reads, and reconnects as :mod:`wsgate.client.policy` says. Every
connection: credentials are taken (``get_token`` is called), the upgrade
carries the cookie or ``Authorization: Bearer`` — or, with
``token_in="auth"``, ``@@wsgate/AUTH {token}`` is the first frame — and once
``WELCOME`` arrives (``state`` becomes ``open``) every channel is rejoined
with ``since`` and the actions queued meanwhile are written, in that order.
On ``@@wsgate/SESSION_EXPIRING`` the client calls ``get_token`` and sends
``@@wsgate/REFRESH {token}``. :meth:`Client.close` stops it for good.

Handlers (:meth:`Client.on`) are plain functions called on the event loop, in
arrival order; an action a channel already delivered (its ``meta.offset`` not
above the last seen there) is dropped before them.

Bounds, and what frees them: pending requests (``max_pending``; answer,
timeout or close), the offline queue (``max_queue``; written at the next
WELCOME, dropped at close), channels (``max_channels``; leave, refusal, close),
presence (one entry per channel, ``max_members`` each), at most one refresh
task at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import random as _random
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, Literal

from wsgate.client.channels import ChannelEntry, ChannelTable, hub_of
from wsgate.client.errors import (
    CLOSED,
    DISCONNECTED,
    LEFT,
    QUEUE_FULL,
    ClientError,
    error_of,
)
from wsgate.client.handlers import Handler, HandlerSet
from wsgate.client.policy import DEFAULT_BACKOFF, Backoff, reconnect_delay
from wsgate.client.presence import Member, PresenceBook
from wsgate.client.requests import Pending, RequestTable
from wsgate.protocol import builtins as B
from wsgate.protocol.codes import CloseCode

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

__all__ = [
    "AUTH",
    "EVENTS",
    "REFRESH",
    "SESSION_EXPIRING",
    "SUBPROTOCOL",
    "Client",
    "State",
    "TokenSource",
]

log = logging.getLogger("wsgate.client")

SUBPROTOCOL: Final = "wsgate.v1.json"
AUTH: Final = "@@wsgate/AUTH"
"""First action of a token connection that cannot set headers: ``{token}``."""
SESSION_EXPIRING: Final = "@@wsgate/SESSION_EXPIRING"
"""The gateway's warning ``{exp}`` before the credential expires."""
REFRESH: Final = "@@wsgate/REFRESH"
"""The client's answer to SESSION_EXPIRING: ``{token}``."""
HANDLED_MAX: Final = 1024
"""At most this many handled ``meta.ack`` offsets are remembered for de-duplication."""
HELD_MAX: Final = 1024
"""At most this many pushes are held while a RESUME is answered; past it they go at once."""
ABNORMAL: Final = 1006
"""No close frame (network, server gone, or the upgrade failed)."""

State = Literal["connecting", "open", "reconnecting", "closed"]

TokenSource = Callable[[], "str | Awaitable[str | None] | None"]
"""Returns the token to connect (or refresh) with; may be a coroutine function."""

EVENTS: Final = frozenset(
    {"welcome", "close", "unauthenticated", "presence", "state", "error", "session_expiring"}
)
"""Names :meth:`Client.on` treats as client events rather than action types."""


class Client:
    """A wsgate connection that reconnects, rejoins and correlates.

    Construct, then ``await start()`` (or ``async with``, which also waits for
    the first WELCOME). Every coroutine method must run on the loop that
    started the client.
    """

    def __init__(
        self,
        url: str,
        *,
        # Credentials
        cookie: str | None = None,
        token: str | None = None,
        get_token: TokenSource | None = None,
        token_in: Literal["header", "auth"] = "header",
        origin: str | None = None,
        headers: Mapping[str, str] | None = None,
        # Reconnection
        reconnect: bool = True,
        backoff: Backoff = DEFAULT_BACKOFF,
        random: Callable[[], float] = _random.random,
        # Timeouts
        timeout_s: float = 10.0,
        open_timeout_s: float = 10.0,
        # Limits
        max_pending: int = 256,
        max_queue: int = 256,
        max_channels: int = 64,
        max_members: int = 10_000,
    ) -> None:
        self.url = url
        self._cookie = cookie
        self._token = token
        self._get_token = get_token
        self._token_in = token_in
        self._origin = origin
        self._headers = dict(headers or {})
        self._reconnect = reconnect
        self._backoff = backoff
        self._random = random
        self._timeout_s = timeout_s
        self._open_timeout_s = open_timeout_s
        self._max_queue = max_queue

        self._state: State = "closed"
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping: asyncio.Event | None = None
        self._attempt = 0
        """Failed attempts since the last WELCOME: drives the backoff."""
        self._last_error: dict[str, Any] | None = None
        """The ERROR payload when it is the last frame received (read at the close)."""
        self.welcome: dict[str, Any] | None = None
        """The last WELCOME payload ``{connectionId, userId, node, hubs, heartbeatMs}``."""
        self.close_code: int | None = None
        """The close code that stopped the client, once it is ``closed``."""
        self.inbox: int | None = None
        """The last inbox ``meta.offset`` seen (the first WELCOME's at first): a reconnect
        sends ``RESUME`` from it before anything else."""
        self._handled: dict[int, None] = {}
        """Offsets of ``meta.ack`` actions handled, oldest first (at most
        :data:`HANDLED_MAX`): a redelivery is acknowledged again, not handled twice."""
        self._resume_at: int | None = None
        """WELCOME's inbox offset while the answer to the RESUME sent after it (RESUMED,
        then the replay up to this offset) is not all in; ``None`` otherwise."""
        self._resumed = False
        """RESUMED arrived for :attr:`_resume_at`: the replay frames follow it."""
        self._held: list[tuple[str, dict[str, Any], int]] = []
        """Inbox actions past :attr:`_resume_at` that came before the replay ended (the
        gateway sends a push made before it read RESUME live, ahead of RESUMED):
        handed to the handlers after the replay, in order (at most :data:`HELD_MAX`)."""

        self._seq = 0
        self._requests = RequestTable(max_pending)
        self._queue: deque[tuple[str, Pending | None]] = deque()
        self._channels = ChannelTable(max_channels)
        self._presence = PresenceBook(max_members)
        self._navigations: dict[str, str | None] = {}
        """NAVIGATE request id -> the hub it named; freed when the request settles."""
        self._default_hub: str | None = None
        self._refreshing: asyncio.Task[None] | None = None
        self._welcomed: asyncio.Future[dict[str, Any]] | None = None
        self._closed_with: tuple[int, str] | None = None
        """What :meth:`close` was called with."""

        self._actions = HandlerSet()
        self._events = HandlerSet()

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> State:
        """``connecting``, ``open`` (WELCOME received), ``reconnecting`` or ``closed``."""
        return self._state

    @property
    def channels(self) -> list[str]:
        """The channels this client is in (or will rejoin)."""
        return self._channels.names()

    @property
    def pending(self) -> int:
        """Requests waiting for their answers."""
        return len(self._requests)

    @property
    def queued(self) -> int:
        """Actions waiting for a connection."""
        return len(self._queue)

    def presence(self, channel: str) -> list[Member]:
        """The members of a joined channel (empty past the presence threshold)."""
        return self._presence.members(channel)

    def presence_count(self, channel: str) -> int:
        """How many members a joined channel has."""
        return self._presence.count(channel)

    def offset(self, channel: str) -> int | None:
        """The last ``meta.offset`` seen in ``channel``: what a rejoin passes as ``since``."""
        entry = self._channels.get(channel)
        return entry.offset if entry is not None else None

    # --------------------------------------------------------------- handlers

    def on(self, pattern: str, handler: Handler) -> Callable[[], None]:
        """Call ``handler`` for received actions by type pattern, or for a client event.

        Patterns: ``orders/UPDATE``, ``orders/*``, ``*``. Events (:data:`EVENTS`):
        ``welcome`` (payload), ``close`` (``{code, reason, willReconnect, delayMs}``),
        ``unauthenticated`` (``{signInUrl}``), ``presence`` (``{channel, members,
        count}``), ``state`` (the new state), ``error`` (a :class:`ClientError`),
        ``session_expiring`` (the payload). Returns a function that unsubscribes.
        """
        self._table(pattern).add(pattern, handler)
        return lambda: self.off(pattern, handler)

    def off(self, pattern: str, handler: Handler) -> None:
        """Remove a handler added with :meth:`on`."""
        self._table(pattern).remove(pattern, handler)

    # -------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start connecting (no-op unless ``closed``); returns at once."""
        if self._state != "closed":
            return
        self._attempt = 0
        self.close_code = None
        self._closed_with = None
        self._stopping = asyncio.Event()
        self._welcomed = asyncio.get_running_loop().create_future()
        self._set_state("connecting")
        self._task = asyncio.get_running_loop().create_task(self._run(self._stopping))

    async def wait_open(self, timeout_s: float | None = None) -> dict[str, Any]:
        """Wait for the first WELCOME since :meth:`start`; its payload.

        Raises :class:`ClientError` ``CLOSED`` when the client stops first.
        """
        if self._welcomed is None:
            raise ClientError(CLOSED, "the client was not started")
        return await asyncio.wait_for(asyncio.shield(self._welcomed), timeout_s)

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close for good: no reconnect; pending requests and joins fail with ``CLOSED``.

        Channels and presence are forgotten; returns when the connection task ended.
        """
        if self._stopping is None or self._state == "closed":
            return
        self._closed_with = (code, reason)
        self._stopping.set()
        ws, task = self._ws, self._task
        if ws is not None:
            await ws.close(code, reason)
        elif task is not None:
            task.cancel()  # in get_token or the opening handshake: no need to wait for either
        if task is not None and task is not asyncio.current_task():
            await asyncio.wait([task])
        if not self._is_closed():  # a task cancelled before it ran had no finally
            self._stop(code, reason)

    async def __aenter__(self) -> Client:
        """Start, and wait up to twice ``open_timeout_s`` for the first WELCOME."""
        await self.start()
        try:
            await self.wait_open(self._open_timeout_s * 2)
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    # --------------------------------------------------------------- outbound

    async def send(
        self,
        type_: str,
        payload: Any = None,
        meta: Mapping[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Send an action and wait for its answer (the first action whose
        ``meta.inReplyTo`` is its ``meta.id``, which this sets unless given).

        Raises :class:`ClientError`: the gateway's code for an error answer,
        ``TIMEOUT``, ``DISCONNECTED`` (the socket closed after sending),
        ``QUEUE_FULL``, ``PENDING_FULL`` or ``CLOSED``. While disconnected the
        action is queued (and still times out).
        """
        request = await self._request(type_, payload, meta, timeout_s)
        return await request.future

    async def dispatch(self, action: Mapping[str, Any]) -> bool:
        """Send an action without waiting for anything (queued while disconnected).

        Returns False when the client is closed or the queue is full.
        """
        if not isinstance(action.get("type"), str):
            raise TypeError("an action needs a string type")
        if self._state == "closed":
            return False
        return await self._transmit(json.dumps(dict(action)))

    async def join(self, channel: str) -> dict[str, Any]:
        """Join ``<hub>:<view>``; the JOINED action.

        The channel is rejoined after every reconnect with ``since`` = the last
        offset seen. A refusal raises the gateway's code and forgets the channel;
        while disconnected this waits for the next connection.
        """
        self._check_open()
        entry = self._channels.entry(channel)
        joined = entry.waiter()
        if self._state == "open" and not entry.in_flight:
            await self._join_now(entry)
        return await asyncio.shield(joined)

    async def leave(self, channel: str) -> dict[str, Any] | None:
        """Leave ``channel``: forgotten at once; the LEFT, or None when not connected."""
        self._forget(channel)
        if self._state != "open":
            return None
        try:
            return await self.send(B.LEAVE, {"channel": channel})
        except ClientError as err:
            if err.code in (DISCONNECTED, CLOSED):
                return None
            raise

    async def navigate(self, view: str, hub: str | None = None) -> dict[str, Any]:
        """Open an application view: the gateway leaves this connection's view in
        ``hub`` (default: the active organization) and joins ``<hub>:<view>``.

        Returns the JOINED action (``payload.channel`` is the address joined).
        """
        key = hub if hub is not None else self._default_hub
        previous = self._channels.view_in(key) if key is not None else None
        if previous is not None and not previous.server_view:
            # Rejoined with JOIN after a reconnect: the gateway does not know it
            # as this connection's view, so NAVIGATE would not leave it.
            self._forget(previous.channel)
            if self._state == "open":
                await self.dispatch({"type": B.LEAVE, "payload": {"channel": previous.channel}})
        payload: dict[str, Any] = {"view": view} if hub is None else {"view": view, "hub": hub}
        request = await self._request(B.NAVIGATE, payload, None, None, navigate_hub=(hub,))
        return await request.future

    async def refresh(self, token: str | None = None) -> bool:
        """Send ``@@wsgate/REFRESH``: ``{token}``, or ``{}`` after a cookie refresh.

        SESSION_EXPIRING calls this with ``get_token``'s token by itself.
        Returns False when the client is closed or the queue is full.
        """
        payload = {} if token is None else {"token": token}
        return await self.dispatch({"type": REFRESH, "payload": payload})

    async def ping(self, payload: Any = None) -> dict[str, Any]:
        """Round trip to the gateway: the PONG action."""
        return await self.send(B.PING, payload)

    # -------------------------------------------------------------- internals

    async def _request(
        self,
        type_: str,
        payload: Any,
        meta: Mapping[str, Any] | None,
        timeout_s: float | None,
        navigate_hub: tuple[str | None] | None = None,
        direct: ClientConnection | None = None,
    ) -> Pending:
        """Register and write (or queue) one request; the caller awaits its future.

        ``direct``: write on that socket now, whatever the state (the rejoins at WELCOME).
        """
        self._check_open()
        meta = dict(meta or {})
        id_ = str(meta.get("id") or self._next_id())
        meta["id"] = id_
        frame = json.dumps({"type": type_, "payload": payload, "meta": meta})
        timeout = self._timeout_s if timeout_s is None else timeout_s
        request = self._requests.add(id_, type_, timeout)
        if navigate_hub is not None:
            self._navigations[id_] = navigate_hub[0]
            request.future.add_done_callback(lambda _f: self._navigations.pop(id_, None))
        if direct is not None:
            request.sent = True
            await self._write(direct, frame)
        elif not await self._transmit(frame, request):
            self._requests.settle(id_, ClientError(QUEUE_FULL, "too many actions queued"))
        return request

    def _check_open(self) -> None:
        if self._state == "closed":
            raise ClientError(CLOSED, "the client is closed")

    async def _transmit(self, frame: str, request: Pending | None = None) -> bool:
        """Write ``frame`` now, or queue it until the next WELCOME; False when the queue is full."""
        ws = self._ws
        if self._state == "open" and ws is not None:
            if request is not None:
                request.sent = True
            await self._write(ws, frame)
            return True
        return self._enqueue(frame, request)

    def _enqueue(self, frame: str, request: Pending | None) -> bool:
        if len(self._queue) >= self._max_queue:
            return False
        self._queue.append((frame, request))
        return True

    async def _write(self, ws: ClientConnection, frame: str) -> None:
        from websockets.exceptions import ConnectionClosed

        # On a close, the reader sees it and fails what was sent on this socket.
        with contextlib.suppress(ConnectionClosed):
            await ws.send(frame)

    async def _run(self, stopping: asyncio.Event) -> None:
        """Connect, read, reconnect, until the policy or :meth:`close` says stop."""
        code: int = CloseCode.NORMAL
        reason = ""
        try:
            while not stopping.is_set():
                code, reason = await self._connect_once(stopping)
                if stopping.is_set():
                    break
                last_error, self._last_error = self._last_error, None
                retry = last_error.get("retryAfterMs") if last_error else None
                delay = (
                    reconnect_delay(
                        code,
                        self._attempt,
                        self._backoff,
                        retry_after_ms=retry if isinstance(retry, int | float) else None,
                        random=self._random,
                    )
                    if self._reconnect
                    else None
                )
                if code == CloseCode.UNAUTHENTICATED:
                    sign_in = last_error.get("signInUrl") if last_error else None
                    self._events.emit("unauthenticated", {"signInUrl": sign_in})
                if delay is None:
                    return
                self._attempt += 1
                self._set_state("reconnecting")
                self._events.emit(
                    "close",
                    {"code": code, "reason": reason, "willReconnect": True, "delayMs": delay},
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), delay / 1000)
        finally:
            self._stop(*(self._closed_with or (code, reason)))

    async def _connect_once(self, stopping: asyncio.Event) -> tuple[int, str]:
        """One connection: its whole life; the close code and reason it ended with."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, WebSocketException

        self._set_state("connecting")
        try:
            token = await self._current_token()
        except Exception as exc:
            log.warning("get_token failed: %s", exc)
            return ABNORMAL, f"get_token failed: {exc}"
        headers = dict(self._headers)
        if self._cookie is not None:
            headers["Cookie"] = self._cookie
        if token is not None and self._token_in == "header":
            headers["Authorization"] = f"Bearer {token}"
        try:
            ws = await connect(
                self.url,
                additional_headers=headers,
                origin=self._origin,  # type: ignore[arg-type]
                subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                open_timeout=self._open_timeout_s,
                proxy=None,
                max_size=None,
            )
        except (OSError, TimeoutError, WebSocketException) as exc:
            return ABNORMAL, str(exc)
        if stopping.is_set():
            await ws.close()
            return CloseCode.NORMAL, ""
        self._ws = ws
        try:
            if token is not None and self._token_in == "auth":
                await ws.send(json.dumps({"type": AUTH, "payload": {"token": token}}))
            async for data in ws:
                await self._on_frame(ws, data)
        except ConnectionClosed:
            pass
        finally:
            self._detach()
        return ws.close_code or ABNORMAL, ws.close_reason or ""

    async def _current_token(self) -> str | None:
        if self._get_token is None:
            return self._token
        result = self._get_token()
        if inspect.isawaitable(result):
            result = await result
        return result

    def _detach(self) -> None:
        """The socket went: fail what was sent on it; keep channels and the queue."""
        self._ws = None
        if self._refreshing is not None:
            self._refreshing.cancel()
            self._refreshing = None
        for entry in self._channels:
            entry.server_view = False
            entry.in_flight = False
        if self._stopping is not None and self._stopping.is_set():
            err = ClientError(CLOSED, "the client was closed")  # by close(): nothing follows
        else:
            err = ClientError(DISCONNECTED, "connection closed")
        self._requests.reject_sent(err)

    def _stop(self, code: int, reason: str) -> None:
        """Become ``closed``: fail and free everything pending; emit the last ``close``."""
        self._ws = None
        self._task = None
        self.close_code = code
        err = ClientError(CLOSED, f"connection closed ({code}), not reconnecting")
        self._requests.reject_all(err)
        self._queue.clear()
        for entry in self._channels:
            entry.settle(err)
        self._channels.clear()
        self._presence.clear()
        self._navigations.clear()
        if self._welcomed is not None and not self._welcomed.done():
            self._welcomed.set_exception(err)
            self._welcomed.exception()
        self._set_state("closed")
        self._events.emit(
            "close", {"code": code, "reason": reason, "willReconnect": False, "delayMs": None}
        )

    async def _on_frame(self, ws: ClientConnection, data: str | bytes) -> None:
        """Handle one frame: built-ins first, then the request it answers, then handlers."""
        try:
            action = json.loads(data)
        except ValueError:
            self._events.emit("error", ClientError("BAD_REQUEST", "the gateway sent non-JSON"))
            return
        if not isinstance(action, dict) or not isinstance(action.get("type"), str):
            return
        type_: str = action["type"]
        payload = action.get("payload")
        p: dict[str, Any] = payload if isinstance(payload, dict) else {}
        meta_ = action.get("meta")
        meta: dict[str, Any] = meta_ if isinstance(meta_, dict) else {}
        self._last_error = p if type_ == B.ERROR else None
        channel, offset = meta.get("channel"), meta.get("offset")
        if channel is None and isinstance(offset, int) and not type_.startswith("@@wsgate/"):
            await self._from_inbox(ws, type_, action, offset, meta.get("ack") is True)
            return
        if self._resumed:  # RESUMED's replay is written right after it: it is over
            self._release_held()
        if (
            isinstance(channel, str)
            and isinstance(offset, int)
            and not type_.startswith("@@wsgate/")
            and not self._channels.seen(channel, offset)
        ):
            return  # delivered already (a replay overlapping what was seen)
        reply_to = meta.get("inReplyTo")
        if type_ == B.WELCOME:
            await self._on_welcome(ws, p)
        elif type_ == B.JOINED:
            self._on_joined(p, reply_to)
        elif type_ == B.RESUMED:
            top = p.get("inbox")
            # The window is gone: what follows starts after this WELCOME's offset.
            if p.get("recovered") is False and isinstance(top, int) and (self.inbox or 0) < top:
                self.inbox = top
            if self._resume_at is not None:
                self._resumed = True
                if (self.inbox or 0) >= self._resume_at:  # nothing (more) to replay
                    self._release_held()
        elif type_ == B.LEFT:
            if reply_to is None and isinstance(p.get("channel"), str):
                self._forget(p["channel"])
        elif type_ == B.PRESENCE:
            ch = p.get("channel")
            if isinstance(ch, str) and self._presence.apply(
                ch, p.get("joined"), p.get("left"), p.get("count")
            ):
                self._emit_presence(ch)
        elif type_ == B.ERROR:
            if reply_to is None and self._resume_at is not None and not self._resumed:
                self._release_held()  # the RESUME was refused: no replay comes
            if not (isinstance(reply_to, str) and self._requests.has(reply_to)):
                self._events.emit("error", error_of(action))
        elif type_ == SESSION_EXPIRING:
            self._events.emit("session_expiring", p)
            self._refresh()
        # A NAVIGATE is answered by the LEFT of the hub's old view and then its
        # JOINED (or an ERROR), all with its id: the JOINED settles it.
        navigation_left = type_ == B.LEFT and reply_to in self._navigations
        if isinstance(reply_to, str) and not navigation_left:
            self._requests.settle(
                reply_to, error_of(action) if action.get("error") is True else action
            )
        self._actions.emit(type_, action)

    async def _on_welcome(self, ws: ClientConnection, payload: dict[str, Any]) -> None:
        """Rejoin, then write the queue, then become ``open``: in that order on the wire.

        Until ``open``, what is sent meanwhile joins the queue behind what waited.
        """
        self.welcome = payload
        self._attempt = 0
        self._held = []  # a connection's held pushes are replayed to the next one
        self._resume_at, self._resumed = None, False
        if self.inbox is not None:  # RESUME is accepted only as the first action
            at = payload.get("inbox")
            if isinstance(at, int) and at > self.inbox:
                self._resume_at = at
            await self._write(ws, json.dumps({"type": B.RESUME, "payload": {"inbox": self.inbox}}))
        elif isinstance(payload.get("inbox"), int):
            self.inbox = payload["inbox"]
        for entry in self._channels:
            if not entry.in_flight:
                await self._join_now(entry, ws)
        while self._queue and self._ws is ws:
            frame, request = self._queue.popleft()
            if request is not None:
                if request.done:
                    continue
                request.sent = True
            await self._write(ws, frame)
        if self._ws is not ws:
            return
        self._set_state("open")
        for entry in self._channels:  # join() calls made while the queue was written
            if not entry.in_flight and entry.joined is not None and not entry.joined.done():
                await self._join_now(entry)
        if self._welcomed is not None and not self._welcomed.done():
            self._welcomed.set_result(payload)
        self._events.emit("welcome", payload)

    async def _from_inbox(
        self, ws: ClientConnection, type_: str, action: dict[str, Any], offset: int, ack: bool
    ) -> None:
        """An inbox action (or an acknowledged one to this connection): to the handlers
        once, then ``ACK`` when it asked for one. A repeat (at or below the last inbox
        offset, or a handled ``meta.ack`` one) is dropped, an ack'd one acknowledged
        again. Only an action without ``meta.ack`` moves :attr:`inbox` (an ack'd one may
        be a connection's, of another sequence)."""
        at = self._resume_at
        if at is not None and not ack:
            if offset > at:  # live, not replayed
                if not self._resumed and len(self._held) < HELD_MAX:
                    self._held.append((type_, action, offset))
                    return
                self._release_held()  # after RESUMED: the replay is over
            elif self._resumed and offset >= at:  # the replay's last
                self._hand(type_, action, offset)
                self._release_held()
                return
        if not ack:
            self._hand(type_, action, offset)
            return
        repeat = offset in self._handled
        if not repeat:
            self._actions.emit(type_, action)
            self._handled[offset] = None
            if len(self._handled) > HANDLED_MAX:
                del self._handled[next(iter(self._handled))]
        await self._write(ws, json.dumps({"type": B.ACK, "payload": {"offset": offset}}))

    def _hand(self, type_: str, action: dict[str, Any], offset: int) -> None:
        """An inbox action without ``meta.ack``: to the handlers unless a repeat."""
        if self.inbox is None or offset > self.inbox:
            self.inbox = offset
            self._actions.emit(type_, action)

    def _release_held(self) -> None:
        """The RESUME is answered: hand the held pushes over, in order."""
        held, self._held = self._held, []
        self._resume_at, self._resumed = None, False
        for type_, action, offset in held:
            self._hand(type_, action, offset)

    def _on_joined(self, p: dict[str, Any], reply_to: object) -> None:
        channel = p.get("channel")
        if not isinstance(channel, str):
            return
        try:
            entry = self._channels.entry(channel)
        except ClientError as err:
            self._events.emit("error", err)
            return
        if isinstance(reply_to, str) and reply_to in self._navigations:
            hub = hub_of(channel)
            if self._navigations[reply_to] is None:
                self._default_hub = hub
            previous = self._channels.view_in(hub)
            if previous is not None and previous is not entry:
                self._forget(previous.channel)
            entry.view = entry.server_view = True
        offset = p.get("offset")
        # With `since` accepted, the missed actions follow and advance the offset;
        # with recovered: false the history is gone and JOINED's offset is the start.
        if (entry.offset is None or p.get("recovered") is False) and isinstance(offset, int):
            entry.offset = offset
        self._presence.reset(channel, p.get("members"), p.get("count"))
        self._emit_presence(channel)

    async def _join_now(self, entry: ChannelEntry, direct: ClientConnection | None = None) -> None:
        entry.in_flight = True
        payload: dict[str, Any] = {"channel": entry.channel}
        if entry.offset is not None:
            payload["since"] = entry.offset
        try:
            request = await self._request(B.JOIN, payload, None, None, direct=direct)
        except ClientError as err:
            entry.in_flight = False
            entry.settle(err)
            return
        request.future.add_done_callback(lambda f: self._joined(entry, f))

    def _joined(self, entry: ChannelEntry, future: asyncio.Future[dict[str, Any]]) -> None:
        """A JOIN settled: resolve the join() calls, or forget a refused channel."""
        entry.in_flight = False
        if future.cancelled():
            return
        err = future.exception()
        if err is None:
            entry.settle(future.result())
            return
        if not isinstance(err, ClientError) or err.code == DISCONNECTED:
            return  # rejoined on the next connection
        if err.action is not None and self._channels.get(entry.channel) is entry:
            self._forget(entry.channel, err)  # refused by the gateway
            return
        waiting = entry.joined is not None
        entry.settle(err)
        if not waiting and err.code != CLOSED:
            self._events.emit("error", err)

    def _forget(self, channel: str, reason: ClientError | None = None) -> None:
        """Stop tracking ``channel``: no rejoin, no presence; its join() calls fail."""
        entry = self._channels.pop(channel)
        if entry is None:
            return
        self._presence.drop(channel)
        waiting = entry.joined is not None and not entry.joined.done()
        entry.settle(reason or ClientError(LEFT, f"left {channel}"))
        if reason is not None and not waiting:
            self._events.emit("error", reason)
        self._emit_presence(channel)

    def _refresh(self) -> None:
        """Answer SESSION_EXPIRING: ``get_token``, then REFRESH (one at a time)."""
        if self._get_token is None or self._refreshing is not None:
            return
        self._refreshing = asyncio.get_running_loop().create_task(self._send_refresh())

    async def _send_refresh(self) -> None:
        try:
            token = await self._current_token()
            if token is not None:
                await self.refresh(token)
        except Exception as exc:
            log.warning("refresh failed: %s", exc)
            self._events.emit("error", ClientError("REFRESH_FAILED", str(exc)))
        finally:
            self._refreshing = None

    def _emit_presence(self, channel: str) -> None:
        self._events.emit(
            "presence",
            {
                "channel": channel,
                "members": self._presence.members(channel),
                "count": self._presence.count(channel),
            },
        )

    def _is_closed(self) -> bool:
        """Read the state afresh (it changes across awaits)."""
        return self._state == "closed"

    def _set_state(self, state: State) -> None:
        if state != self._state:
            self._state = state
            self._events.emit("state", state)

    def _next_id(self) -> str:
        self._seq += 1
        return f"c{self._seq}"

    def _table(self, name: str) -> HandlerSet:
        return self._events if name in EVENTS else self._actions
