"""A service and its instances: round robin with passive health.

:class:`Service` is what a route points at. Its instances (URLs) share its
load in round robin, skipping the unhealthy and the expired. Health is
passive: the invoker reports each call's outcome; an instance that fails
(connection refused, 5xx, timeout) is taken out for a back-off period that
starts at ``backoff_min_s`` and doubles with each consecutive failure up to
``backoff_max_s``; after it, the instance gets traffic again (a trial), and
one success restores it fully. Only a failure of a healthy instance counts,
so a burst of in-flight calls failing together doubles the back-off once.
When every instance is down, the one recovering soonest still gets traffic
(panic mode, as Envoy does), so a lone instance is never shut out entirely.

Every loop here runs over one service's instances only.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Final, Literal

__all__ = [
    "BACKOFF_MAX_S",
    "BACKOFF_MIN_S",
    "DISCOVERED",
    "Instance",
    "Service",
    "ServicePool",
    "Slots",
    "Source",
    "Transport",
]

BACKOFF_MIN_S: Final = 5.0
BACKOFF_MAX_S: Final = 60.0

Source = Literal["static", "registered", "grpc", "nats"]
"""Where an instance came from: the config, a self-registration, or discovery."""
DISCOVERED: Final[tuple[Source, ...]] = ("grpc", "nats")
"""The discovered sources, in the order they win an equal pattern (after static, registered)."""
Transport = Literal["http", "grpc", "nats"]
"""What carries calls to a service: names its :class:`~wsgate.routing.invoker.Invoker`."""


class Instance:
    """One URL of a service, with its health and (if registered) its expiry."""

    __slots__ = ("actions", "down_until", "expires_at", "failures", "source", "url")

    def __init__(self, url: str, source: Source, expires_at: float | None = None) -> None:
        self.url = url
        self.source: Source = source
        self.expires_at = expires_at
        """Clock time past which a registration is gone; ``None``: never."""
        self.actions: tuple[str, ...] = ()
        """Patterns a registration claims (empty for static instances)."""
        self.down_until = 0.0
        """Clock time until which the instance gets no traffic."""
        self.failures = 0
        """Consecutive failures; 0 when healthy."""

    def live(self, now: float) -> bool:
        return self.expires_at is None or self.expires_at > now

    def healthy(self, now: float) -> bool:
        return self.down_until <= now


class Slots:
    """A limit on calls in flight, with a synchronous fast path.

    Like :class:`asyncio.Semaphore` (FIFO waiters, a released slot is handed
    straight to the oldest waiter), but :meth:`locked` and :meth:`try_acquire`
    are one comparison (``Semaphore.locked`` scans its waiters).
    """

    __slots__ = ("_free", "_waiters", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free = limit
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def free(self) -> int:
        """Slots not taken."""
        return self._free

    def locked(self) -> bool:
        """Tell whether a call would have to wait."""
        return self._free <= 0

    def try_acquire(self) -> bool:
        """Take a slot if one is free; never waits."""
        if self._free > 0:
            self._free -= 1
            return True
        return False

    async def acquire(self) -> None:
        """Take a slot, waiting in line for one (cancel to stop waiting)."""
        if self._free > 0:
            self._free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # handed a slot just as we gave up: pass it on
            raise

    def release(self) -> None:
        """Give a slot back: to the oldest waiter, else to the free count."""
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self._free += 1


class ServicePool:
    """The shared state of one named service: settings, instances, slots.

    Owned by :class:`~wsgate.routing.table.RouteTable`; reached through
    :class:`Service`.
    """

    __slots__ = (
        "_next",
        "backoff_max_s",
        "backoff_min_s",
        "clock",
        "instances",
        "max_concurrency",
        "name",
        "next_expiry",
        "pipeline",
        "secret",
        "slots",
        "static",
        "timeout_ms",
        "transport",
    )

    def __init__(
        self,
        name: str,
        *,
        timeout_ms: int,
        secret: str,
        max_concurrency: int,
        static: bool,
        clock: Callable[[], float],
        pipeline: int = 1,
        backoff_min_s: float = BACKOFF_MIN_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        transport: Transport = "http",
    ) -> None:
        self.name = name
        self.transport: Transport = transport
        """Which invoker carries calls to this service."""
        self.timeout_ms = timeout_ms
        self.secret = secret
        self.max_concurrency = max_concurrency
        self.pipeline = pipeline
        """Requests one connection to an instance may carry unanswered."""
        self.static = static
        """Declared in the config (kept even without instances)."""
        self.clock = clock
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.instances: list[Instance] = []
        self.next_expiry = float("inf")
        """Earliest ``expires_at`` of the instances: one comparison tells
        whether any may have expired."""
        self.slots = Slots(max_concurrency)
        """Concurrent calls in flight to this service (all instances)."""
        self._next = 0

    def find(self, url: str) -> Instance | None:
        for inst in self.instances:
            if inst.url == url:
                return inst
        return None

    def refresh_expiry(self) -> None:
        self.next_expiry = min(
            (i.expires_at for i in self.instances if i.expires_at is not None),
            default=float("inf"),
        )

    def drop_expired(self, now: float) -> list[Instance]:
        """Remove instances expired at ``now``; return them."""
        gone = [i for i in self.instances if not i.live(now)]
        if gone:
            self.instances = [i for i in self.instances if i.live(now)]
        self.refresh_expiry()
        return gone

    def pick(self) -> Instance | None:
        """The next live, healthy instance in round robin, or ``None``.

        When every live instance is down (panic), the one whose back-off ends
        first is tried anyway: taking out the last instance would turn one
        failed call into a whole back-off of refusals, and a dead instance
        fails fast on its own. ``None`` only when no instance is live.
        """
        now = self.clock()
        instances = self.instances
        count = len(instances)
        soonest: Instance | None = None
        for step in range(count):
            index = (self._next + step) % count
            inst = instances[index]
            expires = inst.expires_at  # what inst.live(now) tells, without its frame
            if expires is not None and expires <= now:
                continue
            if inst.down_until <= now:
                self._next = index + 1
                return inst
            if soonest is None or inst.down_until < soonest.down_until:
                soonest = inst
        return soonest

    def mark_failed(self, inst: Instance) -> bool:
        """Take ``inst`` out for its back-off; ``True`` if it was healthy."""
        now = self.clock()
        if inst.down_until > now:
            return False  # already out: concurrent failures count once
        inst.failures += 1
        backoff = self.backoff_min_s * 2.0 ** min(inst.failures - 1, 16)
        inst.down_until = now + min(backoff, self.backoff_max_s)
        return True

    def mark_ok(self, inst: Instance) -> bool:
        """Record a success; ``True`` if ``inst`` was recovering from failures."""
        if inst.failures == 0:
            return False
        inst.failures = 0
        inst.down_until = 0.0
        return True


class Service:
    """A route's target: a named service, its instances and call settings.

    Several routes may point at one service; each gets its own
    :class:`Service` (carrying that route's required ``roles``) over the one
    shared :class:`ServicePool`, so load, health and the concurrency cap are
    per service, not per route.
    """

    __slots__ = ("pool", "roles")

    def __init__(self, pool: ServicePool, roles: tuple[str, ...] = ()) -> None:
        self.pool = pool
        self.roles = roles
        """Roles of which the caller must hold at least one (empty: anyone)."""

    @property
    def name(self) -> str:
        return self.pool.name

    @property
    def timeout_ms(self) -> int:
        return self.pool.timeout_ms

    @property
    def secret(self) -> str:
        return self.pool.secret

    @property
    def max_concurrency(self) -> int:
        return self.pool.max_concurrency

    @property
    def instances(self) -> tuple[Instance, ...]:
        return tuple(self.pool.instances)

    def allows(self, roles: tuple[str, ...] | list[str]) -> bool:
        """Tell whether a caller holding ``roles`` may use this route."""
        return not self.roles or any(r in self.roles for r in roles)

    def pick(self) -> Instance | None:
        """The instance for the next call (round robin), ``None`` if none is usable."""
        return self.pool.pick()

    def mark_failed(self, inst: Instance) -> bool:
        """Report a failed call to ``inst``; ``True`` when it just went down."""
        return self.pool.mark_failed(inst)

    def mark_ok(self, inst: Instance) -> bool:
        """Report a successful call; ``True`` when ``inst`` just came back."""
        return self.pool.mark_ok(inst)

    def __repr__(self) -> str:
        return f"Service({self.name!r}, roles={self.roles!r})"
