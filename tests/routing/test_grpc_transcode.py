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
