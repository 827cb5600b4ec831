"""One delivery: an action for the members of one target, as one value.

A :class:`Delivery` is what the fan-out (:mod:`wsgate.core.fanout`), the
cluster envelope (:mod:`wsgate.cluster.envelope`) and the publish glue
(:mod:`wsgate.delivery`) hand each other: the target's :class:`TargetKind`
and id, the action (``type``, ``payload``, ``error``), who sent it
(``origin``) and the one connection it skips (``exclude``).

There is one vocabulary of target kinds, :class:`TargetKind`, whose values
are the public API's names (``connection``, ``user``, ``channel``, ``hub``,
as in :attr:`wsgate.routing.results.Target.kind`). The broker's shorter
names are the cluster envelope's table from these.

A Delivery is frozen and checked on construction: a ``kind`` that is not a
:class:`TargetKind` raises :class:`TypeError`, so an unknown kind never
reaches a dispatch table.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

from wsgate.protocol.envelope import From
from wsgate.typing import ConnectionId

__all__ = ["Delivery", "TargetKind"]


class TargetKind(enum.Enum):
    """Whom a delivery is for; the value is the public API's name of the kind."""

    CONNECTION = "connection"
    """One connection, by id (on its node, in a cluster)."""
    USER = "user"
    """Every connection (tab) of a user, on every node."""
    CHANNEL = "channel"
    """The members of a view channel ``<hub>:<view>``; a bare hub id means the hub."""
    HUB = "hub"
    """Every connection of a hub, on every node."""


class Delivery(msgspec.Struct, frozen=True):
    """An action for the members of ``target`` (of kind ``kind``), except ``exclude``.

    ``payload`` is anything :func:`wsgate.protocol.envelope.encode` takes,
    ``msgspec.Raw`` JSON text included (kept as is, never decoded);
    ``origin`` names the sending client (``meta.from``), ``None`` for a
    service's publish. Built once per action, never per member.
    """

    kind: TargetKind
    target: str
    type: str
    payload: Any = None
    error: bool = False
    origin: From | None = None
    exclude: ConnectionId | None = None
    ack: str | None = None
    """The delivery id of an acknowledged delivery (a connection's or a user's on one
    node: :mod:`wsgate.core.acks`); ``None`` for every other."""

    def __post_init__(self) -> None:
        if self.kind.__class__ is not TargetKind:
            raise TypeError(f"a delivery's kind is a TargetKind, not {self.kind!r}")
