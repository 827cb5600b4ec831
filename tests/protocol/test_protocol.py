"""Envelope codec, address grammar, pattern table and close-code policy."""

from __future__ import annotations

import re
from collections.abc import Iterator

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from wsgate.protocol import (
    Action,
    CloseCode,
    DecodeFailure,
    ErrorCode,
    Outbound,
    OutMeta,
    PatternTable,
    decode_action,
    encode,
    parse_address,
    should_reconnect,
)
from wsgate.protocol.envelope import From


def test_decode_keeps_payload_raw_and_reads_meta() -> None:
    action = decode_action(
        b'{"type":"orders/UPDATE","payload":{"id":42},"meta":{"id":"c1","channel":"acme:o/1","x":1}}'
    )
    assert isinstance(action, Action)
    assert bytes(action.payload) == b'{"id":42}'
    assert action.meta is not None and action.meta.id == "c1" and action.meta.channel == "acme:o/1"


def test_encode_outbound_embeds_raw_payload_and_wire_names() -> None:
    action = decode_action(b'{"type":"a","payload":[1, 2]}')
    assert isinstance(action, Action)
    out = Outbound("a", action.payload, OutMeta("acme:x", 7, "c1", From("u1", "n1.x")))
    assert msgspec.json.decode(encode(out)) == {
        "type": "a",
        "payload": [1, 2],
        "meta": {
            "channel": "acme:x",
            "offset": 7,
            "inReplyTo": "c1",
            "from": {"userId": "u1", "connectionId": "n1.x"},
        },
    }


@given(st.binary(max_size=200))
def test_decode_never_raises(data: bytes) -> None:
    result = decode_action(data)
    assert isinstance(result, Action | DecodeFailure)


@given(st.from_regex(r"[A-Za-z0-9_./:@$-]{1,128}", fullmatch=True))
def test_every_valid_type_decodes(type_: str) -> None:
    assert isinstance(decode_action(msgspec.json.encode({"type": type_})), Action)


def test_failures_name_the_rule() -> None:
    failure = decode_action(b'{"type":"x","meta":{"id":"' + b"a" * 65 + b'"}}')
    assert isinstance(failure, DecodeFailure) and failure.code is ErrorCode.TOO_LARGE
    failure = decode_action(b'{"type":"bad type","meta":{"id":"q"}}')
    assert isinstance(failure, DecodeFailure)
    assert failure.code is ErrorCode.BAD_REQUEST and failure.in_reply_to == "q"
    assert "$.type" in failure.message


def test_of_two_faults_the_first_in_the_document_is_answered() -> None:
    # decode_action checks the type after a decode without it, then asks the strict schema
    # why it refused: the answer must be what one strict pass gives, fault order included.
    long_id = b'"meta":{"id":"' + b"a" * 65 + b'"}'
    first = decode_action(b'{"type":"bad type",' + long_id + b"}")
    assert isinstance(first, DecodeFailure) and first.code is ErrorCode.BAD_REQUEST
    assert "$.type" in first.message
    second = decode_action(b"{" + long_id + b',"type":"bad type"}')
    assert isinstance(second, DecodeFailure) and second.code is ErrorCode.TOO_LARGE
    assert "$.meta.id" in second.message
    unknown = decode_action(b'{"type":"ok","extra":1}')  # the strict schema forbids it too
    assert isinstance(unknown, DecodeFailure) and "extra" in unknown.message


@given(st.text(max_size=130))
def test_a_type_is_accepted_exactly_when_it_matches_the_pattern(type_: str) -> None:
    frame = msgspec.json.encode({"type": type_})
    matches = re.search(r"^[A-Za-z0-9_./:@$-]{1,128}$", type_) is not None  # msgspec's rule
    for _ in range(2):  # the second time the recent types' cache answers
        assert isinstance(decode_action(frame), Action) is matches


def test_addresses() -> None:
    assert parse_address("acme") == ("acme", None)
    assert parse_address("acme:orders/42") == ("acme", "orders/42")
    assert parse_address("acme:team/red/board").value == "acme:team/red/board"  # type: ignore[union-attr]
    for bad in [
        "",
        "a:b:c",
        "acme:",
        ":v",
        "acme:../x",
        "acme:a/../b",
        "ac me:x",
        "a" * 65,
        3,
        None,
    ]:
        assert parse_address(bad) is None, bad


def test_pattern_table_most_specific_wins() -> None:
    table = PatternTable(
        [("*", "all"), ("orders/*", "orders"), ("orders/UPDATE", "update"), ("orders/UP*", "up")]
    )
    assert table.lookup("orders/UPDATE") == "update"
    assert table.lookup("orders/UPSERT") == "up"
    assert table.lookup("orders/GET") == "orders"
    assert table.lookup("chat/x") == "all"
    table.remove("*")
    assert table.lookup("chat/x") is None
    assert len(table) == 3


class _Touched(dict[str, int]):
    """A dict counting every key or value it hands out (probes and iteration alike)."""

    touched = 0

    def get(self, key: str, default: int | None = None) -> int | None:  # type: ignore[override]
        self.touched += 1
        return super().get(key, default)

    def __getitem__(self, key: str) -> int:
        self.touched += 1
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.touched += 1
        return super().__contains__(key)

    def __iter__(self) -> Iterator[str]:
        for key in super().__iter__():
            self.touched += 1
            yield key

    def items(self) -> Iterator[tuple[str, int]]:  # type: ignore[override]
        for item in super().items():
            self.touched += 1
            yield item

    def values(self) -> Iterator[int]:  # type: ignore[override]
        for value in super().values():
            self.touched += 1
            yield value


def test_pattern_lookup_probes_do_not_grow_with_routes() -> None:
    """Prefix probes are one per distinct prefix length, not one per route: counted."""
    big = PatternTable([(f"svc{i}/*", i) for i in range(10_000)])
    big._prefix = touched = _Touched(big._prefix)
    big._exact = exact = _Touched(big._exact)
    assert big.lookup("svc9999/x") == 9999
    assert big.match("svc0/x") == ("svc0/*", 0)
    assert big.lookup("nothing/matches") is None
    # "svc0/".."svc9999/": four prefix lengths; three lookups, one exact probe each
    assert touched.touched <= 3 * 4 and exact.touched <= 3, (touched.touched, exact.touched)


def test_close_codes_say_whether_to_reconnect() -> None:
    for code in (1001, 1006, 1011, 1012, 4000, 4408, 4429):
        assert should_reconnect(code), code
    for code in (1000, 1002, 1008, 1009, CloseCode.UNAUTHENTICATED, CloseCode.FORBIDDEN):
        assert not should_reconnect(code), code


def test_decode_answers_invalid_utf8_and_deep_documents_with_values() -> None:
    for data in (b'{"type":"\xff"}', b'{"type":"a","meta":{"id":"\xed\xa0\x80"}}'):
        failure = decode_action(data)
        assert isinstance(failure, DecodeFailure) and failure.code is ErrorCode.BAD_REQUEST
    deep = b'{"meta":{"id":"d"},"type":"x","payload":' + b"[" * 2000 + b"]" * 2000 + b"}"
    failure = decode_action(deep)
    assert isinstance(failure, DecodeFailure) and failure.code is ErrorCode.TOO_LARGE
    assert failure.in_reply_to == "d"
