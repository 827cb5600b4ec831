"""What crosses the broker between nodes, and the subjects it travels on.

An :class:`Envelope` carries one :class:`~wsgate.core.delivery.Delivery`
(:meth:`Envelope.from_delivery`, :meth:`Envelope.to_delivery`) or a control
operation, in the fields the receiving node needs to build the client frame
itself: the payload stays JSON text end to end, never decoded. Encoded as a
msgpack array: compact, one pass. The broker's names of the delivery kinds
are one table, :data:`KIND_NAMES`.
"""

from __future__ import annotations

import time
from typing import Any, Final

import msgspec

from wsgate.core.delivery import Delivery, TargetKind
from wsgate.protocol.envelope import From
from wsgate.typing import ConnectionId

__all__ = [
    "CHANNEL",
    "CONNECTION",
    "CONTROL",
    "HUB",
    "KINDS",
    "KIND_NAMES",
    "PRESENCE",
    "USER",
    "Envelope",
    "decode",
    "encode",
    "json_bytes",
    "subject",
]

KIND_NAMES: Final[dict[TargetKind, str]] = {
    TargetKind.CHANNEL: "chan",
    TargetKind.HUB: "hub",
    TargetKind.USER: "user",
    TargetKind.CONNECTION: "conn",
}
"""The broker's name of each delivery kind: the envelope's ``kind`` and the
first part of the target's subject. Wire format between nodes: never renamed."""

KINDS: Final[dict[str, TargetKind]] = {name: kind for kind, name in KIND_NAMES.items()}
"""The delivery kind of an envelope's ``kind`` (absent: not a delivery)."""

CHANNEL: Final = KIND_NAMES[TargetKind.CHANNEL]
HUB: Final = KIND_NAMES[TargetKind.HUB]
USER: Final = KIND_NAMES[TargetKind.USER]
CONNECTION: Final = KIND_NAMES[TargetKind.CONNECTION]
PRESENCE: Final = "pres"
CONTROL: Final = "ctl"


class Envelope(msgspec.Struct, array_like=True):
    kind: str
    target: str
    origin: str
    """The publishing node's id."""
    type: str = ""
    payload: bytes = b"null"
    """The action's payload as JSON text (raw msgpack bytes hold it as is)."""
    from_user: str = ""
    from_conn: str = ""
    exclude: str = ""
    error: bool = False
    extra: bytes = b"null"
    """Presence diffs and control operations, as JSON text."""
    sent: float = 0.0
    """Wall-clock time (s) the publishing node encoded a delivery (0: not a delivery, or
    an older node): the receiver's broker lag. Last, so older nodes ignore it."""
    ack: str = ""
    """The delivery id of an acknowledged delivery (:mod:`wsgate.cluster.acks`); ``""``:
    none. Stored with a user's inbox stream, so a node that loads it knows the id."""

    @classmethod
    def from_delivery(cls, delivery: Delivery, node: str) -> Envelope:
        """``delivery`` as sent by ``node``: its kind named by :data:`KIND_NAMES`,
        its payload as JSON text."""
        origin = delivery.origin
        return cls(
            KIND_NAMES[delivery.kind],
            delivery.target,
            node,
            delivery.type,
            json_bytes(delivery.payload),
            origin.userId if origin else "",
            origin.connectionId if origin else "",
            delivery.exclude or "",
            delivery.error,
            sent=time.time(),
            ack=delivery.ack or "",
        )

    def to_delivery(self) -> Delivery | None:
        """The delivery this envelope carries (the payload as ``msgspec.Raw``, never
        decoded), or ``None`` for an envelope of no delivery kind (presence, control)."""
        kind = KINDS.get(self.kind)
        if kind is None:
            return None
        return Delivery(
            kind,
            self.target,
            self.type,
            msgspec.Raw(self.payload),
            self.error,
            From(self.from_user, self.from_conn) if self.from_conn else None,
            ConnectionId(self.exclude) if self.exclude else None,
            self.ack or None,
        )


_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(Envelope)


def json_bytes(value: Any) -> bytes:
    """``value`` as JSON text (raw JSON kept as is)."""
    if isinstance(value, msgspec.Raw):
        return bytes(value)
    return msgspec.json.encode(value)


def encode(envelope: Envelope) -> bytes:
    return _encoder.encode(envelope)


def decode(data: bytes) -> Envelope | None:
    """The envelope, or ``None`` for bytes that are not one (logged by the caller)."""
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError:
        return None


def subject(kind: str, target: str) -> str:
    """The logical subject of a target: ``chan.acme:orders/42``, ``node.n1``."""
    return f"{kind}.{target}"
