"""What nodes share besides messages: rate limits, connection counts, registrations.

- :class:`ClusterLimits` charges ``user`` and ``ip`` rate-limit rules on the
  backend's :class:`~wsgate.backends.base.SharedLimits` (the core holds the
  connection's later messages meanwhile, so their order is kept), and counts
  each user's connections across nodes before admitting one — wrapping any
  other admission (the connect hook). When the backend fails, it falls back
  to the node's own limits rather than refusing everyone.
- :class:`SharedRoutes` writes self-registrations to the
  :class:`~wsgate.backends.base.ServiceRegistry` and tells the other nodes,
  which reload them; every node also reloads every :data:`RELOAD_EVERY`
  ticks of the bus and expires registrations itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

import msgspec

from wsgate.backends.base import Backend, Registration
from wsgate.cluster.ports import BusPort, Schedule
from wsgate.core.connection import Connection
from wsgate.core.gateway import Admission, Gateway
from wsgate.core.limits import Rate, retry_ms
from wsgate.protocol.codes import CloseCode, ErrorCode
from wsgate.routing.table import RouteTable

__all__ = ["RELOAD_EVERY", "ROUTES_SUBJECT", "ClusterLimits", "SharedRoutes"]

log = logging.getLogger("wsgate.cluster.shared")

ROUTES_SUBJECT = "routes.changed"
"""Every node subscribes: a registration changed somewhere."""

RELOAD_EVERY: Final = 15
"""Ticks of the bus between two full reloads of the shared registrations (a
tick is a third of the heartbeat TTL: every 5 TTLs, a missed change at the latest)."""


class ClusterLimits:
    """Cluster-wide rate limits and per-user connection caps."""

    _gw: Gateway
    """Given by :meth:`attach` (through the bus's)."""

    def __init__(
        self,
        bus: BusPort,
        backend: Backend,
        *,
        max_per_user: int,
        inner: Admission | None,
    ) -> None:
        self._bus = bus
        self._limits = backend.limits
        self._max_per_user = max_per_user
        self._inner = inner
        self._counted: set[str] = set()
        self.failures = 0
        """Backend calls that failed and were passed over (fail open), each logged."""

    def attach(self, gateway: Gateway) -> None:
        self._gw = gateway

    # SharedCheck ---------------------------------------------------------------

    def acquire(self, key: str, rate: Rate, done: Callable[[float], None]) -> None:
        async def charge() -> None:
            try:
                wait = await self._limits.acquire(key, rate.interval, rate.tolerance)
            except Exception:
                self.failures += 1
                log.warning("shared limits unavailable; this node decides alone", exc_info=True)
                wait = 0.0
            done(wait)

        self._bus.spawn(charge())

    # Admission -----------------------------------------------------------------

    def admit(self, conn: Connection) -> None:
        if not self._max_per_user or conn.principal.anonymous:
            self._next(conn)
            return
        self._bus.spawn(self._count(conn))

    def abandoned(self, conn: Connection) -> None:
        """Closed before admission: release its count (if taken) and tell the inner hook."""
        self._bus.spawn(self.release(conn))
        if self._inner is not None:
            self._inner.abandoned(conn)

    def _next(self, conn: Connection) -> None:
        if self._inner is not None:
            self._inner.admit(conn)
        else:
            self._gw.admitted(conn)

    async def _count(self, conn: Connection) -> None:
        key = f"conns|{conn.principal.sub}"
        try:
            size = await self._limits.count(key, conn.id, self._gw.node_id, 1)
        except Exception:
            self.failures += 1
            log.warning(
                "shared connection counts unavailable; admitting by local caps only", exc_info=True
            )
            self._next(conn)
            return
        self._counted.add(conn.id)
        if size > self._max_per_user:
            await self.release(conn)
            reason = "too many connections for this user"
            conn.send_error(ErrorCode.RATE_LIMITED, reason, retry_after_ms=retry_ms(5.0))
            self._gw.refused(conn, CloseCode.TOO_MANY, reason)
            return
        if conn.closed:
            await self.release(conn)
            return
        self._next(conn)

    async def release(self, conn: Connection) -> None:
        """The connection is gone (or refused): it no longer counts."""
        if conn.id in self._counted:
            self._counted.discard(conn.id)
            key = f"conns|{conn.principal.sub}"
            try:
                await self._limits.count(key, conn.id, self._gw.node_id, -1)
            except Exception:
                self.failures += 1
                log.warning("could not release a shared connection count", exc_info=True)

    async def forget_nodes(self, nodes: set[str]) -> None:
        for node in nodes:
            await self._limits.forget_node(node)


class _Change(msgspec.Struct):
    name: str
    url: str
    deleted: bool = False


class SharedRoutes:
    """Self-registrations shared by every node."""

    def __init__(
        self, bus: BusPort, backend: Backend, table: RouteTable, schedule: Schedule
    ) -> None:
        """Registers :meth:`reload` every :data:`RELOAD_EVERY` ticks on ``schedule``."""
        self._bus = bus
        self._registry = backend.registry
        self._table = table
        schedule.every(RELOAD_EVERY, "routes.reload", self.reload)

    def registered(self, name: str, url: str, actions: list[str], ttl_s: float) -> None:
        registration = Registration(name, url, actions, time.time() + ttl_s)

        async def share() -> None:
            await self._registry.put(registration)
            self._bus.publish(ROUTES_SUBJECT, msgspec.json.encode(_Change(name, url)))

        self._bus.spawn(share())

    def unregistered(self, name: str, url: str) -> None:
        async def share() -> None:
            await self._registry.delete(name, url)
            change = _Change(name, url, deleted=True)
            self._bus.publish(ROUTES_SUBJECT, msgspec.json.encode(change))

        self._bus.spawn(share())

    def on_change(self, data: bytes) -> None:
        try:
            change = msgspec.json.decode(data, type=_Change)
        except msgspec.DecodeError:
            log.warning("dropped a malformed routes message")
            return
        if change.deleted:
            self._table.unregister(change.name, change.url)
        else:
            self._bus.spawn(self.reload())

    async def reload(self) -> None:
        """Apply every shared registration to this node's table; raises what the
        registry raises (at the bus's start, and on the ticks)."""
        now = time.time()
        for reg in await self._registry.all():
            ttl = reg.expires_at - now
            if ttl > 0:
                try:
                    self._table.register(reg.name, reg.url, reg.actions, ttl)
                except ValueError as exc:
                    log.warning("skipped shared registration %s %s: %s", reg.name, reg.url, exc)
