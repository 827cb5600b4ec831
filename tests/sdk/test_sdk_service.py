"""wsgate.sdk.Service end to end: HttpInvoker -> real HTTP -> handler -> result."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest

from wsgate import sdk
from wsgate.exceptions import ConfigError, WsgateError
from wsgate.protocol.codes import ErrorCode
from wsgate.protocol.envelope import Action, decode_action, encode
from wsgate.routing import HttpInvoker, InvocationContext, InvocationResult, RouteTable, sign

SECRET = "s3cret"
CTX = InvocationContext(connectionId="n1.abc", userId="u7", hub="acme", roles=("staff",))


def build_service() -> sdk.Service:
    service = sdk.Service(secret=SECRET)

    @service.action("orders/GET")
    async def get(action: dict[str, Any], ctx: sdk.Context) -> list[dict[str, Any]]:
        return [
            {"type": "orders/GOT", "payload": {"id": action["payload"]["id"], "by": ctx.userId}}
        ]

    @service.action("orders/*")
    async def other(action: dict[str, Any], ctx: sdk.Context) -> sdk.Reply:
        return sdk.Reply(
            actions=[{"type": "orders/ACK"}],
            publish=[
                {
                    "to": {"channel": "acme:orders"},
                    "action": {"type": "orders/CHANGED", "payload": action["payload"]},
                    "exclude": {"connection": ctx.connectionId},
                }
            ],
        )

    @service.action("one/*")
    async def one(action: dict[str, Any], ctx: sdk.Context) -> dict[str, Any]:
        return {"type": "one/DONE"}

    @service.action("later/*")
    async def later(action: dict[str, Any], ctx: sdk.Context) -> None:
        return None

    @service.action("boom/*")
    async def boom(action: dict[str, Any], ctx: sdk.Context) -> None:
        raise RuntimeError("database password is hunter2")

    return service


@pytest.fixture
async def gateway(serve: Any) -> AsyncIterator[tuple[RouteTable, HttpInvoker, str]]:
    url = await serve(build_service().app()) + "/actions"
    table = RouteTable()
    table.add_service("orders", url, secret=SECRET, timeout_ms=2000)
    table.add_route("*", "orders")
    invoker = HttpInvoker()
    yield table, invoker, url
    await invoker.aclose()


async def call(table: RouteTable, invoker: HttpInvoker, raw: bytes) -> Any:
    action = decode_action(raw)
    assert isinstance(action, Action)
    service = table.lookup(action.type)
    assert service is not None
    return await invoker.invoke(service, action, CTX, None)


async def test_handlers_end_to_end(gateway: Any) -> None:
    table, invoker, _ = gateway
    got = await call(table, invoker, b'{"type":"orders/GET","payload":{"id":42}}')
    assert isinstance(got, InvocationResult)
    assert [encode(r) for r in got.replies] == [
        b'{"type":"orders/GOT","payload":{"id":42,"by":"u7"}}'
    ]

    put = await call(table, invoker, b'{"type":"orders/PUT","payload":{"x":1}}')
    assert isinstance(put, InvocationResult)
    assert [r.type for r in put.replies] == ["orders/ACK"]
    [pub] = put.publishes
    assert (pub.to.kind, pub.to.value) == ("channel", "acme:orders")
    assert pub.exclude is not None and pub.exclude.connection == "n1.abc"
    assert encode(pub.action.outbound()) == b'{"type":"orders/CHANGED","payload":{"x":1}}'

    one = await call(table, invoker, b'{"type":"one/X"}')
    assert [r.type for r in one.replies] == ["one/DONE"]
    assert await call(table, invoker, b'{"type":"later/X"}') == InvocationResult()


async def test_handler_errors_and_unknown_types(gateway: Any) -> None:
    table, invoker, _ = gateway
    assert await call(table, invoker, b'{"type":"boom/X"}') is ErrorCode.UPSTREAM_ERROR
    assert await call(table, invoker, b'{"type":"nothing/X"}') is ErrorCode.UPSTREAM_ERROR
    # a failing handler does not take the service out for other actions
    ok = await call(table, invoker, b'{"type":"orders/GET","payload":{"id":1}}')
    assert isinstance(ok, InvocationResult)


async def test_wrong_secret_is_refused(serve: Any) -> None:
    url = await serve(build_service().app()) + "/actions"
    table = RouteTable()
    table.add_service("orders", url, secret="not-the-secret")
    table.add_route("*", "orders")
    invoker = HttpInvoker()
    try:
        assert await call(table, invoker, b'{"type":"orders/GET"}') is ErrorCode.UPSTREAM_ERROR
    finally:
        await invoker.aclose()


async def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as resp,
    ):
        return resp.status, await resp.read()


async def test_missing_bad_stale_or_tampered_signatures_get_401(gateway: Any) -> None:
    _, _, url = gateway
    body = msgspec.json.encode(
        {"action": {"type": "orders/GET", "payload": {"id": 1}}, "context": CTX}
    )
    now = int(time.time())
    good = sign(SECRET, body, now)
    assert (await post(url, body, {"X-Wsgate-Signature": good}))[0] == 200
    tampered = body.replace(b'"u7"', b'"u8"')
    assert tampered != body
    for headers, payload in [
        ({}, body),
        ({"X-Wsgate-Signature": good}, tampered),
        ({"X-Wsgate-Signature": sign("wrong", body, now)}, body),
        ({"X-Wsgate-Signature": sign(SECRET, body, now - 301)}, body),
        ({"X-Wsgate-Signature": "t=1,v1=zz"}, body),
    ]:
        status, text = await post(url, payload, headers)
        assert status == 401 and b"hunter2" not in text


async def test_signed_garbage_gets_400(gateway: Any) -> None:
    _, _, url = gateway
    for body in (b"not json", b'{"action": {}, "context": {"connectionId": "x"}}', b"{}"):
        status, _ = await post(
            url, body, {"X-Wsgate-Signature": sign(SECRET, body, int(time.time()))}
        )
        assert status == 400


def test_a_secret_is_required() -> None:
    for secret in ("", [], ["ok", ""]):
        with pytest.raises(
            ConfigError, match="config secret: a Service needs the non-empty secret"
        ):
            sdk.Service(secret=secret)
    assert sdk.verify_signature(SECRET, sign(SECRET, b"x", 100), b"x", now=100)


def test_sdk_refusals_share_the_wsgate_root() -> None:
    assert issubclass(sdk.Refused, WsgateError)
    assert issubclass(sdk.PublishError, WsgateError)
