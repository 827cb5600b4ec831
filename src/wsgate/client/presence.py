"""Presence bookkeeping: who is in each joined channel.

Kept from ``@@wsgate/JOINED`` (a full list, reset at every join and rejoin)
and ``@@wsgate/PRESENCE`` (diffs, ``left`` before ``joined``, by
``connectionId``, so a repeated diff is harmless), like
``clients/js/presence.js``. One user with two tabs is two members.

Bounds: one entry per channel the client tracks (the client drops it when it
forgets the channel, and clears the book on close); at most ``max_members``
members per channel — past that, or when the gateway sends counts only, the
list is dropped, ``known`` is false and only :meth:`PresenceBook.count` is
meaningful.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Member", "PresenceBook"]


@dataclass(frozen=True, slots=True)
class Member:
    """One connection in a channel."""

    user_id: str
    connection_id: str
    name: str | None = None

    @classmethod
    def parse(cls, data: object) -> Member | None:
        """A member from its wire form ``{userId, connectionId, name?}``; None when malformed."""
        if not isinstance(data, dict):
            return None
        user, conn, name = data.get("userId"), data.get("connectionId"), data.get("name")
        if not isinstance(user, str) or not isinstance(conn, str):
            return None
        return cls(user, conn, name if isinstance(name, str) else None)


@dataclass(slots=True)
class _Channel:
    members: dict[str, Member] = field(default_factory=dict)
    count: int = 0
    known: bool = True


def _parsed(items: object) -> Iterable[Member]:
    if not isinstance(items, list):
        return ()
    return (m for m in map(Member.parse, items) if m is not None)


class PresenceBook:
    """Members per channel, by connection id, in arrival order."""

    def __init__(self, max_members: int = 10_000) -> None:
        self._max = max_members
        self._channels: dict[str, _Channel] = {}

    def reset(self, channel: str, members: Any, count: Any) -> None:
        """Replace a channel's presence with a JOINED payload's ``members`` and ``count``."""
        entry = _Channel(known=isinstance(members, list))
        for m in _parsed(members):
            entry.members[m.connection_id] = m
        entry.count = count if isinstance(count, int) else len(entry.members)
        self._channels[channel] = entry
        self._cap(entry)

    def apply(self, channel: str, joined: Any, left: Any, count: Any) -> bool:
        """Apply a PRESENCE diff; False when ``channel`` is not tracked (diff ignored)."""
        entry = self._channels.get(channel)
        if entry is None:
            return False
        if entry.known:
            for m in _parsed(left):
                entry.members.pop(m.connection_id, None)
            for m in _parsed(joined):
                entry.members[m.connection_id] = m
        entry.count = count if isinstance(count, int) else len(entry.members)
        self._cap(entry)
        return True

    def drop(self, channel: str) -> None:
        """Forget a channel (left, or no longer joined)."""
        self._channels.pop(channel, None)

    def clear(self) -> None:
        """Forget every channel."""
        self._channels.clear()

    def members(self, channel: str) -> list[Member]:
        """The members of ``channel`` (empty when not tracked or counts only)."""
        entry = self._channels.get(channel)
        return list(entry.members.values()) if entry is not None else []

    def count(self, channel: str) -> int:
        """How many members ``channel`` has, as the gateway counts them."""
        entry = self._channels.get(channel)
        return entry.count if entry is not None else 0

    def known(self, channel: str) -> bool:
        """Whether :meth:`members` lists the channel's members (not counts only)."""
        entry = self._channels.get(channel)
        return entry is not None and entry.known

    def __len__(self) -> int:
        return len(self._channels)

    def _cap(self, entry: _Channel) -> None:
        if len(entry.members) > self._max:
            entry.members.clear()
            entry.known = False
