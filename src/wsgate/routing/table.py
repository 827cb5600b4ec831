"""The route table: action-type patterns to services, from every source.

Patterns are exact types (``orders/UPDATE``), prefixes (``orders/*``) and the
catch-all ``*``; the most specific wins (:class:`~wsgate.protocol.patterns.
PatternTable`), and :meth:`RouteTable.lookup` costs one dict probe for exact
types plus one per distinct prefix length, whatever the number of routes.

Sources merge into one live table:

1. static: ``[services.<name>]`` and ``[[routes]]`` of the config
   (:meth:`RouteTable.from_config`, or :meth:`add_service` / :meth:`add_route`);
2. self-registration: :meth:`register` adds or renews one instance (URL) of a
   service with the patterns it handles and a TTL; a registration not renewed
   within its TTL drops out. Expiry is checked lazily by :meth:`lookup` (one
   comparison per call) and by :meth:`sweep`, which the owner may call
   periodically to keep :meth:`snapshot` tidy.

3. discovery: a discoverer (gRPC reflection, NATS services) hands the whole
   set it found to :meth:`sync`, every round; what it no longer finds drops
   out at once.

When sources disagree about an equal pattern, a static route wins, then a
registration, then gRPC, then NATS; among registrations the service
registered first keeps the pattern until it expires. The most specific
pattern still wins across sources (``orders/GET`` from NATS beats a static
``orders/*``). A registered instance of a service declared in the
config joins that service (and uses its timeout, secret and concurrency cap);
a service known only from registrations uses the table's ``registered_*``
defaults and disappears with its last instance.

Time comes from the injected ``clock`` (monotonic seconds).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import Any, Final, NamedTuple

from wsgate.config import Config
from wsgate.protocol.envelope import GATEWAY_PREFIX
from wsgate.protocol.patterns import PatternTable
from wsgate.routing.instances import (
    BACKOFF_MAX_S,
    BACKOFF_MIN_S,
    DISCOVERED,
    Instance,
    Service,
    ServicePool,
    Source,
    Transport,
)

__all__ = [
    "MAX_ACTIONS_PER_REGISTRATION",
    "MAX_TTL_S",
    "Discovered",
    "RouteTable",
    "is_pattern",
]

log = logging.getLogger(__name__)

MAX_ACTIONS_PER_REGISTRATION: Final = 256
MAX_TTL_S: Final = 86400.0
_NAME_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_PATTERN_RE: Final = re.compile(r"\*|[A-Za-z0-9_./:@$-]{1,128}\*?")
_RANKED: Final[tuple[Source, ...]] = ("registered", *DISCOVERED)
_URL_RE: Final = re.compile(r"https?://[^\s]{1,2040}")
_NEVER: Final = float("inf")
"""A pool's ``next_expiry`` when none of its instances expires."""


def is_pattern(text: str) -> bool:
    """Tell whether ``text`` is a route pattern: an action type, ``prefix*`` or ``*``."""
    return _PATTERN_RE.fullmatch(text) is not None


class Discovered(NamedTuple):
    """One service a discoverer found: its instance and the patterns it serves.

    ``name`` must be unique across sources; discoverers prefix it with their
    source (``grpc:127.0.0.1:50051``, ``nats:orders``). ``url`` is what the
    transport's invoker understands (a gRPC target, a NATS subject).
    """

    name: str
    url: str
    patterns: tuple[str, ...]
    transport: Transport
    timeout_ms: int = 2000
    max_concurrency: int = 256


def _specificity(pattern: str) -> tuple[int, int, str]:
    """Sort key: exact types first, then longer prefixes, ``*`` last."""
    if pattern.endswith("*"):
        return (1, -len(pattern), pattern)
    return (0, 0, pattern)


class RouteTable:
    """The live route table. Not thread-safe; use it from one event loop."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        backoff_min_s: float = BACKOFF_MIN_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        max_registrations: int = 1024,
        registered_timeout_ms: int = 2000,
        registered_secret: str = "",
        registered_max_concurrency: int = 256,
        registered_pipeline: int = 1,
    ) -> None:
        self._clock = clock
        self._backoff = (backoff_min_s, backoff_max_s)
        self._max_registrations = max_registrations
        """Registered instances held at most; :meth:`register` refuses more."""
        self._registered_defaults = (
            registered_timeout_ms,
            registered_secret,
            registered_max_concurrency,
            registered_pipeline,
        )
        self._pools: dict[str, ServicePool] = {}
        self._static: dict[str, tuple[str, tuple[str, ...]]] = {}
        """pattern -> (service name, roles) from the config."""
        self._routes: dict[str, Service] = {}
        """The effective pattern -> service map (mirrors ``_table``)."""
        self._table: PatternTable[Service] = PatternTable()
        self._routes_by_key: dict[tuple[str, tuple[str, ...]], Service] = {}
        self._sources: dict[str, Source] = {}
        """pattern -> the source of its effective route."""
        self._registered = 0
        self._discovered: dict[Source, set[str]] = {source: set() for source in DISCOVERED}
        """Per discovered source, the names of its pools."""

    @classmethod
    def from_config(cls, config: Config, **settings: Any) -> RouteTable:
        """A table holding the config's services and routes; ``settings`` go to ``__init__``."""
        table = cls(**settings)
        for name, svc in config.services.items():
            table.add_service(
                name,
                svc.target,
                timeout_ms=svc.timeout_ms,
                secret=svc.secret,
                max_concurrency=svc.max_concurrency,
                pipeline=svc.pipeline,
                transport=svc.transport,
            )
        for rule in config.routes:
            table.add_route(rule.match, rule.service, rule.roles)
        return table

    # Static source

    def add_service(
        self,
        name: str,
        url: str,
        *,
        timeout_ms: int = 2000,
        secret: str = "",
        max_concurrency: int = 256,
        pipeline: int = 1,
        transport: Transport = "http",
    ) -> None:
        """Declare a static service with an instance at ``url``.

        ``url`` is what ``transport``'s invoker calls (a NATS subject for ``nats``).

        Declaring the same name again adds another instance (the settings of
        the first declaration stay); a registered instance at ``url`` becomes
        static (it no longer expires).
        """
        pool = self._pools.get(name)
        if pool is None or not pool.static:
            fresh = self._new_pool(
                name,
                timeout_ms,
                secret,
                max_concurrency,
                static=True,
                pipeline=pipeline,
                transport=transport,
            )
            if pool is not None:  # registered instances join the declared service
                fresh.instances.extend(pool.instances)
                fresh.refresh_expiry()
            self._pools[name] = pool = fresh
        inst = pool.find(url)
        if inst is None:
            pool.instances.insert(0, Instance(url, "static"))
        elif inst.source == "registered":
            inst.source, inst.expires_at, inst.actions = "static", None, ()
            self._registered -= 1
            pool.refresh_expiry()
        self._rebuild()

    def add_route(self, pattern: str, service: str, roles: Iterable[str] = ()) -> None:
        """Route ``pattern`` to the static service ``service`` (declared first)."""
        pool = self._pools.get(service)
        if pool is None or not pool.static:
            raise ValueError(f"no static service {service!r}")
        key = (service, tuple(roles))
        self._static[pattern] = key
        # Static routes win over registrations, so this is a local change.
        binding = self._routes_by_key.get(key)
        if binding is None or binding.pool is not pool:
            binding = self._routes_by_key[key] = Service(pool, key[1])
        if self._routes.get(pattern) is not binding:
            self._routes[pattern] = binding
            self._table.add(pattern, binding)

    # Self-registration

    def register(
        self,
        name: str,
        url: str,
        actions: list[str],
        ttl_s: float,
        now: float | None = None,
    ) -> None:
        """Add or renew the instance ``url`` of service ``name`` for ``ttl_s`` seconds.

        ``actions`` are the patterns it handles (replacing those of an earlier
        registration of the same instance). Renewing keeps the instance's
        health. Registering the URL of a static instance changes nothing.
        Raises :class:`ValueError` (its message fit for the registering
        service) on a bad name, URL, pattern or TTL, or when
        ``max_registrations`` instances are already registered.
        """
        self._check_registration(name, url, actions, ttl_s)
        now = self._clock() if now is None else now
        patterns = tuple(dict.fromkeys(actions))
        pool = self._pools.get(name)
        if pool is not None and pool.transport != "http":
            raise ValueError(f"name: {name} is a {pool.transport} service, not HTTP")
        if pool is None:
            timeout_ms, secret, cap, pipeline = self._registered_defaults
            pool = self._new_pool(name, timeout_ms, secret, cap, static=False, pipeline=pipeline)
            self._pools[name] = pool
        inst = pool.find(url)
        if inst is None:
            if self._registered >= self._max_registrations:
                raise ValueError("registration limit reached")
            inst = Instance(url, "registered")
            pool.instances.append(inst)
            self._registered += 1
            log.info("service %s: registered %s", name, url)
        if inst.source == "static":
            return  # the config already declares this instance; it never expires
        inst.expires_at = now + ttl_s
        changed = inst.actions != patterns
        inst.actions = patterns
        pool.refresh_expiry()
        if changed:
            self._rebuild()

    def unregister(self, name: str, url: str) -> bool:
        """Drop the registered instance ``url`` of ``name`` now; ``True`` if it existed."""
        pool = self._pools.get(name)
        inst = pool.find(url) if pool is not None else None
        if pool is None or inst is None or inst.source != "registered":
            return False
        pool.instances.remove(inst)
        self._registered -= 1
        self._after_removal(pool)
        self._rebuild()
        return True

    def unreachable(self, name: str, url: str) -> None:
        """Take the instance ``url`` of ``name`` out for its back-off: nothing listens there."""
        pool = self._pools.get(name)
        inst = None if pool is None else pool.find(url)
        if pool is not None and inst is not None and pool.mark_failed(inst):
            log.warning("service %s: nothing listens at %s; taken out", name, url)

    def sweep(self, now: float | None = None) -> int:
        """Drop registrations expired at ``now``; return how many dropped."""
        now = self._clock() if now is None else now
        dropped = 0
        for pool in list(self._pools.values()):
            if pool.next_expiry > now:
                continue
            gone = pool.drop_expired(now)
            for inst in gone:
                log.info("service %s: registration of %s expired", pool.name, inst.url)
            dropped += len(gone)
            self._after_removal(pool)
        if dropped:
            self._registered -= dropped
            self._rebuild()
        return dropped

    # Discovery

    def sync(self, source: Source, found: Iterable[Discovered]) -> bool:
        """Make ``source``'s routes exactly ``found``; return whether anything changed.

        ``source`` is a discovered one (``grpc``, ``nats``). An instance found
        again keeps its health; a service not found any more drops out now,
        with its routes (a less specific or lower-ranked route may then match).
        Names hold a ``:`` (``grpc:<target>``), which registered names cannot,
        so the sources never share a pool; a name the config already uses is
        skipped and logged. Cost: one pass over ``found`` and the source's pools.
        """
        if source not in DISCOVERED:
            raise ValueError(f"not a discovered source: {source!r}")
        wanted: dict[str, list[Discovered]] = {}
        for entry in found:
            if ":" not in entry.name:
                raise ValueError(f"a discovered name is <source>:<name>, not {entry.name!r}")
            wanted.setdefault(entry.name, []).append(entry)
        mine = self._discovered[source]
        changed = False
        for name in list(mine - wanted.keys()):
            del self._pools[name]
            mine.discard(name)
            changed = True
        for name, entries in wanted.items():
            pool = self._pools.get(name)
            if pool is not None and name not in mine:
                log.warning("%s discovery: service name %s is taken; skipped", source, name)
                continue
            first = entries[0]
            if pool is None or pool.transport != first.transport:
                pool = self._new_pool(
                    name,
                    first.timeout_ms,
                    "",
                    first.max_concurrency,
                    static=False,
                    transport=first.transport,
                )
                self._pools[name] = pool
                mine.add(name)
                changed = True
            urls = {entry.url: tuple(dict.fromkeys(entry.patterns)) for entry in entries}
            kept = [inst for inst in pool.instances if inst.url in urls]
            changed |= len(kept) != len(pool.instances)
            for url, patterns in urls.items():
                inst = pool.find(url)
                if inst is None:
                    inst = Instance(url, source)
                    kept.append(inst)
                    changed = True
                if inst.actions != patterns:
                    inst.actions = patterns
                    changed = True
            pool.instances = kept
        if changed:
            self._rebuild()
        return changed

    # Queries

    def lookup(self, action_type: str) -> Service | None:
        """The service of the most specific pattern matching ``action_type``.

        ``None`` when nothing matches. An entry whose registrations have all
        expired is dropped first (a less specific one may then match). The
        gateway's own types (``@@wsgate/*``) match only patterns that start with
        ``@@wsgate/``.
        """
        found = self._table.match(action_type)
        if found is not None:
            expiry = found[1].pool.next_expiry  # inf for static instances: no clock read
            if expiry != _NEVER and expiry <= self._clock():
                self.sweep()
                found = self._table.match(action_type)
        if found is None:
            return None
        pattern, service = found
        if action_type.startswith(GATEWAY_PREFIX) and not pattern.startswith(GATEWAY_PREFIX):
            # Hooks and lifecycle events go only where they are routed by name: a
            # catch-all "*" must not turn a service into a connect hook by accident.
            return None
        return service

    def service(self, name: str) -> Service | None:
        """The service called ``name`` (no route roles), e.g. for lifecycle events."""
        pool = self._pools.get(name)
        return Service(pool) if pool is not None else None

    def snapshot(self) -> list[dict[str, Any]]:
        """Every route, most specific first, as JSON-ready dicts.

        ``{"pattern", "service", "source", "transport", "roles", "instances":
        [{"url", "source", "healthy", "expires_in"}]}``; ``source`` is where
        the winning route came from (``static``, ``registered``, ``grpc``,
        ``nats``); ``expires_in`` is seconds left for a registration and
        ``None`` otherwise.
        """
        now = self._clock()
        entries = []
        for pattern in sorted(self._routes, key=_specificity):
            service = self._routes[pattern]
            instances = [
                {
                    "url": inst.url,
                    "source": inst.source,
                    "healthy": inst.healthy(now),
                    "expires_in": (
                        None
                        if inst.expires_at is None
                        else round(max(inst.expires_at - now, 0.0), 3)
                    ),
                }
                for inst in service.pool.instances
                if inst.live(now)
            ]
            entries.append(
                {
                    "pattern": pattern,
                    "service": service.name,
                    "source": self._sources.get(pattern, "static"),
                    "transport": service.pool.transport,
                    "roles": list(service.roles),
                    "instances": instances,
                }
            )
        return entries

    def __len__(self) -> int:
        """Number of effective routes."""
        return len(self._routes)

    # Internals

    def _new_pool(
        self,
        name: str,
        timeout_ms: int,
        secret: str,
        cap: int,
        *,
        static: bool,
        pipeline: int = 1,
        transport: Transport = "http",
    ) -> ServicePool:
        return ServicePool(
            name,
            timeout_ms=timeout_ms,
            secret=secret,
            max_concurrency=cap,
            static=static,
            pipeline=pipeline,
            transport=transport,
            clock=self._clock,
            backoff_min_s=self._backoff[0],
            backoff_max_s=self._backoff[1],
        )

    def _after_removal(self, pool: ServicePool) -> None:
        pool.refresh_expiry()
        if not pool.static and not pool.instances:
            del self._pools[pool.name]

    def _check_registration(self, name: str, url: str, actions: list[str], ttl_s: float) -> None:
        if not _NAME_RE.fullmatch(name):
            raise ValueError("name: 1-64 chars of [A-Za-z0-9_.-]")
        if not _URL_RE.fullmatch(url):
            raise ValueError("url: an http:// or https:// URL")
        if not isinstance(actions, list) or not 1 <= len(actions) <= MAX_ACTIONS_PER_REGISTRATION:
            raise ValueError(f"actions: a list of 1-{MAX_ACTIONS_PER_REGISTRATION} patterns")
        for pattern in actions:
            if not isinstance(pattern, str) or not is_pattern(pattern):
                raise ValueError(f"actions: {pattern!r} is not an action type or prefix*")
        if not 0 < ttl_s <= MAX_TTL_S:
            raise ValueError(f"ttl: seconds in (0, {MAX_TTL_S:g}]")

    def _rebuild(self) -> None:
        """Recompute the effective routes; touch the pattern table only where they changed."""
        routes: dict[str, Service] = {}
        bindings: dict[tuple[str, tuple[str, ...]], Service] = {}

        def bind(pool: ServicePool, roles: tuple[str, ...]) -> Service:
            key = (pool.name, roles)
            old = self._routes_by_key.get(key)
            if old is not None and old.pool is pool:
                bindings[key] = old
            return bindings.setdefault(key, Service(pool, roles))

        sources: dict[str, Source] = {}
        for pattern, (name, roles) in self._static.items():
            routes[pattern] = bind(self._pools[name], roles)
            sources[pattern] = "static"
        for source in _RANKED:  # static, then the first registered, then grpc, then nats
            for pool in self._pools.values():
                for inst in pool.instances:
                    if inst.source != source:
                        continue
                    for pattern in inst.actions:
                        if pattern not in routes:
                            routes[pattern] = bind(pool, ())
                            sources[pattern] = source
        for pattern in self._routes.keys() - routes.keys():
            self._table.remove(pattern)
        for pattern, service in routes.items():
            if self._routes.get(pattern) is not service:
                self._table.add(pattern, service)
        self._routes = routes
        self._routes_by_key = bindings
        self._sources = sources
