"""JSON payloads to protobuf requests and responses back, with protobuf's ``json_format``.

A :class:`Method` is one routable gRPC method of a reflected target: its
path (``/<package>.<Service>/<Method>``), its message classes (built with
``message_factory.GetMessageClass`` from the reflected pool) and the type of
the action its answer becomes. Transcoding is protobuf's own (proto3 JSON
mapping), nothing hand-written:

- in: the payload decoded by msgspec, then :func:`json_format.ParseDict`
  (half the CPU of ``json_format.Parse``; a duplicate key: the last wins); both the JSON
  names (``moduleId``) and the proto names (``module_id``) are accepted, and
  an unknown field is refused. A ``null`` or absent payload is the empty
  message.
- out: :func:`json_format.MessageToDict` with the JSON names
  (``preserving_proto_field_name=False``, the proto3 canonical form) and
  every field present, zero values included
  (``always_print_fields_with_no_presence=True``), so a client always sees
  the same keys. 64-bit integers are strings, enums their names, and
  well-known types (Timestamp, Duration, Struct, wrappers) their JSON forms.

A payload that does not fit the request message is refused with the
gateway's own message naming the field (from ``json_format``'s error, never
anything the service said).

Two shortcuts inside ``json_format``, same answers. It checks every string
field for unpaired surrogates with a regular expression (3.5 µs for 90
characters: a tenth of a gRPC round trip's instructions, bench/README.md).
An ASCII string has none, so :class:`_AsciiFirst` answers that check for
ASCII strings with ``str.isascii()`` and hands any other string to
protobuf's own expression (installed when the first :class:`Method` is made).
And it asks two functions of a descriptor alone, per message and per field
(``_IsWrapperMessage``: ``descriptor.file.name == ...``; ``_IsMapEntry``):
a :class:`_Memo` keeps their answers (5,000 instructions per round trip).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import msgspec

__all__ = ["MAX_REASON", "Method", "Refused"]

_decode: Final = msgspec.json.decode

MAX_REASON: Final = 300
"""Longest transcoding complaint sent to a client (the rest is cut)."""


class Refused(Exception):
    """The payload does not fit the request message; ``str()`` is safe for the client."""


class _AsciiFirst:
    """``json_format``'s unpaired-surrogate pattern, answering ASCII strings itself."""

    __slots__ = ("pattern",)

    def __init__(self, pattern: Any) -> None:
        self.pattern = pattern

    def search(self, value: Any) -> Any:
        if type(value) is str and value.isascii():
            return None
        return self.pattern.search(value)  # a non-string raises its TypeError, as before


def _install_surrogate_check() -> None:
    """Put :class:`_AsciiFirst` in front of ``json_format``'s pattern (once; a protobuf
    without that pattern is left as it is)."""
    from google.protobuf import json_format

    pattern = getattr(json_format, "_UNPAIRED_SURROGATE_PATTERN", None)
    if pattern is not None and not isinstance(pattern, _AsciiFirst):
        json_format._UNPAIRED_SURROGATE_PATTERN = _AsciiFirst(pattern)


class _Memo(dict[Any, bool]):
    """One of ``json_format``'s descriptor predicates, its answers kept: ``memo[descriptor]``.

    Its ``__getitem__`` goes where ``json_format`` calls the predicate: a hit is one C
    call, no Python frame. Emptied by :func:`_install_memos` (each :class:`Method`
    made, so a discovery round's new descriptor pool drops the last round's).
    """

    __slots__ = ("predicate",)

    def __init__(self, predicate: Any) -> None:
        super().__init__()
        self.predicate = predicate

    def __missing__(self, descriptor: Any) -> bool:
        answer = bool(self.predicate(descriptor))
        if len(self) < MAX_MEMO:
            self[descriptor] = answer
        return answer


MAX_MEMO: Final = 4096
"""Descriptors a :class:`_Memo` keeps answers for (a round's message and field types)."""

_PREDICATES: Final = ("_IsWrapperMessage", "_IsMapEntry")
"""``json_format``'s functions of a descriptor alone, called per message and per field."""


def _install_memos() -> None:
    """Put a :class:`_Memo` in place of each of :data:`_PREDICATES` (once; empty them
    when already there; a protobuf without one is left as it is)."""
    from google.protobuf import json_format

    for name in _PREDICATES:
        predicate = getattr(json_format, name, None)
        memo = getattr(predicate, "__self__", None)
        if isinstance(memo, _Memo):
            memo.clear()
        elif callable(predicate):
            setattr(json_format, name, _Memo(predicate).__getitem__)


class Method:
    """One routable method and how its messages are transcoded.

    Built by discovery from a reflected ``MethodDescriptor``; immutable
    afterwards. ``reply_type`` is the action type of the answer: the
    response message's full name unless an alias names another.
    """

    __slots__ = (
        "_parser", "_printer", "decode", "name", "path", "reply_type", "request", "response",
        "server_streaming", "unary",
    )  # fmt: skip

    def __init__(self, descriptor: Any, reply_type: str | None = None) -> None:
        from google.protobuf import message_factory

        _install_surrogate_check()
        _install_memos()
        service = descriptor.containing_service
        self.name = f"{service.full_name}/{descriptor.name}"
        """``<package>.<Service>/<Method>``: the action type naming it."""
        self.path = f"/{self.name}"
        self.request: Any = message_factory.GetMessageClass(descriptor.input_type)
        self.response: Any = message_factory.GetMessageClass(descriptor.output_type)
        self.reply_type = reply_type or descriptor.output_type.full_name
        client_streaming = bool(descriptor.client_streaming)
        self.unary = not descriptor.server_streaming and not client_streaming
        """Unary-unary: one request, one answer."""
        self.server_streaming = bool(descriptor.server_streaming) and not client_streaming
        """One request, a stream of answers (see :mod:`.grpc_stream`)."""
        from google.protobuf import json_format

        # What ParseDict and MessageToDict make anew per call, made once per method: a
        # parser looks up (and misses) an enum-name extension in the default pool on its
        # first scalar, 7,000 of ParseDict's 38,000 instructions for the bench's message;
        # the printer 4,300 of MessageToDict's 23,800 (callgrind, bench/README.md).
        # Used on the event loop only: a call runs one of them to its end.
        self._parser: Any = json_format._Parser(False, None, 100)  # ParseDict's defaults
        self._printer: Any = json_format._Printer(
            preserving_proto_field_name=False, always_print_fields_with_no_presence=True
        )
        self.decode: Callable[[Any], dict[str, Any]] = self._printer._MessageToJsonObject
        """The JSON form of a response message (a new dict): ``json_format.MessageToDict(
        message, preserving_proto_field_name=False, always_print_fields_with_no_presence=True)``
        with the method's printer, its bound method itself (no frame of ours per answer)."""

    def encode(self, payload: bytes | None) -> Any:
        """The request message for a JSON ``payload``; raises :class:`Refused`."""
        message = self.request()
        if payload is None:
            return message
        # msgspec's decoder, then json_format.ParseDict: half of json_format.Parse's
        # 25 µs for the bench's one-field message (its json.loads with a duplicate-key
        # hook). A duplicate key: the last wins, as everywhere else msgspec decodes.
        try:
            document = _decode(payload)
        except msgspec.DecodeError:
            if payload.strip() in (b"", b"null"):  # empty, or a null in non-JSON spaces
                return message
            raise Refused("payload is not a JSON object: DecodeError") from None
        if document is None:  # null: the empty message (no copy stripped per call to see it)
            return message
        if not isinstance(document, dict):
            raise Refused(f"payload is not a JSON object: {type(document).__name__}")
        parser = self._parser
        try:  # json_format.ParseDict(document, message), with the method's parser
            parser.recursion_depth = 0  # a failed parse leaves it raised
            parser.ConvertMessage(document, message, "")
        except Exception as exc:  # ParseError (json_format's), or a bad document
            from google.protobuf import json_format

            if not isinstance(exc, json_format.ParseError):
                if isinstance(exc, (ValueError, RecursionError)):
                    raise Refused(f"payload is not a JSON object: {type(exc).__name__}") from None
                raise
            text = " ".join(str(exc).split())
            if len(text) > MAX_REASON:
                text = text[: MAX_REASON - 1] + "…"
            name = self.request.DESCRIPTOR.full_name
            raise Refused(f"payload does not fit {name}: {text}") from None
        return message
