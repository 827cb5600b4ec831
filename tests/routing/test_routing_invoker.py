"""HttpInvoker against real aiohttp servers on loopback (no HTTP mocks)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from tests.helpers import eventually
from wsgate.protocol.codes import ErrorCode
from wsgate.protocol.envelope import Action, Outbound, decode_action, encode
from wsgate.routing import (
    HttpInvoker,
    InvocationContext,
    InvocationResult,
    RouteTable,
    Service,
    Target,
    verify,
)
from wsgate.routing.trace import valid_traceparent

SECRET = "shared-hmac-secret"
CTX = InvocationContext(
    connectionId="n1.Zk3",
    userId="u7",
    sessionId="s1",
    hub="acme",
    channel="acme:orders/42",
    orgs=("acme",),
    teams=("red",),
    roles=("staff",),
    node="n1",
    requestId="r-1",
    receivedAt=1764130000.123,
)
ACTION_BYTES = b'{"type":"orders/GET","payload":{"id": 42,  "odd":[1 ,2]},"meta":{"id":"c17"}}'


def action() -> Action:
    decoded = decode_action(ACTION_BYTES)
    assert isinstance(decoded, Action)
    return decoded


@pytest.fixture
async def invoker() -> AsyncIterator[HttpInvoker]:
    inv = HttpInvoker()
    yield inv
    await inv.aclose()


def make_service(
    clock: Any, *urls: str, timeout_ms: int = 2000, cap: int = 256, secret: str = SECRET
) -> tuple[RouteTable, Service]:
    table = RouteTable(clock=clock)
    table.add_service("svc", urls[0], timeout_ms=timeout_ms, secret=secret, max_concurrency=cap)
    for i, url in enumerate(urls[1:]):
        table.register("svc", url, ["svc/*"], ttl_s=3600)
        assert i < 10
    table.add_route("svc/*", "svc")
    service = table.lookup("svc/X")
    assert service is not None
    return table, service


async def test_200_reply_and_publish(upstream: Any, invoker: HttpInvoker, clock: Any) -> None:
    _, base = upstream
    _, service = make_service(clock, f"{base}/reply")
    result = await invoker.invoke(service, action(), CTX, None)
    assert isinstance(result, InvocationResult)
    [reply] = result.replies
    assert isinstance(reply, Outbound)
    assert encode(reply) == (
        b'{"type":"orders/GOT","payload":{"id":1},"meta":{"channel":"acme:orders/1"}}'
    )
    first, second = result.publishes
    assert first.to == Target(channel="acme:orders/1")
    assert encode(first.action.outbound()) == b'{"type":"orders/CHANGED","payload":[1]}'
    assert second.to == Target(user="u9") and second.exclude == Target(connection="n1.abc")


async def test_request_body_headers_and_signature(
    upstream: Any, invoker: HttpInvoker, clock: Any
) -> None:
    up, base = upstream
    _, service = make_service(clock, f"{base}/nocontent")
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert await invoker.invoke(service, action(), CTX, traceparent) == InvocationResult()
    [(_, headers, body)] = up.requests
    # the payload is embedded byte for byte: never decoded and re-encoded
    assert b'"payload":{"id": 42,  "odd":[1 ,2]}' in body
    sent = msgspec.json.decode(body)
    assert sent["action"] == {
        "type": "orders/GET",
        "payload": {"id": 42, "odd": [1, 2]},
        "meta": {"id": "c17"},
    }
    assert sent["context"] == {
        "connectionId": "n1.Zk3",
        "userId": "u7",
        "sessionId": "s1",
        "auth": "anonymous",  # the field's default: CTX names no credential
        "hub": "acme",
        "channel": "acme:orders/42",
        "orgs": ["acme"],
        "teams": ["red"],
        "roles": ["staff"],
        "node": "n1",
        "requestId": "r-1",
        "receivedAt": 1764130000.123,
    }
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Wsgate-Connection-Id"] == "n1.Zk3"
    assert headers["X-Wsgate-Request-Id"] == "r-1"
    assert headers["traceparent"] == traceparent
    signature = headers["X-Wsgate-Signature"]
    assert verify(SECRET, signature, body, now=time.time())
    assert not verify(SECRET, signature, body.replace(b"u7", b"u8"), now=time.time())
    assert not verify("wrong", signature, body, now=time.time())


async def test_traceparent_generated_when_absent_or_invalid(
    upstream: Any, invoker: HttpInvoker, clock: Any
) -> None:
    up, base = upstream
    _, service = make_service(clock, f"{base}/accepted", secret="")
    assert await invoker.invoke(service, action(), CTX, None) == InvocationResult()
    assert await invoker.invoke(service, action(), CTX, "00-garbage") == InvocationResult()
    generated = [h["traceparent"] for _, h, _ in up.requests]
    assert all(valid_traceparent(t) for t in generated)
    assert generated[0] != generated[1]
    # no secret: no signature header
    assert all("X-Wsgate-Signature" not in h for _, h, _ in up.requests)


@pytest.mark.parametrize(
    ("kind", "code", "down"),
    [
        ("error", ErrorCode.UPSTREAM_ERROR, False),
        ("unavailable", ErrorCode.UPSTREAM_ERROR, True),
        ("notfound", ErrorCode.UPSTREAM_ERROR, False),
        ("badjson", ErrorCode.UPSTREAM_ERROR, False),
        ("wrongshape", ErrorCode.UPSTREAM_ERROR, False),
        ("badtype", ErrorCode.UPSTREAM_ERROR, False),
        ("badtarget", ErrorCode.UPSTREAM_ERROR, False),
        ("huge", ErrorCode.UPSTREAM_ERROR, False),
    ],
)
async def test_failures_map_to_codes(
    upstream: Any, clock: Any, kind: str, code: ErrorCode, down: bool
) -> None:
    _, base = upstream
    _, service = make_service(clock, f"{base}/{kind}")
    invoker = HttpInvoker(max_response_bytes=4096)
    try:
        assert await invoker.invoke(service, action(), CTX, None) is code
    finally:
        await invoker.aclose()
    [inst] = service.instances
    assert inst.healthy(clock()) is not down
    assert invoker.stats.failures[code] == 1


async def test_timeout(upstream: Any, invoker: HttpInvoker, clock: Any) -> None:
    _, base = upstream
    _, service = make_service(clock, f"{base}/slow", timeout_ms=200)
    started = time.monotonic()
    assert await invoker.invoke(service, action(), CTX, None) is ErrorCode.UPSTREAM_TIMEOUT
    assert time.monotonic() - started < 0.9
    assert not service.instances[0].healthy(clock())


async def test_refused_connection_is_unavailable(
    invoker: HttpInvoker, clock: Any, refused_url: str
) -> None:
    _, service = make_service(clock, refused_url)
    assert await invoker.invoke(service, action(), CTX, None) is ErrorCode.UPSTREAM_UNAVAILABLE
    assert not service.instances[0].healthy(clock())
    # while it is down, calls fail at once without trying it
    assert await invoker.invoke(service, action(), CTX, None) is ErrorCode.UPSTREAM_UNAVAILABLE


async def test_dns_failure_is_unavailable(invoker: HttpInvoker, clock: Any) -> None:
    _, service = make_service(clock, "http://no-such-host.invalid/actions")
    assert await invoker.invoke(service, action(), CTX, None) is ErrorCode.UPSTREAM_UNAVAILABLE


async def test_refused_instance_traffic_moves_to_the_healthy_one(
    upstream: Any, invoker: HttpInvoker, clock: Any, refused_url: str
) -> None:
    up, base = upstream
    table, service = make_service(clock, refused_url, f"{base}/nocontent")
    for _ in range(4):  # the refused one is skipped, the request is not lost
        assert await invoker.invoke(service, action(), CTX, None) == InvocationResult()
    assert up.hits("nocontent") == 4
    healthy = {i["url"]: i["healthy"] for i in table.snapshot()[0]["instances"]}
    assert healthy == {refused_url: False, f"{base}/nocontent": True}


async def test_round_robin_back_off_and_recovery(
    upstream: Any, serve: Any, invoker: HttpInvoker, clock: Any
) -> None:
    up, base = upstream
    other = type(up)()
    other_base = await serve(other.app())
    _, service = make_service(clock, f"{base}/nocontent", f"{other_base}/toggle")
    other.failing = True

    results = [await invoker.invoke(service, action(), CTX, None) for _ in range(6)]
    assert results.count(ErrorCode.UPSTREAM_ERROR) == 1  # the one call that reached it
    assert (up.hits("nocontent"), other.hits("toggle")) == (5, 1)

    clock.advance(5.1)  # back-off over: it gets a trial, fails, back-off doubles to 10 s
    results = [await invoker.invoke(service, action(), CTX, None) for _ in range(4)]
    assert other.hits("toggle") == 2
    clock.advance(5.1)
    for _ in range(4):
        await invoker.invoke(service, action(), CTX, None)
    assert other.hits("toggle") == 2  # still out
    clock.advance(5.0)

    other.failing = False  # it recovers: round robin over both again
    for _ in range(6):
        assert await invoker.invoke(service, action(), CTX, None) == InvocationResult()
    assert other.hits("toggle") == 5
    assert service.instances[1].failures == 0


async def test_back_off_doubles_up_to_the_cap(clock: Any) -> None:
    table = RouteTable(clock=clock, backoff_min_s=5, backoff_max_s=60)
    table.add_service("s", "http://s/")
    table.add_service("s", "http://t/")
    table.add_route("*", "s")
    service = table.lookup("x")
    assert service is not None
    inst, other = service.instances
    waits = []
    for _ in range(6):
        assert service.mark_failed(inst)
        assert not service.mark_failed(inst)  # concurrent failures count once
        waits.append(inst.down_until - clock())
        assert {service.pick() for _ in range(3)} == {other}
        clock.advance(waits[-1])
        assert inst in {service.pick() for _ in range(3)}
    assert waits == [5, 10, 20, 40, 60, 60]
    assert service.mark_ok(inst) and inst.failures == 0


async def test_a_lone_instance_is_never_shut_out(clock: Any) -> None:
    """Panic mode: when every instance is down, the one back soonest still gets calls."""
    table = RouteTable(clock=clock, backoff_min_s=5, backoff_max_s=60)
    table.add_service("s", "http://a/")
    table.add_service("s", "http://b/")
    table.add_route("*", "s")
    service = table.lookup("x")
    assert service is not None
    a, b = service.instances
    service.mark_failed(a)
    service.mark_failed(a)  # still one failure: concurrent
    clock.advance(1)
    service.mark_failed(b)
    assert service.pick() is a  # a's back-off ends first


async def test_concurrency_cap(upstream: Any, invoker: HttpInvoker, clock: Any) -> None:
    up, base = upstream
    _, service = make_service(clock, f"{base}/hold", cap=1, timeout_ms=5000)
    first = asyncio.ensure_future(invoker.invoke(service, action(), CTX, None))
    await asyncio.wait_for(up.entered.wait(), 5)
    # the cap is full: a second call waits timeout_ms for a slot, then fails
    service.pool.timeout_ms = 200
    started = time.monotonic()
    assert await invoker.invoke(service, action(), CTX, None) is ErrorCode.UPSTREAM_UNAVAILABLE
    assert 0.15 < time.monotonic() - started < 1.0
    assert up.hits("hold") == 1  # it never reached the service
    # a waiting call gets the slot when the first finishes
    service.pool.timeout_ms = 5000
    third = asyncio.ensure_future(invoker.invoke(service, action(), CTX, None))
    await eventually(lambda: len(service.pool.slots._waiters) == 1, what="the third call in line")
    assert not third.done() and up.hits("hold") == 1
    up.release.set()
    assert await first == InvocationResult()
    assert await third == InvocationResult()
    assert service.instances[0].healthy(clock())


async def test_notify_ignores_answers_and_counts_failures(
    upstream: Any, invoker: HttpInvoker, clock: Any, refused_url: str
) -> None:
    up, base = upstream
    _, ok = make_service(clock, f"{base}/reply")
    event = Outbound(type="@@wsgate/CONNECTED", payload={"connectionId": "n1.Zk3"})
    assert await invoker.notify(ok, event, CTX) is None
    [(_, _, body)] = up.requests
    assert msgspec.json.decode(body)["action"]["type"] == "@@wsgate/CONNECTED"
    _, bad = make_service(clock, refused_url)
    await invoker.notify(bad, event, CTX)
    assert invoker.stats.notify_failures == 1


async def test_closed_invoker_is_unavailable(upstream: Any, clock: Any) -> None:
    _, base = upstream
    _, service = make_service(clock, f"{base}/nocontent")
    invoker = HttpInvoker()
    assert await invoker.invoke(service, action(), CTX, None) == InvocationResult()
    await invoker.aclose()
    assert await invoker.invoke(service, action(), CTX, None) is ErrorCode.UPSTREAM_UNAVAILABLE


async def test_failures_are_logged_once_until_a_success(
    upstream: Any, invoker: HttpInvoker, clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    _, base = upstream
    _, bad = make_service(clock, f"{base}/badjson")
    for _ in range(5):
        assert await invoker.invoke(bad, action(), CTX, None) is ErrorCode.UPSTREAM_ERROR
    assert len([r for r in caplog.records if "svc" in r.getMessage()]) == 1
    assert invoker.stats.failures[ErrorCode.UPSTREAM_ERROR] == 5


@pytest.mark.parametrize("rid", ["r-1", ""])
@pytest.mark.parametrize("secret", [SECRET, ""])
async def test_header_lines_with_the_kept_connection_line_are_the_formatted_ones(
    clock: Any, rid: str, secret: str
) -> None:
    """The per-connection opening line kept in ``_openings`` gives the lines the
    plain formatting gives, on a miss and on a hit; the map stays bounded."""
    from wsgate.routing import http_invoker
    from wsgate.routing.signature import sign

    invoker = HttpInvoker(wall_clock=lambda: 1764130000.9)
    _, service = make_service(clock, "http://127.0.0.1:9/x", secret=secret)
    ctx = msgspec.structs.replace(CTX, requestId=rid)
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    body = b'{"some":"body"}'
    expected = f"X-Wsgate-Connection-Id: {ctx.connectionId}\r\ntraceparent: {tp}\r\n"
    if rid:
        expected += f"X-Wsgate-Request-Id: {rid}\r\n"
    if secret:
        expected += f"X-Wsgate-Signature: {sign(secret, body, 1764130000)}\r\n"
    http_invoker._openings.clear()
    for _ in range(2):  # made, then kept
        assert invoker._headers(service, body, ctx, tp) == expected.encode()
    assert http_invoker._openings == {ctx.connectionId: expected[: expected.index("00-")]}
    for i in range(http_invoker._OPENINGS_MAX + 10):
        other = msgspec.structs.replace(ctx, connectionId=f"n1.c{i}")
        assert invoker._headers(service, body, other, tp).startswith(
            f"X-Wsgate-Connection-Id: n1.c{i}\r\n".encode()
        )
        assert len(http_invoker._openings) <= http_invoker._OPENINGS_MAX


@pytest.mark.parametrize(
    "bad",
    [{"connectionId": "n1.x\r\nX-Admin: 1"}, {"requestId": "r\n1"}, {"connectionId": "n1.\x00"}],
)
async def test_an_unprintable_id_is_never_written_into_the_head(
    upstream: Any, invoker: HttpInvoker, clock: Any, bad: dict[str, str]
) -> None:
    up, base = upstream
    _, service = make_service(clock, f"{base}/nocontent")
    ctx = msgspec.structs.replace(CTX, **bad)
    for _ in range(2):  # a refused id is not kept: refused again
        assert await invoker.invoke(service, action(), ctx, None) is ErrorCode.INTERNAL
    assert up.requests == []
    assert await invoker.invoke(service, action(), CTX, None) == InvocationResult()
    fut: asyncio.Future[InvocationResult | ErrorCode] = asyncio.get_running_loop().create_future()
    invoker.start(service, action(), ctx, fut.set_result)  # the pooled path, without a task
    assert not fut.done()  # never told from within start
    assert await fut is ErrorCode.INTERNAL
    assert len(up.requests) == 1 and service.pool.slots.free == 256  # its slot came back
