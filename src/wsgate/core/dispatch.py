"""Inbound actions: decode, then route by a table from type to handler.

Order of decisions for one text message:

0. charge the connection's default rate (before decoding: junk floods too);
1. decode and validate (:func:`wsgate.protocol.envelope.decode_action`); a
   failure answers ``BAD_REQUEST``/``TOO_LARGE``;
   then charge the type's ``[[rate_limits]]`` rule; a refusal answers
   ``RATE_LIMITED`` with ``retryAfterMs``, and too many close 4429;
2. a built-in ``@@wsgate/*`` type goes to its handler (:mod:`.builtin`);
3. a type matching a ``[[relays]]`` rule is relayed to ``meta.channel``;
4. otherwise the ``upstream`` hook (procedure discovery) gets it, and with no
   hook or no route the answer is ``NO_ROUTE``.

Every refusal is an ``@@wsgate/ERROR`` carrying ``meta.inReplyTo``; the
connection stays open. No step awaits: handlers that call a service start
their own I/O and answer later.

Counts for metrics are plain ``int`` attributes that only grow (one
increment per action, never a lock): :attr:`Dispatcher.builtin`,
:attr:`~Dispatcher.relayed`, :attr:`~Dispatcher.routed` (actions by class, counted
when routed), :attr:`~Dispatcher.rate_limited` (limiter refusals) and
:attr:`~Dispatcher.errors_sent` (every ``@@wsgate/ERROR`` of the node, by code,
counted by :meth:`Connection.send_error`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import MethodType
from typing import TYPE_CHECKING, cast

from wsgate.core.limits import Limiter, Rate, retry_ms
from wsgate.protocol.codes import CloseCode, ErrorCode
from wsgate.protocol.envelope import (
    GATEWAY_PREFIX,
    MAX_DEPTH,
    Action,
    decode_action,
    reply_id,
)
from wsgate.protocol.patterns import PatternTable

if TYPE_CHECKING:
    from wsgate.core.connection import Connection

__all__ = ["Dispatcher", "Handler", "Upstream"]

log = logging.getLogger("wsgate.dispatch")

Handler = Callable[["Connection", Action], None]
"""Handles one decoded action of a connection."""

Upstream = Callable[["Connection", Action], bool]
"""Tries to hand an action to a service; returns ``False`` when no route exists."""


class Dispatcher:
    """Routes each inbound action by type: built-ins, relays, then upstream."""

    __slots__ = (
        "_builtins", "_hold", "_relays", "_release", "_upstream", "builtin", "errors_sent",
        "limiter", "max_depth", "rate_limited", "relay", "relayed", "routed", "upstream",
    )

    def __init__(
        self,
        relay: Handler,
        relay_patterns: list[str],
        hold: Callable[[Connection], None],
        release: Callable[[Connection], None],
        limiter: Limiter | None = None,
        max_depth: int = MAX_DEPTH,
        upstream: Upstream | None = None,
    ) -> None:
        self.limiter = limiter
        self._hold = hold
        self._release = release
        """The gateway's ``HELD`` transitions (a cluster-wide limit answers later)."""
        self.max_depth = max_depth
        """JSON nesting allowed in one message (``TOO_LARGE`` past it)."""
        self._builtins: dict[str, Handler] = {}
        self._relays: PatternTable[bool] | None = (
            PatternTable((p, True) for p in relay_patterns) if relay_patterns else None
        )
        """The ``[[relays]]`` rules (fixed); ``None`` without any: no lookup per action."""
        self.relay = relay
        self.upstream = upstream
        """Procedure discovery (the services hook), when configured."""
        self._upstream = None if upstream is None else _direct(upstream)
        """``upstream`` as the dispatcher calls it (:func:`_direct`)."""
        self.builtin = 0
        """Built-in ``@@wsgate/*`` actions handed to their handler."""
        self.relayed = 0
        """Actions matching a ``[[relays]]`` rule handed to the relay."""
        self.routed = 0
        """Actions the upstream hook took (a service call or its refusal)."""
        self.rate_limited = 0
        """Messages refused by the limiter (``RATE_LIMITED``, or the close for flooding)."""
        self.errors_sent: dict[ErrorCode, int] = dict.fromkeys(ErrorCode, 0)
        """``@@wsgate/ERROR`` sent, by code; one key per :class:`ErrorCode`, never more."""

    def register(self, type_: str, handler: Handler) -> None:
        """Handle the built-in action ``type_`` with ``handler``."""
        self._builtins[type_] = handler

    def dispatch(self, conn: Connection, data: bytes) -> None:
        """Handle one complete text message of ``conn``. Never raises."""
        limiter = self.limiter
        if limiter is not None:
            wait = limiter.message(conn)
            if wait > 0:
                # Refused unread; the id is looked up only now, on the refusal.
                self._refuse(conn, limiter, wait, reply_id(data))
                return
        action = decode_action(data, self.max_depth)
        # Not isinstance(action, DecodeFailure): a decoded Action is of that exact type,
        # which isinstance passes at once; for any other a Struct class (a metaclass)
        # has its __instancecheck__ looked up and called (~500 instructions).
        if not isinstance(action, Action):
            conn.send_error(action.code, action.message, action.in_reply_to)
            return
        if limiter is not None:
            if limiter.shared is not None:  # a cluster: its rule may span nodes
                shared = limiter.shared_rule(conn, action.type)
                if shared is not None:
                    self._charge_shared(conn, limiter, action, *shared)
                    return
            if limiter.by_type:
                wait = limiter.action(conn, action.type)
                if wait > 0:
                    self._refuse(conn, limiter, wait, _reply_id(action))
                    return
        self._route_safely(conn, action)

    def _route_safely(self, conn: Connection, action: Action) -> None:
        """Steps 2-4 of the module docstring; a handler's exception answers ``INTERNAL``."""
        type_ = action.type
        try:  # one frame for the steps and their guard: this runs for every action
            handler = self._builtins.get(type_)
            if handler is not None:
                self.builtin += 1
                handler(conn, action)
            # The first character first: str.startswith parses its arguments as a tuple
            # (~900 instructions against ~400); a decoded type is never empty.
            elif type_[0] == "@" and type_.startswith(GATEWAY_PREFIX):
                message = f"unknown gateway action {type_}"
                conn.send_error(ErrorCode.NO_ROUTE, message, _reply_id(action))
            elif self._relays is not None and self._relays.lookup(type_) is not None:
                self.relayed += 1
                self.relay(conn, action)
            elif self._upstream is not None and self._upstream(conn, action):
                self.routed += 1
            else:
                message = f"no route for {type_}"
                conn.send_error(ErrorCode.NO_ROUTE, message, _reply_id(action))
        except Exception:
            # A bug, not the client's fault: log it with the type, never the payload.
            log.exception("handler failed for %s on %s", type_, conn.id)
            conn.send_error(ErrorCode.INTERNAL, "internal error", _reply_id(action))
        conn.inbox_at = -1  # RESUME is accepted only as the first action handled

    def _charge_shared(
        self, conn: Connection, limiter: Limiter, action: Action, key: str, rate: Rate
    ) -> None:
        """A cluster-wide limit: hold the connection's later messages until it answers.

        Their order is kept: the connection is ``HELD`` (they queue on
        ``conn.queue``) and released after this one is handled; a closed
        connection is left as it is.
        """
        assert limiter.shared is not None
        self._hold(conn)

        def done(wait: float) -> None:
            if conn.closed:
                return
            if wait > 0:
                self._refuse(conn, limiter, wait, _reply_id(action))
            else:
                self._route_safely(conn, action)
            self._release(conn)

        limiter.shared.acquire(key, rate, done)

    def _refuse(self, conn: Connection, limiter: Limiter, wait: float, rid: str | None) -> None:
        self.rate_limited += 1
        if limiter.strike(conn):
            conn.send_error(
                ErrorCode.RATE_LIMITED, "closed for flooding", rid, retry_after_ms=10_000
            )
            conn.sink.close(CloseCode.TOO_MANY, "too many refused messages")
            return
        conn.send_error(ErrorCode.RATE_LIMITED, "rate limited", rid, retry_after_ms=retry_ms(wait))


def _direct(hook: Upstream) -> Upstream:
    """``hook``'s own ``__call__`` bound to it, when its class defines one in Python.

    Calling the instance goes through its type's call slot (a lookup and a C-level
    call per action, ~650 instructions under callgrind); the bound function is
    pushed as a plain Python frame. Any other callable is returned as it is.
    """
    call: object = getattr(hook, "__call__", None)  # noqa: B004 (the bound method itself)
    if isinstance(call, MethodType) and call.__self__ is hook:
        return cast("Upstream", call)
    return hook


def _reply_id(action: Action) -> str | None:
    return None if action.meta is None else action.meta.id
