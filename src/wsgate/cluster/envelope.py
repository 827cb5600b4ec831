"""What crosses the broker between nodes, and the subjects it travels on.

An :class:`Envelope` carries one delivery (or a control operation) in the
fields the receiving node needs to build the client frame itself: the
payload stays JSON text end to end, never decoded. Encoded as a msgpack
array: compact, one pass.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

__all__ = [
    "CHANNEL",
    "CONNECTION",
    "CONTROL",
    "HUB",
    "PRESENCE",
    "USER",
    "Envelope",
    "decode",
    "encode",
    "json_bytes",
    "subject",
]

CHANNEL: Final = "chan"
HUB: Final = "hub"
USER: Final = "user"
CONNECTION: Final = "conn"
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
