from __future__ import annotations

import re

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsgate.protocol.envelope import encode
from wsgate.routing.results import InvocationResult, Publish, Target, decode_result


def test_reply_and_publish_decode_to_outbound_ready_actions() -> None:
    body = (
        b'{"reply":[{"type":"a/B","payload":{"k": [1, 2]},"meta":{"channel":"acme:x","id":"z"}}],'
        b'"publish":[{"to":{"hub":"acme"},"action":{"type":"a/C","error":true}}]}'
    )
    result = decode_result(body)
    assert isinstance(result, InvocationResult)
    [reply] = result.replies
    assert encode(reply) == b'{"type":"a/B","payload":{"k": [1, 2]},"meta":{"channel":"acme:x"}}'
    [pub] = result.publishes
    assert (pub.to.kind, pub.to.value, pub.exclude) == ("hub", "acme", None)
    assert encode(pub.action.outbound()) == b'{"type":"a/C","error":true}'


def test_empty_object_is_an_empty_result() -> None:
    assert decode_result(b"{}") == InvocationResult()


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"reply": {"type": "a"}}',
        b'{"reply": [{"type": "bad type"}]}',
        b'{"reply": [{"type": ""}]}',
        b'{"reply": [{"type": "@@wsgate/WELCOME"}]}',
        b'{"reply": [{"payload": 1}]}',
        b'{"reply": [{"type": "a", "extra": 1}]}',
        b'{"reply": [{"type": "a", "meta": {"channel": "no spaces allowed"}}]}',
        b'{"replies": []}',
        b'{"publish": [{"to": {}, "action": {"type": "a"}}]}',
        b'{"publish": [{"to": {"user": "u", "hub": "h"}, "action": {"type": "a"}}]}',
        b'{"publish": [{"to": {"channel": "bad address!"}, "action": {"type": "a"}}]}',
        b'{"publish": [{"to": {"hub": "a:b"}, "action": {"type": "a"}}]}',
        b'{"publish": [{"to": {"team": "t"}, "action": {"type": "a"}}]}',
        b'{"publish": [{"to": {"user": "u"}, "action": {"type": "a"}, "exclude": {"user": "u"}}]}',
        b'{"reply": [' + b",".join([b'{"type":"a"}'] * 1001) + b"]}",
    ],
)
def test_malformed_answers_are_refused_with_a_reason(body: bytes) -> None:
    reason = decode_result(body)
    assert isinstance(reason, str) and reason


def test_target_and_publish_fit_the_internal_publish_body() -> None:
    pub = msgspec.json.decode(
        b'{"to": {"connection": "n1.abc"}, "action": {"type": "x/Y"}, '
        b'"exclude": {"connection": "n1.def"}}',
        type=Publish,
    )
    assert pub.to == Target(connection="n1.abc")
    assert pub.to.kind == "connection"
    assert pub.exclude is not None and pub.exclude.value == "n1.def"
    for kind in ("user", "channel", "hub"):
        assert Target(**{kind: "acme"}).kind == kind
    with pytest.raises(ValueError):
        Target()


def test_a_refused_answer_names_its_first_fault_in_document_order() -> None:
    # decode_result tests reply types outside msgspec first, then asks the strict schema
    # why it refused: the reason must be what one strict pass gives.
    bad_type = b'{"type":"a B"}'
    gateway = b'{"type":"@@wsgate/X"}'
    unknown = b'{"type":"a/B","zz":1}'
    assert decode_result(b'{"reply":[' + bad_type + b"]}") == (
        "Expected `str` matching regex '^[A-Za-z0-9_./:@$-]{1,128}$' - at `$.reply[0].type`"
    )
    assert decode_result(b'{"reply":[' + gateway + b"]}") == (
        "types starting with @@wsgate/ are the gateway's - at `$.reply[0]`"
    )
    first = decode_result(b'{"reply":[{"type":"a B","zz":1}]}')
    assert isinstance(first, str) and "$.reply[0].type" in first
    second = decode_result(b'{"reply":[{"zz":1,"type":"a B"}]}')
    assert isinstance(second, str) and "zz" in second
    assert isinstance(decode_result(b'{"reply":[' + unknown + b"]}"), str)


@given(st.text(max_size=130))
def test_a_reply_type_is_accepted_exactly_when_it_matches(type_: str) -> None:
    body = msgspec.json.encode({"reply": [{"type": type_}]})
    ok = re.search(r"^[A-Za-z0-9_./:@$-]{1,128}$", type_) is not None  # msgspec's rule
    ok = ok and not type_.startswith("@@wsgate/")
    for _ in range(2):  # the second time the recent types' cache answers
        assert isinstance(decode_result(body), InvocationResult) is ok
