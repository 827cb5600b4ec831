"""Session lifetime: an open connection's credential expires on time, or is refreshed.

:class:`SessionLifetime` is an observer of the gateway (told ``connected`` /
``disconnected``) and the handler of ``@@wsgate/REFRESH``. For every open
connection whose principal has an ``exp``, one entry in one
:class:`~wsgate.auth.wheel.TimerWheel` (no task, no timer per connection):

1. at ``exp - auth.expiry_warning_s``: ``@@wsgate/SESSION_EXPIRING {exp, refreshUrl}``;
2. when the one time rule (:func:`~wsgate.auth.claims.time_fault`, with
   ``auth.clock_skew_s``) calls the credential expired: ``ERROR UNAUTHENTICATED``
   (``signInUrl``) and close 4401.

``@@wsgate/REFRESH {token}`` verifies ``token`` through the connection-token
verifier (the path of every token: keys, time rule, revocations). A good token
for the same ``sub`` whose hubs include the connection's becomes the
principal through ``Gateway.renewed`` (which re-checks every view joined and
leaves those no longer allowed with ``LEFT {channel, reason}``) and its ``exp``
replaces the old deadline. A refused token changes nothing: the old deadline
stands. ``REFRESH {}`` (the cookie path: the page refreshed its cookie, which an
open WebSocket cannot see) closes 1012 so the client reconnects at once and
the handshake reads the new cookie; the client rejoins with ``since``.

Bounds: one wheel entry and at most one refresh in flight per open
connection; both freed at ``disconnected``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

import msgspec

from wsgate.auth.claims import EXPIRED, time_fault
from wsgate.auth.jwt_token import TokenVerifier
from wsgate.auth.principal import Principal
from wsgate.auth.wheel import Scheduler, TimerWheel
from wsgate.exceptions import AuthError
from wsgate.protocol import builtins as bi
from wsgate.protocol.codes import CloseCode, ErrorCode
from wsgate.typing import HubId

__all__ = ["SessionLifetime"]

_log: Final = logging.getLogger("wsgate.auth")
_REFRESH: Final = msgspec.json.Decoder(bi.RefreshPayload)


class _Sink(Protocol):
    def close(self, code: int, reason: str) -> None: ...


class _Meta(Protocol):
    @property
    def id(self) -> str | None: ...


class _Action(Protocol):
    @property
    def payload(self) -> bytes: ...

    @property
    def meta(self) -> _Meta | None: ...


class _Conn(Protocol):
    principal: Principal
    hubs: tuple[HubId, ...]

    @property
    def sink(self) -> _Sink: ...

    @property
    def closed(self) -> bool: ...

    def send_action(
        self, type_: str, payload: Any, *, in_reply_to: str | None = None, error: bool = False
    ) -> None: ...

    def send_error(
        self,
        code: ErrorCode,
        message: str,
        in_reply_to: str | None = None,
        *,
        retry_after_ms: int | None = None,
    ) -> None: ...


class _Dispatcher(Protocol):
    def register(self, type_: str, handler: Callable[[Any, Any], None]) -> None: ...


class _Policy(Protocol):
    def hubs_for(self, principal: Principal) -> list[HubId]: ...


class _Gateway(Protocol):
    @property
    def dispatcher(self) -> _Dispatcher: ...

    @property
    def policy(self) -> _Policy: ...

    def renewed(self, conn: Any, principal: Principal) -> None: ...


class SessionLifetime:
    """See the module docstring. Build one per node; use it on the node's loop.

    Call order: the node lists it among the gateway's observers and in
    ``attached``; :meth:`attach` registers the REFRESH handler before any traffic.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        verifier: TokenVerifier | None,
        *,
        warning_s: int,
        skew_s: int,
        sign_in_url: str,
        refresh_url: str = "",
        resolution_s: float = 1.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.verifier = verifier
        self.warning_s = warning_s
        self.skew_s = skew_s
        self.sign_in_url = sign_in_url
        self.refresh_url = refresh_url or None
        self._now = now
        self.wheel: TimerWheel[_Conn] = TimerWheel(
            scheduler, self._due, resolution_s=resolution_s, now=now
        )
        self._warned: set[_Conn] = set()
        """Connections told SESSION_EXPIRING for their current ``exp``."""
        self._refreshing: dict[_Conn, asyncio.Task[None]] = {}
        """The one REFRESH in flight per connection."""
        self._gw: _Gateway | None = None

    def attach(self, gateway: _Gateway) -> None:
        self._gw = gateway
        gateway.dispatcher.register(bi.REFRESH, self._on_refresh)

    @property
    def tracked(self) -> int:
        """Connections with a deadline on the wheel."""
        return len(self.wheel)

    # Observer ----------------------------------------------------------------

    def connected(self, conn: _Conn) -> None:
        self._schedule(conn)

    def disconnected(self, conn: _Conn) -> None:
        self.wheel.cancel(conn)
        self._warned.discard(conn)
        task = self._refreshing.pop(conn, None)
        if task is not None:
            task.cancel()

    def joined(self, conn: _Conn, address: str) -> None:
        pass

    def left(self, conn: _Conn, address: str) -> None:
        pass

    # Deadlines ---------------------------------------------------------------

    def _expiry_s(self, exp: int) -> float:
        """When the one time rule first calls ``exp`` expired."""
        return float(exp + self.skew_s) + 1e-3

    def _schedule(self, conn: _Conn) -> None:
        exp = conn.principal.exp
        self._warned.discard(conn)
        if exp <= 0:
            self.wheel.cancel(conn)
            return
        warn_at = exp - self.warning_s
        if self.warning_s > 0 and warn_at > self._now():
            self.wheel.set(conn, warn_at)
        else:
            self._warn(conn)

    def _warn(self, conn: _Conn) -> None:
        exp = conn.principal.exp
        if self.warning_s > 0:
            payload = bi.SessionExpiringPayload(exp=exp, refreshUrl=self.refresh_url)
            conn.send_action(bi.SESSION_EXPIRING, payload)
        self._warned.add(conn)
        self.wheel.set(conn, self._expiry_s(exp))

    def _due(self, conn: _Conn) -> None:
        if conn.closed:
            return
        principal = conn.principal
        if conn not in self._warned:
            self._warn(conn)
            return
        fault = time_fault(
            iat=0, exp=principal.exp, now=self._now(), skew_s=self.skew_s, require_exp=True
        )
        if fault != EXPIRED:  # early by the clock's rounding: look again soon
            self.wheel.set(conn, self._expiry_s(principal.exp))
            return
        payload = bi.ErrorPayload(
            ErrorCode.UNAUTHENTICATED.value, "the session expired", signInUrl=self.sign_in_url
        )
        conn.send_action(bi.ERROR, payload, error=True)
        conn.sink.close(CloseCode.UNAUTHENTICATED, "session expired")

    # REFRESH -----------------------------------------------------------------

    def _on_refresh(self, conn: _Conn, action: _Action) -> None:
        rid = None if action.meta is None else action.meta.id
        try:
            body = _REFRESH.decode(action.payload or b"{}")
        except msgspec.DecodeError as exc:
            conn.send_error(ErrorCode.BAD_REQUEST, f"bad {bi.REFRESH} payload: {exc}", rid)
            return
        if body.token is None:
            if conn.principal.auth != "cookie":
                conn.send_error(ErrorCode.BAD_REQUEST, "refresh a token session with {token}", rid)
                return
            reason = "reconnect: the refreshed cookie is read at the handshake"
            conn.sink.close(CloseCode.SERVICE_RESTART, reason)
            return
        if self.verifier is None:
            conn.send_error(ErrorCode.BAD_REQUEST, "no [auth.jwt]: tokens are not accepted", rid)
            return
        if conn in self._refreshing:
            conn.send_error(
                ErrorCode.RATE_LIMITED, "a refresh is in progress", rid, retry_after_ms=100
            )
            return
        task = asyncio.get_running_loop().create_task(self._refresh(conn, body.token, rid))
        self._refreshing[conn] = task

    async def _refresh(self, conn: _Conn, token: str, rid: str | None) -> None:
        assert self.verifier is not None and self._gw is not None, "attach() first"
        try:
            principal: Principal = await self.verifier.verify(token)
        except AuthError:
            principal = conn.principal
            refusal: tuple[ErrorCode, str] | None = (
                ErrorCode.UNAUTHENTICATED, "the token was refused"
            )
        except Exception:  # a bug: refuse, the session keeps its old deadline
            _log.exception("refresh token verification failed")
            principal, refusal = conn.principal, (ErrorCode.INTERNAL, "the refresh failed")
        else:
            refusal = self._mismatch(conn, principal)
        finally:
            self._refreshing.pop(conn, None)
        if conn.closed:
            return
        if refusal is not None:
            conn.send_error(refusal[0], refusal[1], rid)
            return
        self._gw.renewed(conn, principal)
        self._schedule(conn)

    def _mismatch(self, conn: _Conn, principal: Principal) -> tuple[ErrorCode, str] | None:
        """Why ``principal`` cannot replace the connection's, or ``None``."""
        assert self._gw is not None
        if principal.sub != conn.principal.sub:
            return ErrorCode.FORBIDDEN, "a refresh keeps the user: the token names another sub"
        hubs = set(self._gw.policy.hubs_for(principal))
        lost = [hub for hub in conn.hubs if hub not in hubs]
        if lost:
            return ErrorCode.FORBIDDEN, f"the token drops hub {lost[0]}: reconnect with it"
        return None
