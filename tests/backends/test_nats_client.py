"""ReplyClient's raw subscriptions against a real nats-server: the bytes a handler
gets, a handler that raises, unsubscribing; the answer header parser; and
``nats_wire.flush``, which puts the invoker's batch on the socket at once (no waiting
for nats-py's flusher task: one loop iteration more of every round trip)."""

from __future__ import annotations

import pytest
from nats.aio.client import Client

from tests.helpers import eventually
from tests.servers import NATS_SERVER
from wsgate.backends.nats_client import ReplyClient
from wsgate.routing.nats_wire import STATUS, answer_headers, flush, write
from wsgate.sdk.nats_service import on_server

pytestmark = [pytest.mark.skipif(NATS_SERVER is None, reason="no nats-server"),
              pytest.mark.timeout(30)]  # fmt: skip

Got = tuple[bytes, bytes, "bytes | None"]


async def test_a_raw_handler_gets_subject_data_and_the_header_block_as_bytes(
    gw_nc: ReplyClient, svc_nc: Client
) -> None:
    got: list[Got] = []
    await gw_nc.subscribe_raw("raw.a.*", lambda s, d, h: got.append((s, d, h)))
    await on_server(gw_nc)
    counted = gw_nc.stats["in_msgs"]
    await svc_nc.publish("raw.a.1", b"plain")
    await svc_nc.publish("raw.a.2", b"with", headers={"K": "v"})
    await eventually(lambda: len(got) == 2, what="both messages")
    assert got[0] == (b"raw.a.1", b"plain", None)
    subject, data, block = got[1]
    assert (subject, data) == (b"raw.a.2", b"with")
    assert block is not None and answer_headers(block) == {"K": "v"}
    assert gw_nc.stats["in_msgs"] == counted  # raw messages are not counted by nats-py


async def test_a_handler_that_raises_is_counted_and_the_connection_reads_on(
    gw_nc: ReplyClient, svc_nc: Client
) -> None:
    got: list[bytes] = []

    def handler(subject: bytes, data: bytes, headers: bytes | None) -> None:
        if data == b"bad":
            raise ValueError("a bug in the handler")
        got.append(data)

    await gw_nc.subscribe_raw("raw.b", handler)
    other = await gw_nc.subscribe("raw.c")  # an ordinary subscription on the same reader
    await on_server(gw_nc)
    await svc_nc.publish("raw.b", b"bad")
    await svc_nc.publish("raw.b", b"good")
    await svc_nc.publish("raw.c", b"still")
    await eventually(lambda: got == [b"good"], what="the message after the failure")
    assert (await other.next_msg(timeout=5)).data == b"still"
    assert gw_nc.raw_failures == 1 and gw_nc.is_connected


async def test_after_unsubscribe_the_handler_gets_nothing(gw_nc: ReplyClient, svc_nc: Client) -> None:
    got: list[bytes] = []
    sub = await gw_nc.subscribe_raw("raw.d", lambda s, d, h: got.append(d))
    await on_server(gw_nc)
    await svc_nc.publish("raw.d", b"1")
    await eventually(lambda: got == [b"1"], what="the first message")
    await sub.unsubscribe()
    await on_server(gw_nc)
    await svc_nc.publish("raw.d", b"2")
    await on_server(svc_nc)
    await on_server(gw_nc)  # anything the server sent gw_nc before this is read
    assert got == [b"1"]


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (b"NATS/1.0 503\r\n\r\n", {STATUS: "503"}),
        (b"NATS/1.0 503 No Responders\r\n\r\n", {STATUS: "503"}),
        (b"NATS/1.0\r\nNats-Service-Error-Code: 403\r\nNats-Service-Error: no\r\n\r\n",
         {"Nats-Service-Error-Code": "403", "Nats-Service-Error": "no"}),
        (b"NATS/1.0\r\nA:1\r\nA:  2 \r\nno colon\r\n: empty name\r\n\r\n", {"A": "2"}),
        (b"NATS/1.0\r\nB: \xff\r\n\r\n", {"B": "\ufffd"}),
        (b"", {}),
        (b"garbage", {}),
    ],
)  # fmt: skip
def test_answer_headers(block: bytes, expected: dict[str, str]) -> None:
    assert answer_headers(block) == expected


async def test_flush_writes_the_batch_before_the_loop_runs_again(gw_nc: ReplyClient) -> None:
    got: list[bytes] = []
    await gw_nc.subscribe_raw("flush.t", lambda s, d, h: got.append(d))
    await on_server(gw_nc)
    await write(gw_nc, b"PUB flush.t 3\r\none\r\nPUB flush.t 3\r\ntwo\r\n")
    flush(gw_nc)  # a plain call: the bytes left the client's buffer here
    assert gw_nc._pending == [] and gw_nc._pending_data_size == 0
    await eventually(lambda: len(got) == 2, what="both messages")
    assert got == [b"one", b"two"]


async def test_flush_with_nothing_pending_writes_nothing(gw_nc: ReplyClient) -> None:
    flush(gw_nc)
    assert gw_nc._pending == [] and gw_nc._pending_data_size == 0
