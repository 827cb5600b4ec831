"""Revocation that sticks: a node's cache of the cluster's revocations.

Two kinds, both keyed as in :class:`~wsgate.backends.base.RevocationStore`:

- ``sid:<session id>`` -- every credential carrying that ``sid`` is refused;
- ``user:<user id>`` with a "not before" time -- every credential of that
  user issued (``iat``, whole seconds) before it is refused; one issued in a
  later second is not (a new sign-in).

:meth:`Revocations.covers` is asked at every handshake (cookies, by the
:class:`~wsgate.auth.handshake.Authenticator`) and for every token (the
:class:`~wsgate.auth.jwt_token.TokenVerifier`: connection, REFRESH and channel
tokens alike), and of every open connection when news arrives. It reads only
this cache: it never awaits. :meth:`revoke` records here at once and in the
store; :meth:`refresh` (every ``auth.revocation_poll_ms``, by the node) merges
what other nodes recorded, so a node's cache is at most one poll interval
(plus the store's answer time) behind the cluster.

Bounds: entries expire ``ttl_s`` (``auth.revocation_ttl_s``, the longest
lifetime of a credential they cover) after they were recorded, and are
freed by :meth:`refresh` and :meth:`revoke`; past ``max_entries`` the entry
that expires soonest is dropped first (and logged).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Final, Protocol

from wsgate.auth.principal import Principal
from wsgate.backends.base import RevocationStore
from wsgate.protocol.codes import CloseCode

__all__ = ["MAX_REVOCATIONS", "Revocations", "sid_key", "user_key"]

MAX_REVOCATIONS: Final = 100_000
_log: Final = logging.getLogger("wsgate.auth")


class _Sink(Protocol):
    def close(self, code: int, reason: str) -> None: ...


class _Conn(Protocol):
    @property
    def principal(self) -> Principal: ...

    @property
    def sink(self) -> _Sink: ...


def sid_key(sid: str) -> str:
    return f"sid:{sid}"


def user_key(user: str) -> str:
    return f"user:{user}"


class Revocations:
    """See the module docstring. Use it on the node's loop."""

    def __init__(
        self,
        store: RevocationStore,
        *,
        ttl_s: float,
        max_entries: int = MAX_REVOCATIONS,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._now = now
        self._entries: dict[str, tuple[float, float]] = {}
        """key -> (not before, forgotten at: this node's clock)."""

    def __len__(self) -> int:
        return len(self._entries)

    def covers(self, principal: Principal) -> bool:
        """Whether a revocation refuses ``principal`` (see the module docstring)."""
        entries = self._entries
        if not entries or principal.anonymous:
            return False
        if principal.sid and sid_key(principal.sid) in entries:
            return True
        held = entries.get(user_key(principal.sub))
        return held is not None and principal.iat < held[0]

    def enforce(self, connections: Iterable[_Conn]) -> int:
        """Close every one of ``connections`` a revocation covers with 4403; return how many.

        The one path for both: news from :meth:`refresh`, and a revocation
        made on this node (the internal API).
        """
        closed = 0
        for conn in list(connections):
            if self.covers(conn.principal):
                conn.sink.close(CloseCode.FORBIDDEN, "session revoked")
                closed += 1
        return closed

    def record(self, key: str, not_before: float) -> bool:
        """Hold ``key`` in this cache; ``True`` when it is news (new, or a later not-before)."""
        held = self._entries.get(key)
        if held is not None and held[0] >= not_before:
            return False
        if held is None and len(self._entries) >= self.max_entries:
            soonest = min(self._entries, key=lambda k: self._entries[k][1])
            _log.warning("revocations: past %d held, forgot %s early", self.max_entries, soonest)
            del self._entries[soonest]
        self._entries[key] = (not_before, self._now() + self.ttl_s)
        return True

    async def revoke(self, key: str, not_before: float) -> None:
        """Record ``key`` here, then in the cluster's store (raises the store's error)."""
        self._sweep()
        self.record(key, not_before)
        await self.store.put(key, not_before, self.ttl_s)

    async def refresh(self) -> list[str]:
        """Merge the store's revocations; return the keys that were news here."""
        found = await self.store.all()
        self._sweep()
        return [key for key, not_before in found.items() if self.record(key, not_before)]

    def _sweep(self) -> None:
        now = self._now()
        for key in [k for k, (_, until) in self._entries.items() if until <= now]:
            del self._entries[key]
