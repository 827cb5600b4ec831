"""gRPC procedure discovery: each ``[[grpc]]`` target's methods become routes.

Per target, :class:`GrpcDiscovery` reflects the server
(:func:`~wsgate.routing.grpc_reflect.reflect`) at :meth:`~GrpcDiscovery.start`
and every ``discover_every_s`` after, on the invoker's channel to it. A round
turns what it found into routes of the ``grpc`` source:

- every unary and server-streaming method, under its own name
  ``<package>.<Service>/<Method>`` (an exact pattern; client-streaming and
  bidirectional methods are not routed);
- every ``[grpc.aliases]`` entry whose method the target serves, under the
  alias (a missing aliased method is logged, once per target until found).

All of a target's patterns point at one service, ``grpc:<target>``, whose
one instance is the target. The round first binds the methods in the
invoker (:meth:`GrpcInvoker.bind`), then replaces the whole ``grpc`` source
of the route table (``table.sync``), so a route never points at a method the
invoker does not know. A target that restarts with new methods is routable
after its next round, without a gateway restart; one that cannot be
reflected keeps its routes (calls get ``UPSTREAM_UNAVAILABLE``) for
:data:`MISSES_TO_DROP` ``- 1`` rounds, and its routes drop with the
:data:`MISSES_TO_DROP`-th failed round in a row (then ``NO_ROUTE``) until
it answers again.

State is one entry per configured target (a fixed set); :meth:`aclose`
cancels and awaits the round loops (the invoker closes the channels).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Final

from wsgate.config import GrpcConfig
from wsgate.routing.grpc_invoker import GrpcInvoker
from wsgate.routing.grpc_reflect import Reflected, ReflectionFailed, reflect
from wsgate.routing.grpc_transcode import Method
from wsgate.routing.table import Discovered, RouteTable

__all__ = ["MISSES_TO_DROP", "GrpcDiscovery"]

log = logging.getLogger(__name__)

MISSES_TO_DROP: Final = 2
"""Failed reflection rounds in a row after which a target's routes drop."""


class GrpcDiscovery:
    """Keeps the route table's ``grpc`` source equal to what the targets serve."""

    def __init__(
        self, table: RouteTable, invoker: GrpcInvoker, targets: Sequence[GrpcConfig]
    ) -> None:
        self._table = table
        self._invoker = invoker
        self._targets = list(targets)
        self._found: dict[str, Discovered] = {}
        """Target -> its routes' entry; one per configured target at most."""
        self._misses: dict[str, int] = {t.target: 0 for t in self._targets}
        self._latched: dict[str, set[str]] = {t.target: set() for t in self._targets}
        """What was logged per target (failure, missing aliases), cleared by a good round."""
        self._answered: set[str] = set()
        """Targets reflected at least once (a subset of the configured ones)."""
        self._tasks: list[asyncio.Task[None]] = []
        self.rounds = 0
        """Rounds run, good or not (for tests and metrics); it only grows."""

    async def start(self) -> None:
        """Run one round for every target (concurrently), then keep them going in tasks."""
        await asyncio.gather(*(self.discover(t) for t in self._targets))
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._every(t)) for t in self._targets]

    async def aclose(self) -> None:
        """Stop the rounds and wait for them (call before the invoker's ``aclose``)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _every(self, target: GrpcConfig) -> None:
        while True:
            await asyncio.sleep(target.discover_every_s)
            await self.discover(target)

    async def discover(self, target: GrpcConfig) -> None:
        """One round for ``target``: reflect it, bind its methods, resync the table."""
        name = target.target
        self.rounds += 1
        try:
            reflected = await reflect(self._invoker.channel(name), target.timeout_ms / 1000)
        except ReflectionFailed as exc:
            self._missed(target, str(exc))
            return
        except Exception as exc:  # a bug, or descriptors protobuf cannot take
            self._missed(target, f"discovery failed unexpectedly: {exc!r}", exc)
            return
        if self._misses[name] and name in self._answered:
            log.info("grpc target %s: reflected again", name)
        self._answered.add(name)
        self._misses[name] = 0
        self._latched[name].discard("failed")
        methods = self._methods(target, reflected)
        self._invoker.bind(name, methods)
        entry = Discovered(
            f"grpc:{name}",
            name,
            tuple(methods),
            "grpc",
            timeout_ms=target.timeout_ms,
            max_concurrency=target.max_concurrency,
        )
        before = self._found.get(name)
        self._found[name] = entry
        if self._sync() or before is None:
            log.info("grpc target %s: %d routes", name, len(methods))

    def _methods(self, target: GrpcConfig, reflected: Reflected) -> dict[str, Method]:
        """Action type -> method: the routable methods by name, then the aliases."""
        methods: dict[str, Method] = {}
        for name, descriptor in reflected.methods.items():
            method = Method(descriptor)
            if method.unary or method.server_streaming:
                methods[name] = method
        latched = self._latched[target.target]
        for alias, spec in target.aliases.items():
            if isinstance(spec, str):
                method_name, reply = spec, None
            else:
                method_name, reply = spec.method, spec.reply
            descriptor = reflected.methods.get(method_name)
            aliased = None if descriptor is None else Method(descriptor, reply)
            if aliased is None or not (aliased.unary or aliased.server_streaming):
                if alias not in latched:
                    latched.add(alias)
                    log.warning(
                        "grpc target %s: alias %s names %s, which it does not serve",
                        target.target,
                        alias,
                        method_name,
                    )
                continue
            latched.discard(alias)
            methods[alias] = aliased
        return methods

    def _missed(self, target: GrpcConfig, reason: str, exc: Exception | None = None) -> None:
        """A failed round: logged once until a good one; the routes drop after a few.

        Before the target has ever answered, the line is INFO ("waiting"): a
        target that starts after the gateway is normal, and is retried every
        ``discover_every_s``. An unexpected failure (``exc``) is a WARNING
        with its traceback either way.
        """
        name = target.target
        self._misses[name] += 1
        if "failed" not in self._latched[name]:
            self._latched[name].add("failed")
            if exc is None and name not in self._answered:
                log.info("grpc target %s: waiting for it to answer (%s)", name, reason)
            else:
                log.warning("grpc target %s: %s", name, reason, exc_info=exc)
        if self._misses[name] >= MISSES_TO_DROP and self._found.pop(name, None) is not None:
            log.warning("grpc target %s: routes dropped (%d failed rounds)", name, MISSES_TO_DROP)
            self._sync()
            self._invoker.bind(name, {})

    def _sync(self) -> bool:
        return self._table.sync("grpc", list(self._found.values()))
