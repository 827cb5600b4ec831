"""Per-namespace channel options: the ``[[namespaces]]`` rules, resolved per address.

A channel's :class:`ChannelOptions` say how big its history is and how long
it lives, whether a JOIN's ``since`` replays, whether presence is shown and
past how many members it is count-only, whether clients may relay into it,
how many members it takes and whether (and by what key) it is conflated.

Of the ``[[namespaces]]`` rules whose ``match`` glob matches an address
(the ``[[channels]]`` syntax: ``*`` is any run of characters) only the
**most specific** applies:

1. fewest ``*``;
2. then the longest literal text before the first ``*`` (a rule without
   ``*`` counts its whole text);
3. then the rule listed first.

An option that rule leaves unset (or no rule matching at all) takes the
global default: ``[history] size`` / ``ttl_s``, ``[presence] max_members``,
and the :class:`~wsgate.config.NamespaceRule` defaults for the rest.

:meth:`Namespaces.resolve` runs the globs; the pool calls it once, when a
channel is created, and keeps the result on the channel, so the hot paths
read a field. Resolutions are cached (bounded by ``_CACHE_SIZE`` addresses,
least recently used dropped first); with no rule every address shares one
:class:`ChannelOptions` and nothing is cached.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from wsgate.auth.policy import compile_glob
from wsgate.config import HistoryConfig, NamespaceRule, PresenceConfig

__all__ = ["ChannelOptions", "Namespaces", "specificity"]

_CACHE_SIZE: Final = 4096


@dataclass(frozen=True, slots=True)
class ChannelOptions:
    """The effective options of one channel (see the module docstring)."""

    namespace: str | None
    """The ``match`` of the rule that applied; ``None``: the global defaults."""
    history_size: int
    history_ttl_s: int
    recovery: bool
    presence: bool
    presence_max_members: int
    relay: bool
    max_members: int
    """0: no cap."""
    conflate_ms: int
    """0: not conflated."""
    conflate_key: tuple[str, ...] | None
    """The path below ``payload`` (``("symbol",)``); ``None``: one key per channel."""

    def describe(self) -> dict[str, object]:
        """The options as the internal API shows them (``conflate_key`` dotted)."""
        key = None if self.conflate_key is None else ".".join(("payload", *self.conflate_key))
        return {
            "namespace": self.namespace,
            "historySize": self.history_size,
            "historyTtlS": self.history_ttl_s,
            "recovery": self.recovery,
            "presence": self.presence,
            "presenceMaxMembers": self.presence_max_members,
            "relay": self.relay,
            "maxMembers": self.max_members,
            "conflateMs": self.conflate_ms,
            "conflateKey": key,
        }


def specificity(pattern: str) -> tuple[int, int]:
    """Sort key of a rule, the most specific first: fewest ``*``, longest literal prefix."""
    return (pattern.count("*"), -len(pattern.partition("*")[0]))


class Namespaces:
    """The ``[[namespaces]]`` table. Immutable after construction."""

    def __init__(
        self,
        rules: Sequence[NamespaceRule] = (),
        history: HistoryConfig | None = None,
        presence: PresenceConfig | None = None,
    ) -> None:
        history = history or HistoryConfig()
        presence = presence or PresenceConfig()
        self._history = history
        self._presence = presence
        self.default = self._options(None)
        """The options of an address no rule matches."""
        ordered = sorted(enumerate(rules), key=lambda item: (specificity(item[1].match), item[0]))
        self._rules = tuple((compile_glob(rule.match), self._options(rule)) for _, rule in ordered)
        """Each rule's glob and options, most specific first: the first that matches wins."""
        self._resolve = functools.lru_cache(maxsize=_CACHE_SIZE)(self._lookup)

    def _options(self, rule: NamespaceRule | None) -> ChannelOptions:
        history, presence = self._history, self._presence
        if rule is None:
            rule = NamespaceRule(match="*")
            name = None
        else:
            name = rule.match
        key = rule.conflate_key
        return ChannelOptions(
            namespace=name,
            history_size=history.size if rule.history_size is None else rule.history_size,
            history_ttl_s=history.ttl_s if rule.history_ttl_s is None else rule.history_ttl_s,
            recovery=rule.recovery,
            presence=rule.presence,
            presence_max_members=(
                presence.max_members
                if rule.presence_max_members is None
                else rule.presence_max_members
            ),
            relay=rule.relay,
            max_members=rule.max_members,
            conflate_ms=rule.conflate_ms,
            conflate_key=None if key is None else tuple(key.split(".")[1:]),
        )

    def _lookup(self, address: str) -> ChannelOptions:
        for regex, options in self._rules:
            if regex.fullmatch(address):
                return options
        return self.default

    def resolve(self, address: str) -> ChannelOptions:
        """The options of the channel ``address`` (cost: the globs, once per cached address)."""
        if not self._rules:
            return self.default
        return self._resolve(address)

    def history_of(self, address: str) -> tuple[int, int]:
        """``(size, ttl_s)`` of ``address``'s history: what the history store asks."""
        options = self.resolve(address)
        return options.history_size, options.history_ttl_s
