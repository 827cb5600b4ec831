"""NATS service discovery: services built with the NATS service API route themselves.

Each round, :class:`NatsDiscovery` sends one ``$SRV.INFO`` request and
collects the replies of every running ``nats.micro`` (or Go ``micro``)
service until ``window_s`` closes or ``max_services`` replies came. Each
endpoint whose metadata announces ``wsgate.actions`` (comma-separated route
patterns, ``"orders/*,orders/GET"``) becomes the service ``nats:<service
name>.<endpoint name>`` with one instance, the endpoint's subject, and those
patterns; the instances of one service (same name, same subject, usually one
queue group) are one route, and NATS hands each call to one of them; one
name on several subjects is one service with an instance per subject. No
``$SRV.PING`` is needed: INFO carries what PING does, and the endpoints.

Lifetime: a round runs at :meth:`start` and every ``interval_s``; what a
round finds goes to :meth:`RouteTable.sync("nats", ...)
<wsgate.routing.table.RouteTable.sync>`. An endpoint is routed from the
first round that sees it; one not seen for ``missed_rounds`` (2) rounds in a
row drops out. A round while the connection is down (reconnecting) is
skipped: it counts no miss, so an outage of the gateway's NATS link does not
empty the table (calls meanwhile fail ``UPSTREAM_TIMEOUT`` or
``UPSTREAM_UNAVAILABLE``).

What a reply may claim is bounded (docs/routing.md, "NATS"): replies read
per round (``max_services``), bytes per reply (``max_info_bytes``, larger
ones skipped), endpoints per service (``max_endpoints``, the rest ignored),
patterns per endpoint (``max_actions``, the rest ignored), endpoints known at
once (``max_services × max_endpoints``). A pattern that is not a route
pattern, or names the gateway's own types (``@@wsgate/…``: hooks are the
config's to route), is ignored; so is an endpoint whose subject holds a
wildcard. Everything skipped is logged once per service and reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Final

import msgspec
from nats.aio.client import Client
from nats.errors import Error as NatsError

from wsgate.config import is_nats_subject
from wsgate.protocol.envelope import GATEWAY_PREFIX
from wsgate.routing.table import Discovered, RouteTable, is_pattern

__all__ = ["ACTIONS_KEY", "INFO_SUBJECT", "NatsDiscovery", "parse_actions"]

log = logging.getLogger(__name__)

INFO_SUBJECT: Final = "$SRV.INFO"
"""Every running service answers it with its endpoints (the NATS service API)."""
ACTIONS_KEY: Final = "wsgate.actions"
"""The endpoint metadata key listing the patterns it serves."""
_NAME_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""Service and endpoint names of the NATS service API."""
_MAX_LOGGED: Final = 1024


class _Endpoint(msgspec.Struct):
    name: str
    subject: str
    queue_group: str | None = None
    metadata: dict[str, str] | None = None


class _Info(msgspec.Struct):
    name: str
    endpoints: list[_Endpoint] | None = None


_decoder: Final = msgspec.json.Decoder(_Info)


def parse_actions(value: str, limit: int) -> tuple[str, ...]:
    """The patterns of a ``wsgate.actions`` value: valid, deduplicated, at most ``limit``.

    Items are separated by commas and stripped; an empty item, an invalid
    pattern and one naming ``@@wsgate/`` types are dropped.
    """
    found: dict[str, None] = {}
    for item in value.split(",")[: limit * 4]:  # bounded work on a hostile value
        pattern = item.strip()
        if pattern and is_pattern(pattern) and not pattern.startswith(GATEWAY_PREFIX):
            found[pattern] = None
            if len(found) == limit:
                break
    return tuple(found)


class _Known:
    """One endpoint being routed, and the round it was last seen in."""

    __slots__ = ("entry", "seen")

    def __init__(self, entry: Discovered, seen: int) -> None:
        self.entry = entry
        self.seen = seen


class NatsDiscovery:
    """Feeds the route table with the NATS services that announce ``wsgate.actions``.

    Call :meth:`start` once (or drive :meth:`round` yourself), then
    :meth:`aclose`. The connection is the caller's (the node's); this never
    closes it.
    """

    def __init__(
        self,
        nc: Client,
        table: RouteTable,
        *,
        interval_s: float = 5.0,
        window_s: float = 0.25,
        timeout_ms: int = 2000,
        max_concurrency: int = 256,
        max_services: int = 256,
        max_endpoints: int = 32,
        max_actions: int = 64,
        max_info_bytes: int = 65536,
        missed_rounds: int = 2,
    ) -> None:
        self._nc = nc
        self._table = table
        self._interval_s = interval_s
        self._window_s = window_s
        self._call = (timeout_ms, max_concurrency)
        """Settings of every discovered service's pool."""
        self._max_services = max_services
        self._max_endpoints = max_endpoints
        self._max_actions = max_actions
        self._max_info_bytes = max_info_bytes
        self._missed_rounds = missed_rounds
        self._known: dict[tuple[str, str], _Known] = {}
        """(service name ``nats:<svc>.<endpoint>``, subject) -> its entry; at most
        ``max_services × max_endpoints``, an entry freed when it drops out. One
        name on several subjects (two versions) is one service with an
        instance per subject, in round robin."""
        self._logged: set[tuple[str, str]] = set()
        """(service, reason) already logged; cleared past :data:`_MAX_LOGGED`."""
        self.rounds = 0
        """Rounds run (skipped ones not counted)."""
        self.task: asyncio.Task[None] | None = None

    @property
    def known(self) -> int:
        """Endpoints routed now."""
        return len(self._known)

    def start(self) -> None:
        """Run a round now and one every ``interval_s``, in a task, until :meth:`aclose`."""
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def aclose(self) -> None:
        """Stop the rounds and wait for the task to end (the routes found stay)."""
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def round(self) -> bool:
        """Run one round; return whether the table changed.

        Skipped (``False``, no miss counted) while the connection is not up.
        Takes ``window_s`` at most. Raises nothing but cancellation.
        """
        if not self._nc.is_connected:
            return False
        try:
            replies = await self._collect()
        except NatsError as exc:  # the link went down during the round
            log.warning("NATS discovery: round failed: %s", exc)
            return False
        self.rounds += 1
        now = self.rounds
        limit = self._max_services * self._max_endpoints
        for data in replies:
            for entry in self._parse(data):
                key = (entry.name, entry.url)
                known = self._known.get(key)
                if known is not None:
                    known.entry, known.seen = entry, now
                elif len(self._known) < limit:
                    self._known[key] = _Known(entry, now)
                    log.info("NATS discovery: %s on %s", entry.name, entry.url)
                else:
                    self._note(entry.name, f"more than {limit} endpoints known")
        for key in [
            k for k, known in self._known.items() if now - known.seen >= self._missed_rounds
        ]:
            del self._known[key]
            log.info("NATS discovery: %s on %s stopped answering", *key)
        return self._table.sync("nats", [k.entry for k in self._known.values()])

    # Internals

    async def _run(self) -> None:
        while True:
            try:
                await self.round()
            except Exception:
                log.exception("NATS discovery: round failed unexpectedly")
            await asyncio.sleep(self._interval_s)

    async def _collect(self) -> list[bytes]:
        """One ``$SRV.INFO`` request; the replies within the window, bounded in count and size."""
        nc = self._nc
        loop = asyncio.get_running_loop()
        cap = self._max_services
        sub = await nc.subscribe(
            nc.new_inbox(),
            max_msgs=cap,
            pending_msgs_limit=cap,
            pending_bytes_limit=cap * (self._max_info_bytes + 1024),
        )
        replies: list[bytes] = []
        try:
            await nc.publish(INFO_SUBJECT, b"", reply=sub.subject)
            deadline = loop.time() + self._window_s
            while len(replies) < cap:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    msg = await sub.next_msg(timeout=left)
                except NatsError:  # the window closed (nats' TimeoutError), or the sub ended
                    break
                if not msg.data:
                    # The server's own "no responders" (a 503 status, no body): no service
                    # answered, which is no malformed reply.
                    continue
                if len(msg.data) > self._max_info_bytes:
                    self._note("?", f"an INFO reply over {self._max_info_bytes} bytes")
                    continue
                replies.append(msg.data)
        finally:
            with contextlib.suppress(NatsError):
                await sub.unsubscribe()
        return replies

    def _parse(self, data: bytes) -> list[Discovered]:
        """The routed endpoints of one INFO reply (nothing from a malformed one)."""
        try:
            info = _decoder.decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            self._note("?", f"a malformed INFO reply ({exc})")
            return []
        if not _NAME_RE.fullmatch(info.name):
            self._note("?", "a service name outside [A-Za-z0-9_-]{1,64}")
            return []
        endpoints = info.endpoints or []
        if len(endpoints) > self._max_endpoints:
            self._note(info.name, f"more than {self._max_endpoints} endpoints")
        timeout_ms, cap = self._call
        found = []
        for ep in endpoints[: self._max_endpoints]:
            value = (ep.metadata or {}).get(ACTIONS_KEY)
            if value is None:
                continue
            if not _NAME_RE.fullmatch(ep.name) or not is_nats_subject(ep.subject):
                self._note(info.name, f"endpoint {ep.name[:64]!r}: not a literal subject")
                continue
            patterns = parse_actions(value, self._max_actions)
            if patterns:
                name = f"nats:{info.name}.{ep.name}"
                found.append(Discovered(name, ep.subject, patterns, "nats", timeout_ms, cap))
        return found

    def _note(self, service: str, reason: str) -> None:
        key = (service, reason)
        if key in self._logged:
            return
        if len(self._logged) >= _MAX_LOGGED:
            self._logged.clear()
        self._logged.add(key)
        log.warning("NATS discovery: service %s: skipped %s", service, reason)
