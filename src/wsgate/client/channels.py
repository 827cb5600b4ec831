"""The channels a client wants to be in, with the last offset seen in each.

An entry lives from ``join()`` / ``navigate()`` until ``leave()``, a refusal,
the gateway's own LEFT, or the client's close; it survives reconnects, and its
``offset`` is the ``since`` of the rejoin. :meth:`ChannelTable.seen` also
drops duplicates: an action whose offset is not above the last one seen in its
channel was delivered already.

Bound: at most ``max_channels`` entries (default 64, the gateway's
``server.max_channels_per_connection``); :meth:`ChannelTable.entry` raises
``TOO_LARGE`` past it, as the gateway would. Each entry holds at most one join
future, shared by every ``join()`` of the channel while it is pending.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from wsgate.client.errors import ClientError
from wsgate.protocol.codes import ErrorCode

__all__ = ["ChannelEntry", "ChannelTable", "hub_of"]


def hub_of(channel: str) -> str:
    """The hub part of a channel address (``acme:orders/42`` → ``acme``)."""
    return channel.partition(":")[0]


@dataclass(slots=True, eq=False)
class ChannelEntry:
    """A channel this client is in, or will (re)join."""

    channel: str
    offset: int | None = None
    """Last ``meta.offset`` seen: the next rejoin's ``since``."""
    view: bool = False
    """Joined by NAVIGATE: the current view of its hub."""
    server_view: bool = False
    """NAVIGATE'd on the current socket, so the gateway leaves it on the next NAVIGATE."""
    in_flight: bool = False
    """A JOIN is waiting for its answer."""
    joined: asyncio.Future[dict[str, Any]] | None = None
    """Resolved with the next JOINED of the channel; what pending ``join()`` calls await."""

    def waiter(self) -> asyncio.Future[dict[str, Any]]:
        """The future of the next JOINED (created when missing)."""
        if self.joined is None or self.joined.done():
            self.joined = asyncio.get_running_loop().create_future()
        return self.joined

    def settle(self, outcome: dict[str, Any] | ClientError) -> None:
        """Resolve or fail the pending ``join()`` calls, if any."""
        future, self.joined = self.joined, None
        if future is None or future.done():
            return
        if isinstance(outcome, ClientError):
            future.set_exception(outcome)
            # Retrieved here so a join nobody awaits does not log "never retrieved".
            future.exception()
        else:
            future.set_result(outcome)


class ChannelTable:
    """Entries by channel address, in join order."""

    def __init__(self, max_channels: int = 64) -> None:
        self._max = max_channels
        self._entries: dict[str, ChannelEntry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[ChannelEntry]:
        return iter(list(self._entries.values()))

    def names(self) -> list[str]:
        """The channel addresses, in join order."""
        return list(self._entries)

    def get(self, channel: str) -> ChannelEntry | None:
        """The entry of ``channel``, if tracked."""
        return self._entries.get(channel)

    def entry(self, channel: str) -> ChannelEntry:
        """The entry of ``channel``, created when missing (``TOO_LARGE`` past the cap)."""
        entry = self._entries.get(channel)
        if entry is None:
            if len(self._entries) >= self._max:
                raise ClientError(ErrorCode.TOO_LARGE, f"more than {self._max} channels")
            entry = self._entries[channel] = ChannelEntry(channel)
        return entry

    def pop(self, channel: str) -> ChannelEntry | None:
        """Stop tracking ``channel``; its entry, if it was tracked."""
        return self._entries.pop(channel, None)

    def clear(self) -> None:
        """Forget every channel."""
        self._entries.clear()

    def view_in(self, hub: str) -> ChannelEntry | None:
        """The current NAVIGATE view in ``hub``, if any."""
        for entry in self._entries.values():
            if entry.view and hub_of(entry.channel) == hub:
                return entry
        return None

    def seen(self, channel: str, offset: int) -> bool:
        """Record ``offset`` in ``channel``; False for a duplicate (not above the last seen)."""
        entry = self._entries.get(channel)
        if entry is None:
            return True
        if entry.offset is not None and offset <= entry.offset:
            return False
        entry.offset = offset
        return True
