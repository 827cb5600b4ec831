"""Handlers of the client's built-in actions: JOIN, LEAVE, NAVIGATE, PING.

Each parses its payload strictly (unknown fields are refused) and answers
with its counterpart (``JOINED``, ``LEFT``, ``PONG``) or an ``ERROR``, always
with ``meta.inReplyTo`` when the client gave ``meta.id``. JOIN and NAVIGATE
go through :meth:`JoinHost.request_join` (the gateway's: policy, gates,
pool), whose answer may come later; the ``LEFT`` of a
NAVIGATE's previous view carries its ``inReplyTo`` too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

import msgspec

from wsgate.backends.base import RecentHistory
from wsgate.core.joins import JoinAnswer, JoinRefused
from wsgate.protocol import builtins as bi
from wsgate.protocol.address import PUBLIC_HUB, Address, parse_address
from wsgate.protocol.codes import ErrorCode
from wsgate.protocol.envelope import Action
from wsgate.typing import ChannelAddress, HubId

if TYPE_CHECKING:
    from wsgate.core.connection import Connection
    from wsgate.core.dispatch import Handler
    from wsgate.core.pool import Channel

__all__ = ["JoinHost", "install"]

P = TypeVar("P")


class JoinHost(Protocol):
    """What the built-in handlers use of the gateway (:class:`~wsgate.core.gateway.Gateway`)."""

    @property
    def history(self) -> RecentHistory:
        """The recent history a JOIN's ``since`` replays from."""
        ...

    def request_join(
        self,
        conn: Connection,
        address: Address,
        answer: JoinAnswer,
        before_pool: Callable[[], object] | None = None,
        *,
        token: str | None = None,
    ) -> None:
        """The one join pipeline; ``answer`` is called exactly once, maybe later.
        ``token``: the client's channel token (a ``token = true`` channel)."""
        ...

    def leave(self, conn: Connection, address: ChannelAddress) -> bool:
        """Leave ``address``; ``False`` when ``conn`` was not in it."""
        ...

    def joined_payload(self, channel: Channel) -> bi.JoinedPayload:
        """The ``JOINED`` payload of ``channel`` (count, offset, members)."""
        ...


def _payload(conn: Connection, action: Action, kind: type[P]) -> P | None:
    try:
        return msgspec.json.decode(action.payload, type=kind)
    except msgspec.DecodeError as exc:
        conn.send_error(ErrorCode.BAD_REQUEST, f"bad {action.type} payload: {exc}", _rid(action))
        return None


def _rid(action: Action) -> str | None:
    return None if action.meta is None else action.meta.id


def _address(conn: Connection, action: Action, text: str) -> Address | None:
    address = parse_address(text)
    if address is None:
        conn.send_error(ErrorCode.BAD_REQUEST, "bad channel address", _rid(action))
    return address


def install(gw: JoinHost, register: Callable[[str, Handler], None]) -> None:
    """Give ``register`` (the dispatcher's) a handler for each built-in action of ``gw``.

    Called once, while the gateway is built, before any traffic.
    """

    def answer(conn: Connection, action: Action, since: int | None) -> JoinAnswer:
        """The client's answer to its join: ``JOINED`` then the replay, or ``ERROR``."""

        def answered(result: Channel | JoinRefused) -> None:
            if conn.closed:
                return
            if isinstance(result, JoinRefused):
                conn.send_error(result.code, result.message, _rid(action))
                return
            payload = gw.joined_payload(result)
            replay: list[bytes] = []
            if since is not None and not result.options.recovery:
                payload.recovered = False  # its namespace has recovery off
            elif since is not None:
                found = gw.history.since(result.address, since)
                payload.recovered = found.recovered
                replay = found.entries
            conn.send_action(bi.JOINED, payload, in_reply_to=_rid(action))
            for data in replay:
                conn.sink.send(data)

        return answered

    def on_join(conn: Connection, action: Action) -> None:
        body = _payload(conn, action, bi.JoinPayload)
        if body is None:
            return
        address = _address(conn, action, body.channel)
        if address is not None:
            gw.request_join(conn, address, answer(conn, action, body.since), token=body.token)

    def on_leave(conn: Connection, action: Action) -> None:
        body = _payload(conn, action, bi.LeavePayload)
        if body is None:
            return
        if not gw.leave(conn, ChannelAddress(body.channel)):
            conn.send_error(ErrorCode.NOT_JOINED, f"not in {body.channel}", _rid(action))
            return
        conn.send_action(bi.LEFT, {"channel": body.channel}, in_reply_to=_rid(action))

    def on_navigate(conn: Connection, action: Action) -> None:
        body = _payload(conn, action, bi.NavigatePayload)
        if body is None:
            return
        hub = body.hub or conn.principal.org or PUBLIC_HUB
        address = _address(conn, action, f"{hub}:{body.view}")
        if address is None:
            return
        joined = answer(conn, action, body.since)

        def leave_previous() -> None:
            # Once every gate allowed: a refused NAVIGATE leaves the old view intact.
            views = conn.views
            previous = None if views is None else views.get(HubId(hub))
            if previous is not None and previous != address.value:
                gw.leave(conn, previous)
                conn.send_action(bi.LEFT, {"channel": previous}, in_reply_to=_rid(action))

        def answered(result: Channel | JoinRefused) -> None:
            joined(result)
            if not isinstance(result, JoinRefused):
                if conn.views is None:
                    conn.views = {}
                conn.views[address.hub] = address.value

        gw.request_join(conn, address, answered, leave_previous, token=body.token)

    def on_ping(conn: Connection, action: Action) -> None:
        conn.send_action(bi.PONG, action.payload, in_reply_to=_rid(action))

    register(bi.JOIN, on_join)
    register(bi.LEAVE, on_leave)
    register(bi.NAVIGATE, on_navigate)
    register(bi.PING, on_ping)
