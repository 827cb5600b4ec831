"""Who may join which channel: built-in rules, then the ``[[channels]]`` rules.

Built-in rules, checked first (design §2, §3):

1. hub ``public`` (and its views): everyone signed in, and anonymous
   principals when anonymous access is enabled;
2. an anonymous principal may use nothing else;
3. hub ``system``: every signed-in principal;
4. any other hub is an organization id: only principals with that
   organization in :meth:`~wsgate.auth.principal.Principal.all_orgs`;
5. in any hub, views ``team/<id>`` and ``team/<id>/...`` only for members of
   team ``<id>`` (``principal.teams``).

Then every ``[[channels]]`` rule whose ``match`` glob matches the address
(``*`` matches any run of characters, ``:`` and ``/`` included; anything else
matches itself; the whole address must match) must be satisfied: for each of
its non-empty lists (``roles``, ``teams``, ``orgs``) the principal holds at
least one entry; a rule with ``token = true`` also needs a channel token
(:mod:`wsgate.auth.channel_tokens`). Rules only ever take rights away; none
grants what the built-in rules refuse.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from wsgate.auth.principal import Principal
from wsgate.config import ChannelRule
from wsgate.protocol.address import PUBLIC_HUB, SYSTEM_HUB, Address, is_hub_id
from wsgate.typing import HubId

__all__ = ["ChannelPolicy", "compile_glob"]

_TEAM_PREFIX: Final = "team/"
_CACHE_SIZE: Final = 4096


def compile_glob(pattern: str) -> re.Pattern[str]:
    """Compile a channel glob: ``*`` is any run of characters, the rest literal."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


@dataclass(frozen=True, slots=True)
class _Rule:
    regex: re.Pattern[str]
    roles: frozenset[str]
    teams: frozenset[str]
    orgs: frozenset[str]
    token: bool

    def satisfied_by(self, principal: Principal) -> bool:
        if self.roles and self.roles.isdisjoint(principal.roles):
            return False
        if self.teams and self.teams.isdisjoint(principal.teams):
            return False
        return not (self.orgs and self.orgs.isdisjoint(principal.all_orgs()))


class ChannelPolicy:
    """The channel authorization policy (see the module docstring).

    Implements :class:`wsgate.core.gateway.Authorizer`. Immutable after
    construction and safe to share between threads. :meth:`allows` costs the
    built-in checks plus the rules matching the address; which rules match an
    address is cached (bounded), so repeated joins do not re-run the globs.
    """

    def __init__(self, rules: Sequence[ChannelRule], allow_anonymous: bool) -> None:
        self.allow_anonymous = allow_anonymous
        """Whether anonymous principals may use the ``public`` hub."""
        self._rules: tuple[_Rule, ...] = tuple(
            _Rule(
                compile_glob(rule.match),
                frozenset(rule.roles),
                frozenset(rule.teams),
                frozenset(rule.orgs),
                rule.token,
            )
            for rule in rules
        )
        self._matching = functools.lru_cache(maxsize=_CACHE_SIZE)(self._match)
        self._hubs = functools.lru_cache(maxsize=_CACHE_SIZE)(self._hubs_uncached)
        self.any_token = any(rule.token for rule in self._rules)
        """Whether some rule has ``token = true``."""

    def _match(self, address: str) -> tuple[_Rule, ...]:
        return tuple(rule for rule in self._rules if rule.regex.fullmatch(address))

    def allows(self, principal: Principal, address: Address) -> bool:
        """Tell whether ``principal`` may join (or send to) ``address``.

        Guarantees: an anonymous principal is refused everything outside hub
        ``public``, and ``public`` too unless anonymous access is enabled; a
        principal without organization ``X`` is refused every address in hub
        ``X``; ``<hub>:team/<id>[/...]`` needs team ``<id>``.
        """
        if not self._builtin(principal, address):
            return False
        if not self._rules:
            return True  # nothing to match: keep the cache empty
        return all(rule.satisfied_by(principal) for rule in self._matching(address.value))

    def requires_token(self, address: Address) -> bool:
        """Whether joining ``address`` needs a channel token (a matching rule has ``token``)."""
        if not self.any_token:
            return False
        return any(rule.token for rule in self._matching(address.value))

    def _builtin(self, principal: Principal, address: Address) -> bool:
        hub = address.hub
        if principal.anonymous:
            if hub != PUBLIC_HUB or not self.allow_anonymous:
                return False
        elif hub not in (PUBLIC_HUB, SYSTEM_HUB) and hub not in principal.all_orgs():
            return False
        view = address.view
        if view is not None and view.startswith(_TEAM_PREFIX):
            team = view[len(_TEAM_PREFIX) :].partition("/")[0]
            if not team or team not in principal.teams:
                return False
        return True

    def hubs_for(self, principal: Principal) -> list[HubId]:
        """The hubs a connection of ``principal`` joins on connect, in order.

        ``system``, then each of the principal's organizations (active one
        first), then ``public``; only those :meth:`allows` admits, so the
        result is consistent with it. Empty for an anonymous principal when
        anonymous access is off.

        Cached by what decides it (anonymous or not, organizations, teams,
        roles; bounded): a reconnect storm of one organization's users runs
        the checks once, where they were 7 % of a signed-in handshake
        (bench/storm.py profile).
        """
        key = (principal.anonymous, principal.org, principal.orgs, principal.teams, principal.roles)
        return list(self._hubs(key))

    def _hubs_uncached(
        self, key: tuple[bool, str, tuple[str, ...], tuple[str, ...], tuple[str, ...]]
    ) -> tuple[HubId, ...]:
        anonymous, org, orgs, teams, roles = key
        # A stand-in with exactly the fields :meth:`allows` reads for a hub.
        principal = Principal(
            sub="" if anonymous else "-", org=org, orgs=orgs, teams=teams, roles=roles
        )
        candidates: list[HubId] = []
        if not principal.anonymous:
            candidates.append(SYSTEM_HUB)
            for org in principal.all_orgs():
                if is_hub_id(org) and org not in (SYSTEM_HUB, PUBLIC_HUB):
                    candidates.append(HubId(org))
        candidates.append(PUBLIC_HUB)
        seen: set[str] = set()
        hubs: list[HubId] = []
        for hub in candidates:
            if hub not in seen and self.allows(principal, Address(hub, None)):
                seen.add(hub)
                hubs.append(hub)
        return tuple(hubs)
