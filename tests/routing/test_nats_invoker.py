"""The NATS invoker against a real nats-server: every outcome row, the headers a
service sees, queue-group sharing, the answer size cap, the concurrency cap, aclose."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.micro import add_service
from nats.micro.request import Request

from tests.helpers import eventually, loop_lookups
from tests.servers import ServerProcess, nats_server
from wsgate.backends.nats import close_client, connect_nats
from wsgate.protocol.codes import ErrorCode
from wsgate.protocol.envelope import Action, Meta
from wsgate.routing import nats_invoker
from wsgate.routing.context import InvocationContext
from wsgate.routing.instances import Instance, Service, ServicePool
from wsgate.routing.nats_invoker import NatsInvoker
from wsgate.routing.results import InvocationResult
from wsgate.sdk.nats_service import on_server

pytestmark = pytest.mark.timeout(30)

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
CTX = InvocationContext(
    connectionId="n1.abc",
    userId="u1",
    sessionId="s1",
    hub="acme",
    channel="acme:orders/1",
    roles=("admin",),
    node="n1",
    requestId="rid-7",
    receivedAt=1.5,
)
ACTION = Action(type="orders/GET", payload=msgspec.Raw(b'{"id":1}'), meta=Meta(id="m1"))
ANSWER = {
    "reply": [{"type": "orders/GOT", "payload": {"id": 1}}],
    "publish": [{"to": {"channel": "acme:orders/1"}, "action": {"type": "orders/CHANGED"}}],
}


@pytest.fixture
async def invoker(gw_nc: Client) -> AsyncIterator[NatsInvoker]:
    inv = NatsInvoker(gw_nc, max_response_bytes=4096)
    yield inv
    await inv.aclose()


def service(subject: str, *, timeout_ms: int = 2000, cap: int = 16) -> Service:
    pool = ServicePool(
        f"nats:{subject}",
        timeout_ms=timeout_ms,
        secret="",
        max_concurrency=cap,
        static=False,
        clock=asyncio.get_running_loop().time,
        transport="nats",
    )
    pool.instances.append(Instance(subject, "nats"))
    return Service(pool)


async def responder(
    nc: Client, subject: str, answer: Callable[[Msg], Awaitable[None]], queue: str = ""
) -> None:
    await nc.subscribe(subject, queue=queue, cb=answer)
    await on_server(nc)


async def test_reply_and_publish_shape_and_what_the_service_sees(
    invoker: NatsInvoker, svc_nc: Client
) -> None:
    seen: list[Msg] = []

    async def answer(msg: Msg) -> None:
        seen.append(msg)
        await msg.respond(json.dumps(ANSWER).encode())

    await responder(svc_nc, "orders.get", answer)
    result = await invoker.invoke(service("orders.get"), ACTION, CTX, TP)
    assert isinstance(result, InvocationResult)
    assert [r.type for r in result.replies] == ["orders/GOT"]
    assert [p.to.channel for p in result.publishes] == ["acme:orders/1"]
    (msg,) = seen
    body = json.loads(msg.data)
    assert body["action"] == {"type": "orders/GET", "payload": {"id": 1}, "meta": {"id": "m1"}}
    assert body["context"] == json.loads(msgspec.json.encode(CTX))
    assert msg.headers == {
        "Wsgate-Connection-Id": "n1.abc",
        "Wsgate-User": "u1",
        "Wsgate-Hub": "acme",
        "Wsgate-Channel": "acme:orders/1",
        "Wsgate-Request-Id": "rid-7",
        "traceparent": TP,
    }


async def test_missing_traceparent_gets_a_fresh_one_and_empty_fields_no_header(
    invoker: NatsInvoker, svc_nc: Client
) -> None:
    seen: list[Msg] = []

    async def answer(msg: Msg) -> None:
        seen.append(msg)
        await msg.respond(b"")

    await responder(svc_nc, "orders.anon", answer)
    ctx = InvocationContext(connectionId="n1.x", hub="public")
    result = await invoker.invoke(service("orders.anon"), ACTION, ctx)
    assert result == InvocationResult()  # an empty answer: nothing to deliver
    headers = seen[0].headers or {}
    assert len(headers["traceparent"]) == 55
    assert "Wsgate-User" not in headers and "Wsgate-Channel" not in headers
    assert "Wsgate-Request-Id" not in headers


async def test_no_responders_is_unavailable(invoker: NatsInvoker) -> None:
    svc = service("nobody.home")
    assert await invoker.invoke(svc, ACTION, CTX) is ErrorCode.UPSTREAM_UNAVAILABLE
    assert invoker.stats.failures[ErrorCode.UPSTREAM_UNAVAILABLE] == 1
    assert svc.pool.instances[0].failures == 1  # the subject is down for its back-off


async def test_no_answer_in_time_is_timeout(invoker: NatsInvoker, svc_nc: Client) -> None:
    got: list[Msg] = []

    async def silent(msg: Msg) -> None:
        got.append(msg)

    await responder(svc_nc, "orders.slow", silent)
    svc = service("orders.slow", timeout_ms=150)
    assert await invoker.invoke(svc, ACTION, CTX) is ErrorCode.UPSTREAM_TIMEOUT
    assert len(got) == 1
    assert svc.pool.instances[0].failures == 1


async def test_one_timer_ends_a_shorter_timeout_on_time_beside_a_longer_one(
    invoker: NatsInvoker, svc_nc: Client
) -> None:
    """The invoker's one timer, armed for a long call, is armed again for a shorter one."""
    held: list[Msg] = []

    async def hold(msg: Msg) -> None:
        held.append(msg)

    await responder(svc_nc, "orders.held", hold)
    long_svc = service("orders.held", timeout_ms=20_000)
    long_call: list[InvocationResult | ErrorCode] = []
    invoker.start(long_svc, ACTION, CTX, long_call.append)
    await eventually(lambda: held, what="the long call reaches the service")
    loop = asyncio.get_running_loop()
    started = loop.time()
    short_svc = service("orders.held", timeout_ms=150)
    assert await invoker.invoke(short_svc, ACTION, CTX) is ErrorCode.UPSTREAM_TIMEOUT
    elapsed = loop.time() - started
    assert 0.15 <= elapsed < 0.15 + 0.5, elapsed  # its own deadline (+ the tick), not 20 s
    assert long_call == [] and invoker.in_flight() == 1  # the long one still waits
    await held[0].respond(b"")
    await eventually(lambda: long_call, what="the long call's answer")
    assert long_call == [InvocationResult()] and invoker.in_flight() == 0


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("400", ErrorCode.BAD_REQUEST),
        ("403", ErrorCode.FORBIDDEN),
        ("404", ErrorCode.UPSTREAM_ERROR),
        ("500", ErrorCode.UPSTREAM_ERROR),
        ("teapot", ErrorCode.UPSTREAM_ERROR),
    ],
)
async def test_service_error_headers_map_by_table(
    invoker: NatsInvoker, svc_nc: Client, code: str, expected: ErrorCode
) -> None:
    async def refuse(req: Request) -> None:
        await req.respond_error(code, "secret server detail: db password is hunter2")

    svc = await add_service(svc_nc, name="refuser", version="1.0.0")
    subject = f"refuse.c{code}"
    await svc.add_endpoint(name="e", subject=subject, handler=refuse)
    await on_server(svc_nc)  # the endpoint's subscription is on the server
    try:
        result = await invoker.invoke(service(subject), ACTION, CTX)
    finally:
        await svc.stop()
    assert result is expected  # an ErrorCode only: the service's text stays out


@pytest.mark.parametrize("data", [b"not json", b'{"reply": [{"type": "@@wsgate/X"}]}'])
async def test_malformed_answer_is_upstream_error(
    invoker: NatsInvoker, svc_nc: Client, data: bytes
) -> None:
    async def answer(msg: Msg) -> None:
        await msg.respond(data)

    subject = f"bad.a{len(data)}"
    await responder(svc_nc, subject, answer)
    svc = service(subject)
    assert await invoker.invoke(svc, ACTION, CTX) is ErrorCode.UPSTREAM_ERROR
    assert svc.pool.instances[0].failures == 0  # one bad answer is not the instance's failure


async def test_answer_over_the_size_cap_is_upstream_error(
    invoker: NatsInvoker, svc_nc: Client
) -> None:
    big = {"reply": [{"type": "orders/GOT", "payload": "x" * 5000}]}
    small = {"reply": [{"type": "orders/GOT", "payload": "x" * 100}]}

    async def answer(msg: Msg) -> None:
        size = json.loads(msg.data)["action"]["payload"]
        await msg.respond(json.dumps(big if size == "big" else small).encode())

    await responder(svc_nc, "orders.big", answer)
    big_action = Action(type="orders/GET", payload=msgspec.Raw(b'"big"'))
    small_action = Action(type="orders/GET", payload=msgspec.Raw(b'"small"'))
    assert await invoker.invoke(service("orders.big"), big_action, CTX) is ErrorCode.UPSTREAM_ERROR
    assert isinstance(
        await invoker.invoke(service("orders.big"), small_action, CTX), InvocationResult
    )


async def test_a_queue_group_shares_the_load(invoker: NatsInvoker, svc_nc: Client) -> None:
    counts = {"a": 0, "b": 0}

    def member(name: str) -> Callable[[Msg], Awaitable[None]]:
        async def answer(msg: Msg) -> None:
            counts[name] += 1
            await msg.respond(b"")

        return answer

    await responder(svc_nc, "orders.shared", member("a"), queue="orders")
    await responder(svc_nc, "orders.shared", member("b"), queue="orders")
    svc = service("orders.shared")
    for _ in range(200):  # bounded: NATS picks at random; both get some long before this
        assert isinstance(await invoker.invoke(svc, ACTION, CTX), InvocationResult)
        if counts["a"] and counts["b"]:
            break
    assert counts["a"] > 0 and counts["b"] > 0
    assert counts["a"] + counts["b"] <= 200  # each call went to one member only


async def test_start_calls_done_once_later(invoker: NatsInvoker, svc_nc: Client) -> None:
    async def answer(msg: Msg) -> None:
        await msg.respond(json.dumps(ANSWER).encode())

    await responder(svc_nc, "orders.start", answer)
    outcomes: list[InvocationResult | ErrorCode] = []
    invoker.start(service("orders.start"), ACTION, CTX, outcomes.append)
    invoker.start(service("nobody.start"), ACTION, CTX, outcomes.append)
    assert outcomes == []  # never from within start
    await eventually(lambda: len(outcomes) == 2, what="both calls answered")
    assert ErrorCode.UPSTREAM_UNAVAILABLE in outcomes
    assert any(isinstance(o, InvocationResult) for o in outcomes)


async def test_started_calls_look_the_loop_up_once(
    invoker: NatsInvoker, svc_nc: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each asyncio.get_running_loop() is a getpid() system call on CPython 3.11:
    # py-spy --native sampled 9 % of the gateway there, one per call (bench/README.md).
    async def answer(msg: Msg) -> None:
        await msg.respond(json.dumps(ANSWER).encode())

    await responder(svc_nc, "orders.loop", answer)
    outcomes: list[InvocationResult | ErrorCode] = []
    with loop_lookups(monkeypatch) as lookups:
        for _ in range(10):
            invoker.start(service("orders.loop"), ACTION, CTX, outcomes.append)
        await eventually(lambda: len(outcomes) == 10, what="ten answers")
        for _ in range(10):
            invoker.start(service("orders.loop"), ACTION, CTX, outcomes.append)
        await eventually(lambda: len(outcomes) == 20, what="ten more answers")
    assert all(isinstance(o, InvocationResult) for o in outcomes)
    assert lookups == [1]  # the invoker's first call keeps the loop


async def test_the_concurrency_cap_bounds_calls_in_flight(
    invoker: NatsInvoker, svc_nc: Client
) -> None:
    held: list[Msg] = []

    async def hold(msg: Msg) -> None:
        held.append(msg)

    await responder(svc_nc, "orders.capped", hold)
    svc = service("orders.capped", timeout_ms=3000, cap=2)
    outcomes: list[InvocationResult | ErrorCode] = []
    for _ in range(3):
        invoker.start(svc, ACTION, CTX, outcomes.append)
    await eventually(lambda: len(held) == 2, what="two calls reach the service")
    assert svc.pool.slots.free == 0
    await held[0].respond(b"")
    await eventually(lambda: len(held) == 3, what="the third call gets the freed slot")
    for msg in held[1:]:
        await msg.respond(b"")
    await eventually(lambda: len(outcomes) == 3, what="every call answered")
    assert svc.pool.slots.free == 2


async def test_aclose_ends_calls_in_flight_unavailable(gw_nc: Client, svc_nc: Client) -> None:
    held: list[Msg] = []

    async def hold(msg: Msg) -> None:
        held.append(msg)

    await responder(svc_nc, "orders.held", hold)
    inv = NatsInvoker(gw_nc)
    svc = service("orders.held", timeout_ms=10000)
    outcomes: list[InvocationResult | ErrorCode] = []
    inv.start(svc, ACTION, CTX, outcomes.append)
    await eventually(lambda: held, what="the call reaches the service")
    await inv.aclose()
    await eventually(lambda: outcomes, what="the call is ended")
    assert outcomes == [ErrorCode.UPSTREAM_UNAVAILABLE]
    assert svc.pool.slots.free == svc.pool.slots.limit
    assert await inv.invoke(svc, ACTION, CTX) is ErrorCode.UPSTREAM_UNAVAILABLE


async def test_a_context_that_would_smuggle_headers_is_internal(invoker: NatsInvoker) -> None:
    bad = InvocationContext(connectionId="n1.x", userId="u\r\nWsgate-User: admin")
    assert await invoker.invoke(service("nobody.smuggle"), ACTION, bad) is ErrorCode.INTERNAL


async def test_notify_sends_the_event_and_counts_a_failure(
    invoker: NatsInvoker, svc_nc: Client
) -> None:
    seen: list[Msg] = []

    async def answer(msg: Msg) -> None:
        seen.append(msg)
        await msg.respond(b"")

    await responder(svc_nc, "events.in", answer)
    event = Action(type="@@wsgate/CONNECTED", payload=msgspec.Raw(b'{"ip":"127.0.0.1"}'))
    await invoker.notify(service("events.in"), event, CTX)
    assert json.loads(seen[0].data)["action"]["type"] == "@@wsgate/CONNECTED"
    assert invoker.stats.notify_failures == 0
    await invoker.notify(service("events.nobody"), event, CTX)
    assert invoker.stats.notify_failures == 1


async def test_the_map_of_calls_is_freed_on_answer_timeout_and_a_late_answer_is_dropped(
    invoker: NatsInvoker, svc_nc: Client
) -> None:
    held: list[Msg] = []

    async def hold(msg: Msg) -> None:
        held.append(msg)

    await responder(svc_nc, "orders.late", hold)
    svc = service("orders.late", timeout_ms=150)
    assert await invoker.invoke(svc, ACTION, CTX) is ErrorCode.UPSTREAM_TIMEOUT
    assert invoker.in_flight() == 0 and svc.pool.slots.free == svc.pool.slots.limit
    await held[0].respond(json.dumps(ANSWER).encode())  # after its caller gave up
    await on_server(svc_nc)
    ok = service("orders.start2")

    async def answer(msg: Msg) -> None:
        await msg.respond(b"")

    await responder(svc_nc, "orders.start2", answer)
    assert await invoker.invoke(ok, ACTION, CTX) == InvocationResult()  # not the late one's
    assert invoker.in_flight() == 0


async def test_a_cancelled_invoke_frees_its_entry_and_slot_at_once(
    invoker: NatsInvoker, svc_nc: Client
) -> None:
    held: list[Msg] = []

    async def hold(msg: Msg) -> None:
        held.append(msg)

    await responder(svc_nc, "orders.cancel", hold)
    svc = service("orders.cancel", timeout_ms=10_000)
    task = asyncio.get_running_loop().create_task(invoker.invoke(svc, ACTION, CTX))
    await eventually(lambda: held, what="the call reaches the service")
    assert invoker.in_flight() == 1 and svc.pool.slots.free == svc.pool.slots.limit - 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert invoker.in_flight() == 0 and svc.pool.slots.free == svc.pool.slots.limit


async def test_a_lost_connection_ends_its_calls_and_frees_the_map(
    nats_proc: ServerProcess, svc_nc: Client
) -> None:
    held: list[Msg] = []

    async def hold(msg: Msg) -> None:
        held.append(msg)

    await responder(svc_nc, "orders.lost", hold)
    nc = await connect_nats(nats_proc.url, name="wsgate test lost")
    inv = NatsInvoker(nc)
    try:
        svc = service("orders.lost", timeout_ms=300)
        outcomes: list[InvocationResult | ErrorCode] = []
        inv.start(svc, ACTION, CTX, outcomes.append)
        await eventually(lambda: held, what="the call reaches the service")
        await close_client(nc)  # the answer can no longer come
        await eventually(lambda: outcomes, what="the call is ended")
        assert outcomes == [ErrorCode.UPSTREAM_TIMEOUT]
        assert inv.in_flight() == 0 and svc.pool.slots.free == svc.pool.slots.limit
        # Started on the closed connection: unavailable at once, nothing entered.
        assert await inv.invoke(svc, ACTION, CTX) is ErrorCode.UPSTREAM_UNAVAILABLE
        assert inv.in_flight() == 0 and svc.pool.slots.free == svc.pool.slots.limit
    finally:
        await inv.aclose()
        await close_client(nc)


async def test_many_calls_in_one_batch_each_get_their_own_answer(
    invoker: NatsInvoker, svc_nc: Client
) -> None:
    async def echo(msg: Msg) -> None:
        body = json.loads(msg.data)
        reply = {"reply": [{"type": "orders/GOT", "payload": body["action"]["payload"]}]}
        await msg.respond(json.dumps(reply).encode())

    await responder(svc_nc, "orders.many", echo)
    svc = service("orders.many", cap=64)
    actions = [Action(type="orders/GET", payload=msgspec.Raw(str(i).encode())) for i in range(50)]
    results = await asyncio.gather(*(invoker.invoke(svc, a, CTX) for a in actions))
    got = []
    for result in results:
        assert isinstance(result, InvocationResult)
        got.append(bytes(result.replies[0].payload or b""))
    assert got == [str(i).encode() for i in range(50)]
    assert invoker.in_flight() == 0 and svc.pool.slots.free == 64


async def test_a_subject_that_would_break_the_command_is_unavailable(
    invoker: NatsInvoker,
) -> None:
    svc = service("orders.x 9")
    assert await invoker.invoke(svc, ACTION, CTX) is ErrorCode.UPSTREAM_UNAVAILABLE
    assert invoker.in_flight() == 0 and svc.pool.slots.free == svc.pool.slots.limit


async def test_a_call_while_reconnecting_is_unavailable_at_once_and_after_it_answered() -> None:
    with nats_server() as server:
        nc = await connect_nats(server.url, name="wsgate test reconnecting")
        inv = NatsInvoker(nc)
        try:
            server.stop()
            await eventually(lambda: not nc.is_connected, what="the connection is lost")
            svc = service("orders.away", timeout_ms=5000)
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert await inv.invoke(svc, ACTION, CTX) is ErrorCode.UPSTREAM_UNAVAILABLE
            assert loop.time() - started < 1.0  # not its 5 s timeout
            assert inv.in_flight() == 0 and svc.pool.slots.free == svc.pool.slots.limit
            assert nc.pending_data_size == 0  # nothing buffered for after the reconnect
            server.start()  # same port: nats-py reconnects and subscribes the replies again
            await eventually(lambda: nc.is_connected, 10.0, what="reconnected")
            svc_conn = await nats.connect(server.url)
            try:

                async def answer(msg: Msg) -> None:
                    await msg.respond(json.dumps(ANSWER).encode())

                await responder(svc_conn, "orders.away", answer)
                await on_server(nc)  # our reply subscription is on the new server too
                assert isinstance(await inv.invoke(svc, ACTION, CTX), InvocationResult)
            finally:
                await close_client(svc_conn)
        finally:
            await inv.aclose()
            await close_client(nc)


async def test_a_sender_that_breaks_ends_its_calls_internal_and_the_next_call_works(
    invoker: NatsInvoker, svc_nc: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def answer(msg: Msg) -> None:
        await msg.respond(b"")

    await responder(svc_nc, "orders.broken", answer)
    svc = service("orders.broken")
    assert await invoker.invoke(svc, ACTION, CTX) == InvocationResult()

    async def broken(nc: Client, command: bytes) -> None:
        raise RuntimeError("a bug in the writer")

    with monkeypatch.context() as patch:
        patch.setattr(nats_invoker, "write", broken)
        assert await invoker.invoke(svc, ACTION, CTX) is ErrorCode.INTERNAL
    assert invoker.in_flight() == 0 and svc.pool.slots.free == svc.pool.slots.limit
    assert await invoker.invoke(svc, ACTION, CTX) == InvocationResult()
