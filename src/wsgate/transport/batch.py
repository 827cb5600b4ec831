"""A channel's (or a hub's) deliveries of one loop iteration, written to each member at once.

Without it a channel fan-out calls every member's ``send`` once per action:
one Python call per delivery, most of what a relayed delivery costs
(bench/README.md, "One joined write per member for a channel's burst"). With
it the fan-out appends the action to one :class:`ChannelBatch` and returns;
at the end of the iteration (:meth:`ChannelBatch.write`) the batch frames its
actions once, joins them once, and hands that one ``bytes`` object to each
member's transport: one call per member per iteration, not per delivery.

What every member would have got is unchanged, because a batch only ever
holds the *latest* deliveries of its members, in order, and only while
nothing else happens to them:

- **one batch at a time** per :class:`~wsgate.transport.outbound.Flusher`: a
  delivery to another channel or hub, any other frame queued for any
  connection of the listener (a reply, a user's delivery, a pong, a close),
  and any change of a channel's or hub's membership first *settles* the open batch
  (:meth:`ChannelBatch.settle`: each of its actions handed to each member's
  ``send``, exactly as the fan-out did without a batch), so frames keep the
  order in which they were sent, on every connection;
- **the members** are those of the channel when the batch opened (a copy of
  its ``sends``): a join or leave settles the batch first, so a member that
  joins never gets an action sent before its JOINED, and one that left gets
  nothing sent after;
- **per member** at the write: a member that is not open gets nothing (as its
  ``send`` would have done); one that a batched action skips (the sender of a
  relay) or one that still has frames of its own queued from before the batch
  opened gets the actions one by one through its ``send`` (the path above, in
  order after its own frames); every other member takes the joined frames
  (``take_shared``), with the same high-water check as a flush. A member with
  compression takes them compressed, joined once per shared compressor
  (:meth:`ChannelBatch.compressed`: the compressor keeps no context between
  messages, so its frames serve every member with its window size).

A hub's deliveries (an organization's) go the same way: its members are the
hub's connections, copied as their sinks' ``send`` when the batch opens, and a
connection opening or closing settles the batch as a join or leave does.

Bounds: a batch holds at most :data:`BATCH_FRAMES` actions and about
:data:`BATCH_BYTES` bytes (the flush's own join bounds; past either it is
written at once, within the iteration); its joined frames are
one transient copy shared by every member, freed when the last transport has
written it. The copy of the member map is freed with the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Protocol

from wsgate.transport.base import Sends, Sink
from wsgate.transport.deflate import SharedDeflater
from wsgate.transport.framing import encode_text_frame
from wsgate.typing import ConnectionId

__all__ = ["BATCH_BYTES", "BATCH_FRAMES", "ChannelBatch", "Member"]


class Member(Protocol):
    """A hub's member as the batch sees it: a connection with a sink."""

    @property
    def sink(self) -> Sink: ...


BATCH_FRAMES: Final = 64
"""Actions a batch holds before it is written early (a bounded join, as a flush's)."""

BATCH_BYTES: Final = 64 * 1024
"""Payload bytes a batch holds before it is written early."""


class ChannelBatch:
    """One channel's (or hub's) actions of this iteration, not yet handed to its members."""

    __slots__ = ("_compressed", "key", "members", "payloads", "size", "skips")

    def __init__(self, key: object, members: Sends) -> None:
        self.key = key
        """The target's own member map (compared by identity: which channel or hub)."""
        self.members = members
        """A copy of the members when the batch opened, each as its ``send``. Any change
        settles the batch first, so it equals the live map; it is a copy so that the
        write's walk over it can never meet a map changed under it (one dict copy per
        batch, not per delivery)."""
        self.payloads: list[bytes] = []
        """The actions, encoded, in the order they were sent."""
        self.skips: list[ConnectionId | None] = []
        """Per action, the member it skips (a relay's sender), or ``None``."""
        self.size = 0
        """Payload bytes held."""
        self._compressed: dict[SharedDeflater, tuple[bytes, int]] | None = None
        """Per compressor (at most one per window size, 7), the joined frames and their size."""

    def add(self, data: bytes, exclude: ConnectionId | None) -> bool:
        """Hold one action; ``True`` when the batch is full (write it now)."""
        self.payloads.append(data)
        self.skips.append(exclude)
        self.size += len(data)
        return len(self.payloads) >= BATCH_FRAMES or self.size >= BATCH_BYTES

    def settle(self) -> None:
        """Hand every action to every member's ``send``, in order (the fan-out without a batch)."""
        members = self.members
        for data, skip in zip(self.payloads, self.skips, strict=True):
            skipped = None if skip is None else members.get(skip)
            for send in members.values():
                if send is not skipped:
                    send(data)

    def write(self) -> None:
        """Give each member the joined frames, or (where it must) the actions one by one."""
        payloads = self.payloads
        if len(payloads) == 1:
            joined = encode_text_frame(payloads[0])
        else:
            joined = b"".join([encode_text_frame(p) for p in payloads])
        size = len(joined)
        skipped = {s for s in self.skips if s is not None}
        rest: list[tuple[ConnectionId, Callable[[bytes], None]]] = []
        for cid, send in self.members.items():
            take = getattr(getattr(send, "__self__", None), "take_shared", None)
            if take is None or cid in skipped or not take(joined, size, self):
                rest.append((cid, send))
        if rest:
            for data, skip in zip(payloads, self.skips, strict=True):
                for cid, send in rest:
                    if cid != skip:
                        send(data)

    def compressed(self, deflater: SharedDeflater) -> tuple[bytes, int]:
        """The actions' frames compressed by ``deflater``, joined (made once per batch)."""
        done = self._compressed
        if done is None:
            done = self._compressed = {}
        got = done.get(deflater)
        if got is None:
            joined = b"".join([deflater.text_frame(p) for p in self.payloads])
            got = done[deflater] = (joined, len(joined))
        return got
