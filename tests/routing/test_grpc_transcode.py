"""Transcoding stays protobuf's ``json_format``; the one shortcut keeps its answers.

``json_format`` checks every string field for unpaired surrogates with a regular
expression (3.5 µs for the bench's 90 characters, a tenth of a gRPC round trip's
instructions: bench/README.md). An ASCII string has none, so the gateway answers
that check without the expression for ASCII strings; any other string still goes
through protobuf's own.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, json_format

from wsgate.routing import grpc_transcode
from wsgate.routing.grpc_transcode import Method, Refused


def _method() -> Method:
    pool = descriptor_pool.DescriptorPool()
    fdp = descriptor_pb2.FileDescriptorProto(
        name="t/echo.proto", package="t.v1", syntax="proto3"
    )
    msg = fdp.message_type.add(name="Pad")
    msg.field.add(
        name="pad_text", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL, json_name="padText",
    )  # fmt: skip
    fdp.service.add(name="Echo").method.add(
        name="Echo", input_type=".t.v1.Pad", output_type=".t.v1.Pad"
    )
    pool.Add(fdp)
    return Method(pool.FindServiceByName("t.v1.Echo").methods_by_name["Echo"])


def test_the_surrogate_check_is_installed() -> None:
    _method()
    assert isinstance(json_format._UNPAIRED_SURROGATE_PATTERN, grpc_transcode._AsciiFirst)


@pytest.mark.parametrize("text", ["x" * 90, "", "héllo", "日本", "\U0001f600"])
def test_strings_round_trip(text: str) -> None:
    method = _method()
    request = method.encode(msgspec.json.encode({"padText": text}))
    assert request.pad_text == text
    assert method.decode(request) == {"padText": text}


@pytest.mark.parametrize("text", ["\ud800", "a\udfffb", "x" * 40 + "\udbff"])
def test_an_unpaired_surrogate_is_still_refused_by_json_format(text: str) -> None:
    method = _method()
    message: Any = method.request()
    with pytest.raises(json_format.ParseError, match="Unpaired surrogate"):
        json_format.ParseDict({"padText": text}, message)


@pytest.mark.parametrize("value", ["5", "true", "[]", "{}"])
def test_a_string_field_given_another_json_type_is_refused_naming_it(value: str) -> None:
    with pytest.raises(Refused, match="padText"):
        _method().encode(b'{"padText": %s}' % value.encode())


def test_a_surrogate_escape_in_a_payload_is_refused() -> None:
    with pytest.raises(Refused):
        _method().encode(b'{"padText": "\\ud800"}')


def test_installing_twice_wraps_once() -> None:
    grpc_transcode._install_surrogate_check()
    grpc_transcode._install_surrogate_check()
    check = json_format._UNPAIRED_SURROGATE_PATTERN
    assert isinstance(check, grpc_transcode._AsciiFirst)
    assert not isinstance(check.pattern, grpc_transcode._AsciiFirst)


def test_the_methods_parser_answers_as_parse_dict_after_a_failure() -> None:
    """The method's own parser (ParseDict's, kept): a refused payload leaves it usable."""
    method = _method()
    with pytest.raises(Refused, match=r"payload does not fit t\.v1\.Pad"):
        method.encode(b'{"nope": 1}')
    for _ in range(150):  # past ParseDict's max_recursion_depth (100) had the depth leaked
        with pytest.raises(Refused):
            method.encode(b'{"padText": 5}')
    assert method.encode(b'{"padText": "ok"}').pad_text == "ok"
    expected: Any = method.request()
    json_format.ParseDict({"padText": "ok"}, expected)
    assert method.encode(b'{"padText": "ok"}') == expected


def _rich_method() -> Method:
    """A method whose request has a wrapper, a map, a nested message, a Struct and a Timestamp."""
    from google.protobuf import struct_pb2, timestamp_pb2, wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    for module in (wrappers_pb2, struct_pb2, timestamp_pb2):
        pool.Add(descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb))
    fdp = descriptor_pb2.FileDescriptorProto(
        name="t/rich.proto", package="t.v1", syntax="proto3",
        dependency=["google/protobuf/wrappers.proto", "google/protobuf/struct.proto",
                    "google/protobuf/timestamp.proto"],
    )  # fmt: skip
    f = descriptor_pb2.FieldDescriptorProto
    inner = fdp.message_type.add(name="Inner")
    inner.field.add(name="n", number=1, type=f.TYPE_INT64, label=f.LABEL_OPTIONAL, json_name="n")
    rich = fdp.message_type.add(name="Rich")
    entry = rich.nested_type.add(name="CountsEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=f.TYPE_INT32, label=f.LABEL_OPTIONAL)
    for number, (name, json_name, kind, type_name, label) in enumerate(
        [
            ("label", "label", f.TYPE_MESSAGE, ".google.protobuf.StringValue", f.LABEL_OPTIONAL),
            ("counts", "counts", f.TYPE_MESSAGE, ".t.v1.Rich.CountsEntry", f.LABEL_REPEATED),
            ("inner", "inner", f.TYPE_MESSAGE, ".t.v1.Inner", f.LABEL_OPTIONAL),
            ("inners", "inners", f.TYPE_MESSAGE, ".t.v1.Inner", f.LABEL_REPEATED),
            ("extra", "extra", f.TYPE_MESSAGE, ".google.protobuf.Struct", f.LABEL_OPTIONAL),
            ("at", "at", f.TYPE_MESSAGE, ".google.protobuf.Timestamp", f.LABEL_OPTIONAL),
            ("pad_text", "padText", f.TYPE_STRING, "", f.LABEL_OPTIONAL),
        ],
        start=1,
    ):
        field = rich.field.add(name=name, number=number, type=kind, label=label, json_name=json_name)
        if type_name:
            field.type_name = type_name
    fdp.service.add(name="Riches").method.add(
        name="Echo", input_type=".t.v1.Rich", output_type=".t.v1.Rich"
    )
    pool.Add(fdp)
    return Method(pool.FindServiceByName("t.v1.Riches").methods_by_name["Echo"])


RICH = {
    "label": "a label",
    "counts": {"a": 1, "b": 2},
    "inner": {"n": "9007199254740993"},
    "inners": [{"n": "1"}, {}],
    "extra": {"k": [1, "two", None, True], "o": {"x": 1.5}},
    "at": "2026-01-02T03:04:05.500Z",
    "padText": "héllo",
}


@pytest.mark.parametrize("payload", [RICH, {}, {"label": None, "inner": {}}, {"counts": {}}])
def test_the_memos_answer_as_json_formats_own_predicates(
    monkeypatch: pytest.MonkeyPatch, payload: dict[str, Any]
) -> None:
    """Every message kind: what the method makes with the memos in place is what
    ParseDict and MessageToDict make with json_format's own predicates."""
    method = _rich_method()
    raw = msgspec.json.encode(payload)
    request = method.encode(raw)
    answer = method.decode(request)
    for name in grpc_transcode._PREDICATES:
        memo = getattr(json_format, name).__self__
        assert isinstance(memo, grpc_transcode._Memo)
        monkeypatch.setattr(json_format, name, memo.predicate)
    expected: Any = method.request()
    json_format.ParseDict(payload, expected)
    assert request == expected
    assert answer == json_format.MessageToDict(
        expected, preserving_proto_field_name=False, always_print_fields_with_no_presence=True
    )


def test_the_memos_keep_the_predicates_answers_for_every_descriptor() -> None:
    method = _rich_method()
    method.decode(method.encode(msgspec.json.encode(RICH)))
    wrapper = json_format._IsWrapperMessage.__self__
    map_entry = json_format._IsMapEntry.__self__
    descriptor = method.request.DESCRIPTOR
    messages = [descriptor, *descriptor.nested_types]
    messages += [f.message_type for f in descriptor.fields if f.message_type is not None]
    for message in messages:
        assert wrapper[message] is bool(wrapper.predicate(message))
        for field in message.fields:
            assert map_entry[field] is bool(map_entry.predicate(field))
    assert wrapper[descriptor.fields_by_name["label"].message_type] is True
    assert map_entry[descriptor.fields_by_name["counts"]] is True
    assert map_entry[descriptor.fields_by_name["inners"]] is False


def test_a_new_method_empties_the_memos_and_they_stay_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A discovery round makes new methods from a new pool: the last round's
    descriptors are not kept by the memos; nor are more than MAX_MEMO."""
    method = _rich_method()
    method.decode(method.encode(msgspec.json.encode(RICH)))
    wrapper = json_format._IsWrapperMessage.__self__
    assert method.request.DESCRIPTOR in wrapper
    _method()
    assert method.request.DESCRIPTOR not in wrapper
    monkeypatch.setattr(grpc_transcode, "MAX_MEMO", 2)
    for _ in range(3):
        method.decode(method.encode(msgspec.json.encode(RICH)))
    assert 0 < len(wrapper) <= 2


def test_installing_the_memos_twice_wraps_once() -> None:
    grpc_transcode._install_memos()
    grpc_transcode._install_memos()
    for name in grpc_transcode._PREDICATES:
        memo = getattr(json_format, name).__self__
        assert isinstance(memo, grpc_transcode._Memo)
        assert not hasattr(memo.predicate, "__self__")  # json_format's own function


@pytest.mark.parametrize("payload", [b"", b"  ", b"null", b" null\n", b"\x0cnull", b"\x0b"])
def test_an_empty_or_null_payload_is_the_empty_message(payload: bytes) -> None:
    method = _method()
    assert method.encode(payload) == method.request()
