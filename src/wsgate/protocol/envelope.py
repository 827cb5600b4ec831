"""The action envelope (a Flux Standard Action) and its codec.

Inbound frames are decoded and validated in one msgspec pass into
:class:`Action`. The payload stays raw JSON (:class:`msgspec.Raw`): relaying or
forwarding an action never decodes and re-encodes what the gateway does not
need to read. Decoding never raises: it returns an :class:`Action` or a
:class:`DecodeFailure` value, which the core answers with ``@@wsgate/ERROR``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Final

import msgspec

from wsgate.protocol.codes import ErrorCode

__all__ = [
    "GATEWAY_PREFIX",
    "MAX_META_ID",
    "MAX_TYPE",
    "NULL",
    "Action",
    "DecodeFailure",
    "From",
    "Meta",
    "OutMeta",
    "Outbound",
    "decode_action",
    "encode",
    "json_depth",
    "reply_id",
    "valid_type",
]

MAX_TYPE: Final = 128
MAX_DEPTH: Final = 32
"""Default limit on JSON nesting (arrays and objects) in one action."""
MAX_META_ID: Final = 64
GATEWAY_PREFIX: Final = "@@wsgate/"
NULL: Final = msgspec.Raw(b"null")

_TYPE_PATTERN: Final = r"^[A-Za-z0-9_./:@$-]{1,128}$"
ActionType = Annotated[str, msgspec.Meta(pattern=_TYPE_PATTERN)]
MetaId = Annotated[str, msgspec.Meta(max_length=MAX_META_ID)]


class Meta(msgspec.Struct, omit_defaults=True):
    """What a client may put in ``meta``; other keys are ignored."""

    id: MetaId | None = None
    """Client correlation id; answers carry it as ``inReplyTo``."""
    channel: str | None = None
    """The channel the action concerns; must be joined."""
    echo: bool = False
    """Relay to the sender too (relays skip the sender unless asked)."""
    traceparent: str | None = None
    """W3C Trace Context of a routed call: passed to the service (a malformed one is replaced)."""


class Action(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """An inbound action, validated by :func:`decode_action`: ``type`` matches
    :data:`ActionType`'s pattern (checked there, see :class:`_Strict`)."""

    type: str
    payload: msgspec.Raw = NULL
    meta: Meta | None = None
    error: bool = False


class _Strict(Action):
    """:class:`Action` with its ``type`` pattern in the schema: the decoder that says
    what is wrong with a frame :func:`decode_action` refused (the first fault in the
    document's order, as one strict pass would)."""

    type: ActionType


class From(msgspec.Struct):
    """``meta.from`` on relayed actions: who sent it."""

    userId: str
    connectionId: str


class OutMeta(msgspec.Struct, omit_defaults=True):
    """``meta`` on what the gateway delivers."""

    channel: str | None = None
    offset: int | None = None
    inReplyTo: str | None = None
    from_: From | None = msgspec.field(default=None, name="from")
    ack: bool | None = None
    """``True`` on an action the client acknowledges with ``@@wsgate/ACK {offset}``."""


class Outbound(msgspec.Struct, omit_defaults=True):
    """An action the gateway sends; ``payload`` is raw JSON or any value."""

    type: str
    payload: Any = None
    meta: OutMeta | None = None
    error: bool = False


class DecodeFailure(msgspec.Struct, frozen=True):
    """Why a frame is not a valid action, and the ``meta.id`` to answer to."""

    code: ErrorCode
    message: str
    in_reply_to: str | None = None


class _LooseMeta(msgspec.Struct):
    id: Any = None


class _Loose(msgspec.Struct):
    meta: Any = None


_decoder: Final = msgspec.json.Decoder(Action)
_strict: Final = msgspec.json.Decoder(_Strict)
_type_ok: Final = re.compile(_TYPE_PATTERN).search
"""msgspec's own test of a pattern (``re.search``), called directly: msgspec looks the
method up by name and builds its arguments per string (bench/README.md, 2026-12-03)."""
_types: set[str] = set()
"""Action types that matched lately: a client sends a few types over and over."""
_TYPES_MAX: Final = 1024


def valid_type(type_: str) -> bool:
    """Tell whether ``type_`` matches :data:`ActionType`'s pattern, as msgspec tests it
    (``re.search``: a trailing newline passes ``$`` too). Recent answers are kept, at
    most 1,024 (then forgotten together)."""
    if type_ in _types:
        return True
    if _type_ok(type_) is None:
        return False
    if len(_types) >= _TYPES_MAX:
        _types.clear()
    _types.add(type_)
    return True
_loose: Final = msgspec.json.Decoder(_Loose)
_encoder: Final = msgspec.json.Encoder()
_TOO_LONG: Final = re.compile(r"length <= \d+")
_STRING: Final = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKET: Final = re.compile(rb"[\[\]{}]")
_META_ID: Final = re.compile(rb'"meta"\s*:\s*\{[^{}]*?"id"\s*:\s*"([A-Za-z0-9_.:/@$-]{1,64})"')


def json_depth(raw: bytes, limit: int) -> int:
    """The nesting depth of ``raw``, counted up to ``limit + 1`` (then it stops).

    Cheap for ordinary actions: when the document has at most ``limit``
    brackets in all, it cannot be deeper, and nothing is scanned.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return 0
    depth = deepest = 0
    for m in _BRACKET.finditer(_STRING.sub(b"", raw)):
        if m.group() in (b"[", b"{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        else:
            depth -= 1
    return deepest


def reply_id(data: bytes) -> str | None:
    """Best effort: the ``meta.id`` of an invalid action, if it is usable."""
    try:
        meta = _loose.decode(data).meta
    except RecursionError:
        # Too deep to parse at all: find a flat "meta": {..."id": "..."} by pattern.
        found = _META_ID.search(data)
        return found.group(1).decode() if found else None
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    if isinstance(meta, dict):
        mid = meta.get("id")
        if isinstance(mid, str) and len(mid) <= MAX_META_ID:
            return mid
    return None


def decode_action(data: bytes | str, max_depth: int = MAX_DEPTH) -> Action | DecodeFailure:
    """Decode one text frame into an :class:`Action`.

    Returns a :class:`DecodeFailure` (``BAD_REQUEST``, or ``TOO_LARGE`` for a
    field past its length limit or nesting deeper than ``max_depth``) instead
    of raising. The message quotes only the client's own input and the rule
    it broke.
    """
    raw = data.encode() if isinstance(data, str) else data
    # json_depth's own first test, here: an ordinary action costs no call of it.
    if raw.count(b"[") + raw.count(b"{") > max_depth and json_depth(raw, max_depth) > max_depth:
        # Checked before decoding: msgspec recurses, and a deep enough
        # document would exhaust the interpreter's recursion limit.
        message = f"JSON nested deeper than {max_depth}"
        return DecodeFailure(ErrorCode.TOO_LARGE, message, reply_id(raw))
    try:
        action = _decoder.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):  # ValidationError is a DecodeError
        pass  # the strict pass below says why
    else:
        if action.type in _types or valid_type(action.type):  # the set first: no frame
            return action
    # Refused (rare): the schema with every rule in it names the fault, so the answer is
    # exactly that of one strict pass (which of two faults comes first, too).
    try:
        return _strict.decode(raw)  # not reached for a valid frame: it was taken above
    except msgspec.ValidationError as exc:
        text = str(exc)
        code = ErrorCode.TOO_LARGE if _TOO_LONG.search(text) else ErrorCode.BAD_REQUEST
        return DecodeFailure(code, text, reply_id(raw))
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        # UnicodeDecodeError: invalid UTF-8 inside a string (the transport
        # closes 1007 before that, but direct callers get a value too).
        return DecodeFailure(ErrorCode.BAD_REQUEST, f"not JSON: {exc}", reply_id(raw))


encode: Final[Callable[[Outbound], bytes]] = _encoder.encode
"""Encode an outbound action to the bytes of one text frame.

The encoder's own bound method, not a function around it: every reply, relay and
delivery goes through it, and the function's frame was about 400 of its 2,700
instructions per reply (callgrind, bench/README.md, 2026-12-03)."""
