"""sdk.Publisher against a stub of the internal API (design §5) on loopback.

The stub is a real aiohttp server with the documented paths; its
``PUT /v1/services/{name}`` feeds a real RouteTable, so self-registration is
exercised end to end: Publisher -> HTTP -> RouteTable -> HttpInvoker -> SDK
service.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from aiohttp import web

from tests.helpers import eventually
from wsgate import sdk
from wsgate.protocol.envelope import Action, decode_action
from wsgate.routing import HttpInvoker, InvocationContext, InvocationResult, Publish, RouteTable

KEY = "api-key-1"


class InternalApi:
    def __init__(self, table: RouteTable) -> None:
        self.table = table
        self.calls: list[tuple[str, str, Any]] = []
        self.connections = {"n1.abc"}
        self.refuse = False
        self.refused = 0
        """Requests answered 503 because :attr:`refuse` was set."""

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.auth])
        app.router.add_post("/v1/publish", self.publish)
        app.router.add_delete("/v1/connections/{id}", self.disconnect)
        app.router.add_put("/v1/connections/{id}/channels/{addr}", self.channel)
        app.router.add_delete("/v1/connections/{id}/channels/{addr}", self.channel)
        app.router.add_put("/v1/services/{name}", self.register)
        return app

    @web.middleware
    async def auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {KEY}":
            return web.Response(status=401)
        if self.refuse:
            self.refused += 1
            return web.Response(status=503)
        response: web.StreamResponse = await handler(request)
        return response

    async def publish(self, request: web.Request) -> web.Response:
        body = msgspec.json.decode(await request.read(), type=Publish)  # the documented shape
        self.calls.append(("publish", "", body))
        return web.Response(status=202)

    async def disconnect(self, request: web.Request) -> web.Response:
        cid = request.match_info["id"]
        self.calls.append(("disconnect", cid, None))
        if cid not in self.connections:
            return web.Response(status=404)
        return web.Response(status=204)

    async def channel(self, request: web.Request) -> web.Response:
        path = request.raw_path  # the address arrives URL-encoded, as one segment
        self.calls.append((request.method, request.match_info["id"], path))
        return web.Response(status=204)

    async def register(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls.append(("register", request.match_info["name"], body))
        try:
            self.table.register(
                request.match_info["name"], body["url"], body["actions"], body["ttl"]
            )
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.Response(status=204)


@pytest.fixture
async def api(serve: Any) -> tuple[InternalApi, str]:
    stub = InternalApi(RouteTable())
    return stub, await serve(stub.app())


async def test_publish_disconnect_join_leave(api: Any) -> None:
    stub, base = api
    async with sdk.Publisher(base, KEY) as gw:
        await gw.publish({"channel": "acme:orders/42"}, {"type": "orders/UPDATED", "payload": 1})
        await gw.publish({"user": "u7"}, {"type": "x/Y"}, exclude_connection="n1.abc")
        assert await gw.disconnect("n1.abc") is True
        assert await gw.disconnect("n1.gone") is False
        await gw.join("n1.abc", "acme:orders/42")
        await gw.leave("n1.abc", "acme:orders/42")
    first, second = stub.calls[0][2], stub.calls[1][2]
    assert (first.to.channel, first.action.type, first.exclude) == (
        "acme:orders/42",
        "orders/UPDATED",
        None,
    )
    assert second.to.user == "u7" and second.exclude.connection == "n1.abc"
    assert stub.calls[4:] == [
        ("PUT", "n1.abc", "/v1/connections/n1.abc/channels/acme%3Aorders%2F42"),
        ("DELETE", "n1.abc", "/v1/connections/n1.abc/channels/acme%3Aorders%2F42"),
    ]


async def test_errors_raise_publish_error(api: Any) -> None:
    _, base = api
    async with sdk.Publisher(base, "wrong-key") as gw:
        with pytest.raises(sdk.PublishError) as info:
            await gw.publish({"hub": "acme"}, {"type": "a"})
        assert info.value.status == 401
    async with sdk.Publisher("http://127.0.0.1:1", KEY, timeout_s=2) as gw:
        with pytest.raises(sdk.PublishError) as info:
            await gw.disconnect("n1.abc")
        assert info.value.status == 0


async def test_self_registration_end_to_end(api: Any, serve: Any) -> None:
    stub, base = api
    service = sdk.Service(secret="reg-secret")

    @service.action("chat/*")
    async def say(action: dict[str, Any], ctx: sdk.Context) -> list[dict[str, Any]]:
        return [{"type": "chat/SAID", "payload": action["payload"]}]

    url = await serve(service.app()) + "/actions"
    stub.table = RouteTable(registered_secret="reg-secret")
    invoker = HttpInvoker()
    try:
        async with sdk.Publisher(base, KEY) as gw:
            with pytest.raises(sdk.PublishError) as info:
                await gw.register("chat", "not a url", ["chat/*"], ttl=30)
            assert info.value.status == 400
            await gw.register("chat", url, ["chat/*"], ttl=30)
        target = stub.table.lookup("chat/SAY")
        assert target is not None and [i.url for i in target.instances] == [url]
        action = decode_action(b'{"type":"chat/SAY","payload":"hi"}')
        assert isinstance(action, Action)
        result = await invoker.invoke(target, action, InvocationContext(connectionId="n1.a"))
        assert isinstance(result, InvocationResult)
        assert [r.type for r in result.replies] == ["chat/SAID"]
    finally:
        await invoker.aclose()


async def test_keep_registered_renews_and_survives_failures(api: Any) -> None:
    stub, base = api
    gw = sdk.Publisher(base, KEY)
    task = gw.keep_registered("chat", "http://127.0.0.1:9/actions", ["chat/*"], ttl=0.3)
    await eventually(lambda: len(stub.calls) >= 3, what="three renewals")
    assert [c[0] for c in stub.calls[:3]] == ["register"] * 3
    stub.refuse = True  # renewals fail and are retried
    await eventually(lambda: stub.refused >= 2, what="a failed renewal retried")
    count = len(stub.calls)
    stub.refuse = False
    await eventually(lambda: len(stub.calls) > count, what="a renewal after the failures")
    assert not task.done()
    await gw.aclose()
    assert task.cancelled()
