"""Channel tokens: a service grants a private channel to one user at a time.

A channel matching a ``[[channels]]`` rule with ``token = true`` is joined by
a client only with ``JOIN {channel, token}``; the join pipeline
(``Gateway.request_join``) asks :meth:`ChannelTokens.check` right after the
channel policy allowed the address, before any gate. The token is a JWT,
verified by the connection tokens' :class:`~wsgate.auth.jwt_token.TokenVerifier`
(same keys, same time rule, revocations), and must:

- carry the ``channel`` claim (``[auth.jwt.claims] channel``) naming exactly
  the address joined;
- name the connection's user in ``sub``;
- never cross an organization: when the address's hub is an organization
  (not ``public``/``system``), the connection already belongs to it (the
  policy checked) and a token that names organizations must name it too.

Refusals are ``FORBIDDEN`` (no token; a wrong channel, user or organization;
no ``[auth.jwt]``) or ``UNAUTHENTICATED`` (a token that does not verify). The
internal API's join (here or through another node) is a service granting
the channel itself and needs no token.

A granted membership expires like the token: when the one time rule calls
the token expired, the connection leaves the channel with ``LEFT {channel,
reason}``. One :class:`~wsgate.auth.wheel.TimerWheel` entry per granted
membership (bounded by ``server.max_channels_per_connection`` per
connection), freed when the connection leaves the channel or closes. At most
:data:`MAX_CHECKS` tokens per connection are in verification at once (a JWKS
fetch may hold them); past it the join is refused ``RATE_LIMITED``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

from wsgate.auth.claims import EXPIRED, time_fault
from wsgate.auth.jwt_token import TokenVerifier
from wsgate.auth.policy import ChannelPolicy
from wsgate.auth.principal import Principal
from wsgate.auth.wheel import Scheduler, TimerWheel
from wsgate.exceptions import AuthError
from wsgate.protocol import builtins as bi
from wsgate.protocol.address import PUBLIC_HUB, SYSTEM_HUB, Address
from wsgate.protocol.codes import ErrorCode

__all__ = ["MAX_CHECKS", "ChannelTokens"]

MAX_CHECKS: Final = 4
"""Channel tokens one connection may have in verification at once (a JWKS fetch
may hold them); past it a join is refused ``RATE_LIMITED``."""
_log: Final = logging.getLogger("wsgate.auth")


class _Conn(Protocol):
    @property
    def principal(self) -> Principal: ...

    @property
    def closed(self) -> bool: ...

    def send_action(
        self, type_: str, payload: Any, *, in_reply_to: str | None = None, error: bool = False
    ) -> None: ...


class _Gateway(Protocol):
    def leave(self, conn: Any, address: Any) -> bool: ...


Resume = Callable[["tuple[ErrorCode, str] | int"], None]
"""Told the verdict: ``(code, message)``, or the granting token's ``exp`` to go on."""


class ChannelTokens:
    """See the module docstring. One per node, used on its loop.

    Call order: the node gives it to the gateway as ``grants``, lists it
    among the observers and in ``attached``.
    """

    def __init__(
        self,
        policy: ChannelPolicy,
        verifier: TokenVerifier | None,
        scheduler: Scheduler,
        *,
        skew_s: int,
        resolution_s: float = 1.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.verifier = verifier
        self.skew_s = skew_s
        self._now = now
        self.wheel: TimerWheel[tuple[_Conn, str]] = TimerWheel(
            scheduler, self._due, resolution_s=resolution_s, now=now
        )
        self._exp: dict[tuple[_Conn, str], int] = {}
        """(connection, channel) -> the granting token's ``exp``; as the wheel."""
        self._checking: dict[_Conn, int] = {}
        """Verifications in flight per connection (at most :data:`MAX_CHECKS`);
        an entry is removed when its count returns to 0."""
        self._gw: _Gateway | None = None

    def attach(self, gateway: _Gateway) -> None:
        self._gw = gateway

    @property
    def granted(self) -> int:
        """Memberships held by a channel token."""
        return len(self._exp)

    @property
    def checking(self) -> int:
        """Channel tokens in verification, over all connections."""
        return sum(self._checking.values())

    def required(self, address: Address) -> bool:
        return self.policy.requires_token(address)

    def check(self, conn: _Conn, address: Address, token: str | None, resume: Resume) -> None:
        """Decide on ``token`` for ``conn`` joining ``address``; ``resume`` is called
        exactly once, now or later: the token's ``exp`` to go on, or ``(code, message)``.
        Once the join completed the gateway calls :meth:`hold` with that ``exp``."""
        if token is None:
            resume((ErrorCode.FORBIDDEN, f"{address.value} needs a channel token"))
            return
        if self.verifier is None:
            resume((ErrorCode.FORBIDDEN, "channel tokens need [auth.jwt]"))
            return
        busy = self._checking.get(conn, 0)
        if busy >= MAX_CHECKS:
            resume((ErrorCode.RATE_LIMITED, f"at most {MAX_CHECKS} channel tokens checked at once"))
            return
        self._checking[conn] = busy + 1
        asyncio.get_running_loop().create_task(self._check(conn, address, token, resume))

    async def _check(self, conn: _Conn, address: Address, token: str, resume: Resume) -> None:
        assert self.verifier is not None
        try:
            grant = await self.verifier.verify(token, channel=True)
        except AuthError:
            resume((ErrorCode.UNAUTHENTICATED, "the channel token was refused"))
            return
        except Exception:  # a bug: refuse rather than leave the join waiting
            _log.exception("channel token verification failed")
            resume((ErrorCode.INTERNAL, "the channel token could not be checked"))
            return
        finally:
            left = self._checking.pop(conn, 1) - 1
            if left > 0:
                self._checking[conn] = left
        refusal = self._mismatch(conn.principal, address, grant)
        resume(grant.exp if refusal is None else (ErrorCode.FORBIDDEN, refusal))

    @staticmethod
    def _mismatch(principal: Principal, address: Address, grant: Principal) -> str | None:
        if getattr(grant, "channel", "") != address.value:
            return "the channel token names another channel"
        if grant.sub != principal.sub:
            return "the channel token names another user"
        hub = address.hub
        orgs = grant.all_orgs()
        if hub not in (PUBLIC_HUB, SYSTEM_HUB) and orgs and hub not in orgs:
            return "the channel token is for another organization"
        return None

    # Observer: a granted membership lives until its token expires -------------

    def hold(self, conn: _Conn, address: str, exp: int) -> None:
        """``conn`` is in ``address`` by a token expiring at ``exp`` (a later join replaces it)."""
        key = (conn, address)
        self._exp[key] = exp
        self.wheel.set(key, exp + self.skew_s + 1e-3)

    def connected(self, conn: _Conn) -> None:
        pass

    def joined(self, conn: _Conn, address: str) -> None:
        pass

    def left(self, conn: _Conn, address: str) -> None:
        """Frees the membership's entry (a close leaves every channel, so this frees all)."""
        key = (conn, address)
        if self._exp.pop(key, None) is not None:
            self.wheel.cancel(key)

    def disconnected(self, conn: _Conn) -> None:
        pass

    def _due(self, key: tuple[_Conn, str]) -> None:
        conn, address = key
        exp = self._exp.get(key)
        if exp is None or conn.closed:
            return
        if time_fault(iat=0, exp=exp, now=self._now(), skew_s=self.skew_s) != EXPIRED:
            self.wheel.set(key, exp + self.skew_s + 1e-3)
            return
        assert self._gw is not None, "attach() first"
        if self._gw.leave(conn, address):  # left() frees the entry
            reason = "the channel token expired"
            conn.send_action(bi.LEFT, {"channel": address, "reason": reason})
