"""Connections that authenticate with a token: the ``ADMITTING`` wait for ``@@wsgate/AUTH``.

:class:`TokenAdmission` is the outermost connect hook of a node with
``[auth.jwt]``. The core calls :meth:`~TokenAdmission.admit` for every new
connection (still ``ADMITTING``, its messages queued, bounded by
``Gateway.max_pending``) and :meth:`~TokenAdmission.receive` for each message
it sends while ``ADMITTING``. By the connection's principal:

- a cookie (or anonymous) principal passes straight on to the inner hook;
- :class:`~wsgate.auth.principal.AwaitingToken` with a bearer token: the
  token is verified at once;
- :data:`~wsgate.auth.handshake.AWAITING_AUTH`: its first message must be
  ``@@wsgate/AUTH {token}``, within ``auth.first_message_ms``. Anything else
  first is refused; after AUTH, further messages queue until the verdict.

A good token replaces the principal with its
:class:`~wsgate.auth.principal.TokenPrincipal` through ``Gateway.identified``
(which applies the per-user connection cap the handshake could not: past it,
``RATE_LIMITED`` and close 4429) and passes on (the inner hook, then
``WELCOME``). A bad token, a first message that is not AUTH, or no AUTH in
time: ``ERROR UNAUTHENTICATED`` (``signInUrl``), then close 4401 -- except that
no AUTH in time with ``auth.allow_anonymous`` passes on as anonymous.

Every verification goes through :meth:`TokenVerifier.verify
<wsgate.auth.jwt_token.TokenVerifier.verify>`, header token or AUTH alike.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any, Final, Protocol

import msgspec

from wsgate.auth.jwt_token import TokenVerifier
from wsgate.auth.principal import ANONYMOUS, AwaitingToken, Principal
from wsgate.exceptions import AuthError
from wsgate.protocol import builtins as bi
from wsgate.protocol.codes import CloseCode, ErrorCode
from wsgate.protocol.envelope import DecodeFailure, decode_action, reply_id

__all__ = ["TokenAdmission"]


class _Conn(Protocol):
    """What this module needs of a core connection (auth does not import the core)."""

    principal: Principal

    @property
    def closed(self) -> bool: ...

    def send_action(
        self, type_: str, payload: Any, *, in_reply_to: str | None = None, error: bool = False
    ) -> None: ...


class _Gateway(Protocol):
    def identified(self, conn: Any, principal: Principal) -> bool: ...

    def admitted(
        self, conn: Any, principal: Principal | None = None, greeting: Iterable[bytes] = ()
    ) -> None: ...

    def refused(self, conn: Any, code: int, reason: str) -> None: ...


class _Admission(Protocol):
    def admit(self, conn: Any) -> None: ...

    def abandoned(self, conn: Any) -> None: ...


_PAYLOAD: Final = msgspec.json.Decoder(bi.AuthPayload)


def _token(data: bytes) -> str | None:
    """The token of an ``@@wsgate/AUTH`` action, decoded as every action is
    (:func:`~wsgate.protocol.envelope.decode_action`: depth and shape checked); else ``None``."""
    action = decode_action(data)
    if isinstance(action, DecodeFailure) or action.type != bi.AUTH:
        return None
    try:
        return _PAYLOAD.decode(action.payload).token
    except msgspec.DecodeError:  # ValidationError included
        return None
_log: Final = logging.getLogger("wsgate.auth")


class TokenAdmission:
    """See the module docstring. Build it once per node; use it on the node's loop.

    Call order: the node passes it as the gateway's ``admission`` and
    ``intercept`` and in ``attached``; :meth:`attach` runs before any traffic.
    """

    def __init__(
        self,
        verifier: TokenVerifier,
        *,
        inner: _Admission | None,
        first_message_ms: int,
        allow_anonymous: bool,
        sign_in_url: str,
    ) -> None:
        self.verifier = verifier
        self.inner = inner
        """The connect hook (and cluster cap) a connection passes on to once known."""
        self.first_message_s = first_message_ms / 1000
        self.allow_anonymous = allow_anonymous
        self.sign_in_url = sign_in_url
        self._gw: _Gateway | None = None
        self._pending: dict[_Conn, asyncio.TimerHandle | asyncio.Task[None]] = {}
        """A connection awaiting AUTH (its deadline) or its token's verdict (the
        task). One entry per ``ADMITTING`` token connection, so bounded by the
        connection caps; removed at the verdict, the deadline, or the close."""

    def attach(self, gateway: _Gateway) -> None:
        self._gw = gateway

    @property
    def pending(self) -> int:
        """Connections waiting for AUTH or for their token's verdict."""
        return len(self._pending)

    # Admission --------------------------------------------------------------

    def admit(self, conn: _Conn) -> None:
        principal = conn.principal
        if not isinstance(principal, AwaitingToken):
            self._pass(conn)
        elif principal.token:
            self._verify(conn, principal.token)
        else:
            loop = asyncio.get_running_loop()
            self._pending[conn] = loop.call_later(self.first_message_s, self._deadline, conn)

    def abandoned(self, conn: _Conn) -> None:
        """Closed while ``ADMITTING``: stop waiting for it, or tell the inner hook."""
        entry = self._pending.pop(conn, None)
        if entry is not None:
            entry.cancel()
        elif self.inner is not None and not isinstance(conn.principal, AwaitingToken):
            self.inner.abandoned(conn)  # passed on: the inner hook has it

    def receive(self, conn: _Conn, data: bytes) -> bool:
        """A message while ``ADMITTING``: ``True`` when it was the awaited first one."""
        entry = self._pending.get(conn)
        if not isinstance(entry, asyncio.TimerHandle):
            return False  # not awaiting AUTH: the core queues it
        entry.cancel()
        del self._pending[conn]
        token = _token(data)
        if token is None:
            self._refuse(conn, "send @@wsgate/AUTH {token} first", reply_id(data))
        else:
            self._verify(conn, token)
        return True

    # Verdicts ---------------------------------------------------------------

    def _verify(self, conn: _Conn, token: str) -> None:
        task = asyncio.get_running_loop().create_task(self._check(conn, token))
        self._pending[conn] = task

    async def _check(self, conn: _Conn, token: str) -> None:
        try:
            principal: Principal = await self.verifier.verify(token)
        except AuthError:
            self._pending.pop(conn, None)
            self._refuse(conn, "the token was refused")
            return
        except Exception:  # a bug: refuse rather than leave the connection waiting
            _log.exception("token verification failed")
            self._pending.pop(conn, None)
            self._refuse(conn, "the token was refused")
            return
        self._pending.pop(conn, None)
        self._known(conn, principal)

    def _deadline(self, conn: _Conn) -> None:
        self._pending.pop(conn, None)
        if self.allow_anonymous:
            self._known(conn, ANONYMOUS)
        else:
            self._refuse(conn, "no @@wsgate/AUTH in time")

    def _known(self, conn: _Conn, principal: Principal) -> None:
        """The gateway takes ``principal`` (or refuses: the per-user cap), then pass on."""
        assert self._gw is not None, "attach() first"
        if self._gw.identified(conn, principal):
            self._pass(conn)

    def _pass(self, conn: _Conn) -> None:
        if self.inner is not None:
            self.inner.admit(conn)
        else:
            assert self._gw is not None, "attach() first"
            self._gw.admitted(conn)

    def _refuse(self, conn: _Conn, message: str, in_reply_to: str | None = None) -> None:
        assert self._gw is not None, "attach() first"
        payload = bi.ErrorPayload(
            ErrorCode.UNAUTHENTICATED.value, message, signInUrl=self.sign_in_url
        )
        conn.send_action(bi.ERROR, payload, in_reply_to=in_reply_to, error=True)
        self._gw.refused(conn, CloseCode.UNAUTHENTICATED, "unauthenticated")
