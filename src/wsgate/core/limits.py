"""Rate limits and connection caps: what one client, user or address may cost.

Rates use GCRA (the generic cell rate algorithm: one timestamp per key, no
timers) over a :class:`~wsgate.backends.base.RateLimitStore`:

- the **default** rate covers every inbound message of a connection and is
  checked before the message is even decoded, so junk floods are limited too;
- ``[[rate_limits]]`` rules match an action type (built-ins included, most
  specific pattern wins) and count per ``connection``, ``user`` (every tab of
  a user together; anonymous connections count per address) or ``ip``.

A refusal is ``RATE_LIMITED`` with ``retryAfterMs``. A connection refused
more than ``abuse_refusals`` times within ``abuse_window_s`` is closed with
4429. Connection caps (per node, per user, per address) and a handshake rate
per address are checked when a connection opens; a refused one gets an
``ERROR`` with ``retryAfterMs`` and close 4429 before any ``WELCOME``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, Protocol

from wsgate.auth.principal import Principal
from wsgate.backends.base import RateLimitStore
from wsgate.config import LimitsConfig, RateLimitRule
from wsgate.protocol.patterns import PatternTable
from wsgate.typing import UserId

if TYPE_CHECKING:
    from wsgate.core.connection import Connection
    from wsgate.core.pool import Pool

__all__ = ["Limiter", "Rate", "SharedCheck", "parse_rate"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_RATE_RE = re.compile(r"(\d+)/(\d*)(ms|s|m|h)")


class Rate(NamedTuple):
    """A GCRA rate: one unit every ``interval`` s, ``tolerance`` s of burst."""

    interval: float
    tolerance: float


def parse_rate(text: str, burst: int) -> Rate | None:
    """``"10/1s"`` with ``burst`` to a :class:`Rate`; ``None`` when disabled."""
    m = _RATE_RE.fullmatch(text)
    if m is None or int(m.group(1)) == 0:
        return None
    period = (int(m.group(2)) if m.group(2) else 1) * _UNITS[m.group(3)]
    interval = period / int(m.group(1))
    return Rate(interval, interval * (max(burst, 1) - 1))


class SharedCheck(Protocol):
    """Cluster-wide limits (:mod:`wsgate.cluster`): answers later, through ``done``."""

    def acquire(self, key: str, rate: Rate, done: Callable[[float], None]) -> None:
        """Charge ``key`` on the shared store; call ``done(wait)`` (0.0: allowed)."""
        ...


class _Rule(NamedTuple):
    pattern: str
    per: str
    rate: Rate


class Limiter:
    """Checks actions and new connections against the configured limits."""

    def __init__(
        self,
        limits: LimitsConfig,
        rules: list[RateLimitRule],
        store: RateLimitStore,
        clock: Callable[[], float],
    ) -> None:
        self._limits = limits
        self._store = store
        self._clock = clock
        self._default = parse_rate(limits.default_rate, limits.default_burst)
        self._handshake = parse_rate(limits.handshake_rate_per_ip, limits.handshake_burst_per_ip)
        table: PatternTable[_Rule] = PatternTable()
        for rule in rules:
            rate = parse_rate(rule.rate, rule.burst)
            if rate is not None:
                table.add(rule.match, _Rule(rule.match, rule.per, rate))
        self._rules = table
        self.by_type = len(table) > 0
        """Some ``[[rate_limits]]`` rule exists (else :meth:`action` charges nothing: the
        dispatcher does not call it; the rules are fixed for the limiter's life)."""
        self._strikes: dict[str, tuple[float, int]] = {}
        """Connection id → (window start, refusals in it), only for refused ones."""
        self.shared: SharedCheck | None = None
        """Set in a cluster: ``user`` and ``ip`` rules are charged cluster-wide."""

    # Actions -------------------------------------------------------------------

    def message(self, conn: Connection) -> float:
        """Charge one inbound message to the default rate; 0.0 or seconds to wait."""
        rate = self._default
        if rate is None:
            return 0.0
        return self._store.acquire(f"c|{conn.id}", rate.interval, rate.tolerance, self._clock())

    def _key(self, conn: Connection, rule: _Rule) -> str:
        principal = conn.principal
        if rule.per == "user" and not principal.anonymous:
            return f"u|{principal.sub}|{rule.pattern}"
        if rule.per == "connection":
            return f"c|{conn.id}|{rule.pattern}"
        return f"i|{conn.peer}|{rule.pattern}"

    def action(self, conn: Connection, action_type: str) -> float:
        """Charge ``action_type`` to its rule, if any; 0.0 or seconds to wait."""
        rule = self._rules.lookup(action_type)
        if rule is None:
            return 0.0
        key = self._key(conn, rule)
        return self._store.acquire(key, rule.rate.interval, rule.rate.tolerance, self._clock())

    def shared_rule(self, conn: Connection, action_type: str) -> tuple[str, Rate] | None:
        """The key and rate to charge cluster-wide, when ``action_type``'s rule spans nodes.

        ``connection`` rules stay local (a connection lives on one node).
        """
        if self.shared is None:
            return None
        rule = self._rules.lookup(action_type)
        if rule is None or rule.per == "connection":
            return None
        return self._key(conn, rule), rule.rate

    def strike(self, conn: Connection) -> bool:
        """Record a refusal of ``conn``; ``True`` when it is now abuse (close 4429)."""
        limit = self._limits.abuse_refusals
        if limit == 0:
            return False
        now = self._clock()
        start, count = self._strikes.get(conn.id, (now, 0))
        if now - start > self._limits.abuse_window_s:
            start, count = now, 0
        count += 1
        self._strikes[conn.id] = (start, count)
        return count > limit

    def forget(self, conn: Connection) -> None:
        """The connection is gone."""
        self._strikes.pop(conn.id, None)

    # Connections ---------------------------------------------------------------

    def connect(self, principal: Principal, ip: str, pool: Pool) -> tuple[str, float] | None:
        """Refuse a new connection? Returns ``(reason, retry_after_s)`` or ``None``."""
        limits = self._limits
        if limits.max_connections and len(pool.connections) >= limits.max_connections:
            return "this node is full", 5.0
        if self._handshake is not None:
            rate = self._handshake
            wait = self._store.acquire(f"h|{ip}", rate.interval, rate.tolerance, self._clock())
            if wait > 0:
                return "too many connection attempts from this address", wait
        if limits.max_connections_per_ip and pool.ips.get(ip, 0) >= limits.max_connections_per_ip:
            return "too many connections from this address", 5.0
        return self.connect_user(principal, pool)

    def connect_user(self, principal: Principal, pool: Pool) -> tuple[str, float] | None:
        """The per-user part of :meth:`connect`, alone: for a principal known only
        after the handshake (a connection token). ``None`` for anonymous."""
        limits = self._limits
        if limits.max_connections_per_user and not principal.anonymous:
            tabs = pool.users.get(UserId(principal.sub))
            if tabs is not None and len(tabs) >= limits.max_connections_per_user:
                return "too many connections for this user", 5.0
        return None


def retry_ms(seconds: float) -> int:
    """Seconds to wait as whole milliseconds, at least 1."""
    return max(1, math.ceil(seconds * 1000))
