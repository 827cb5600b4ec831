"""Handlers of the client's built-in actions: JOIN, LEAVE, NAVIGATE, PING.

Each parses its payload strictly (unknown fields are refused) and answers
with its counterpart (``JOINED``, ``LEFT``, ``PONG``) or an ``ERROR``, always
with ``meta.inReplyTo`` when the client gave ``meta.id``. JOIN and NAVIGATE
pass the channel policy, then the authorize hook (when one is routed), whose
answer may come later: the join then completes asynchronously.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import msgspec

from wsgate.protocol import builtins as bi
from wsgate.protocol.address import PUBLIC_HUB, Address, parse_address
from wsgate.protocol.codes import ErrorCode
from wsgate.protocol.envelope import Action
from wsgate.typing import ChannelAddress, HubId

if TYPE_CHECKING:
    from wsgate.core.connection import Connection
    from wsgate.core.gateway import Gateway

__all__ = ["install"]

P = TypeVar("P")


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


def install(gw: Gateway) -> None:
    """Register the built-in handlers on ``gw.dispatcher``."""
    from wsgate.core.gateway import JoinRefused, Pending

    def join_view(conn: Connection, action: Action, address: Address, since: int | None) -> bool:
        try:
            channel, _ = gw.join(conn, address)
        except JoinRefused as refused:
            conn.send_error(refused.code, refused.message, _rid(action))
            return False
        payload = gw.joined_payload(channel)
        replay: list[bytes] = []
        if since is not None:
            found = gw.history.since(channel.address, since)
            payload.recovered = found.recovered
            replay = found.entries
        conn.send_action(bi.JOINED, payload, in_reply_to=_rid(action))
        for data in replay:
            conn.sink.send(data)
        return True

    def authorized(
        conn: Connection, action: Action, address: Address, proceed: Callable[[], object]
    ) -> None:
        """Run ``proceed`` once the static policy and the authorize hook allow ``address``."""
        if not gw.policy.allows(conn.principal, address):
            conn.send_error(
                ErrorCode.FORBIDDEN, f"not allowed to join {address.value}", _rid(action)
            )
            return
        gates = gw.gates

        def step(index: int) -> None:
            """Ask gate ``index``; on allow go to the next, after the last ``proceed``."""
            if index == len(gates):
                proceed()
                return

            def resume(refusal: ErrorCode | None) -> None:
                if conn.closed:
                    return
                if refusal is None:
                    step(index + 1)
                else:
                    conn.send_error(refusal, f"not allowed to join {address.value}", _rid(action))

            verdict = gates[index].check(conn, address, resume)
            if not isinstance(verdict, Pending):
                resume(verdict)

        step(0)

    def on_join(conn: Connection, action: Action) -> None:
        body = _payload(conn, action, bi.JoinPayload)
        if body is None:
            return
        address = _address(conn, action, body.channel)
        if address is not None:
            authorized(conn, action, address, lambda: join_view(conn, action, address, body.since))

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

        def navigate() -> None:
            # Authorized first: a refused NAVIGATE leaves the old view intact.
            views = conn.views
            previous = None if views is None else views.get(HubId(hub))
            if previous is not None and previous != address.value:
                gw.leave(conn, previous)
                conn.send_action(bi.LEFT, {"channel": previous})
            if join_view(conn, action, address, body.since):
                if conn.views is None:
                    conn.views = {}
                conn.views[address.hub] = address.value

        authorized(conn, action, address, navigate)

    def on_ping(conn: Connection, action: Action) -> None:
        conn.send_action(bi.PONG, action.payload, in_reply_to=_rid(action))

    gw.dispatcher.register(bi.JOIN, on_join)
    gw.dispatcher.register(bi.LEAVE, on_leave)
    gw.dispatcher.register(bi.NAVIGATE, on_navigate)
    gw.dispatcher.register(bi.PING, on_ping)
