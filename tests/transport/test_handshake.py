"""The HTTP side: origin check, cookie redirect/4401, plain GETs, subprotocol."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.transport.conftest import Start
from tests.transport.helpers import COOKIE, OP_TEXT, USER, RawClient
from wsgate.protocol import SUBPROTOCOL
from wsgate.transport import HttpResponse
from wsgate.transport.protocol import _SHARED


def url(port: int, path: str = "/ws") -> str:
    return f"ws://127.0.0.1:{port}{path}"


async def test_origin_not_allowed_gets_403(start: Start) -> None:
    listener, handler = await start()
    with pytest.raises(InvalidStatus) as info:
        async with connect(
            url(listener.port),
            origin=websockets.Origin("http://evil.example"),
            additional_headers={"Cookie": COOKIE},
            open_timeout=5,
        ):
            pass
    assert info.value.response.status_code == 403
    assert handler.sessions == []


async def test_allowed_origin_and_no_origin_are_accepted(start: Start) -> None:
    listener, handler = await start()
    async with connect(
        url(listener.port),
        origin=websockets.Origin("http://good.example"),
        additional_headers={"Cookie": COOKIE},
        open_timeout=5,
    ):
        pass
    # No Origin header at all: not a browser, allowed.
    client = await RawClient.connect(listener.port)
    assert client.status == 101
    await client.aclose()
    sessions = await handler.wait_sessions(2)
    assert sessions[0].principal == USER
    assert sessions[1].peer == "127.0.0.1"


async def test_star_allows_any_origin(start: Start) -> None:
    listener, handler = await start(allowed_origins=["*"])
    async with connect(
        url(listener.port),
        origin=websockets.Origin("http://anything.example"),
        additional_headers={"Cookie": COOKIE},
        open_timeout=5,
    ):
        pass
    await handler.wait_sessions(1)


async def test_plain_get_without_cookie_redirects_to_sign_in(start: Start) -> None:
    listener, _ = await start()
    client = await RawClient.connect(listener.port, path="/", headers={}, upgrade=False)
    assert client.status == 302
    assert client.headers["location"] == "/sign-in"
    await client.aclose()


async def test_plain_get_with_cookie_is_404(start: Start) -> None:
    listener, _ = await start()
    client = await RawClient.connect(listener.port, path="/other", upgrade=False)
    assert client.status == 404
    await client.aclose()
    # The WebSocket path without an upgrade is a plain GET too.
    client = await RawClient.connect(listener.port, path="/ws", headers={}, upgrade=False)
    assert client.status == 302
    await client.aclose()


async def test_plain_get_answer_wins(start: Start) -> None:
    seen: list[str] = []

    def plain_get(path: str, headers: object) -> HttpResponse | None:
        seen.append(path)
        if path.startswith("/index.html"):
            return HttpResponse(200, (("Content-Type", "text/html"),), b"<p>hi</p>")
        return None

    listener, _ = await start(plain_get=plain_get)
    client = await RawClient.connect(
        listener.port, path="/index.html?x=1", headers={}, upgrade=False
    )
    assert client.status == 200
    assert client.headers["content-type"] == "text/html"
    async with __import__("asyncio").timeout(5):
        body = await client.reader.readexactly(int(client.headers["content-length"]))
    assert body == b"<p>hi</p>"
    await client.aclose()
    client = await RawClient.connect(listener.port, path="/nope", headers={}, upgrade=False)
    assert client.status == 302  # plain_get declined: no cookie -> sign in
    await client.aclose()
    assert seen == ["/index.html?x=1", "/nope"]


async def test_upgrade_without_cookie_gets_error_then_4401(start: Start) -> None:
    listener, handler = await start()
    client = await RawClient.connect(listener.port, headers={})
    assert client.status == 101
    op, fin, payload = await client.recv_frame()
    assert (op, fin) == (OP_TEXT, True)
    assert json.loads(payload) == {
        "type": "@@wsgate/ERROR",
        "error": True,
        "payload": {"code": "UNAUTHENTICATED", "message": "sign in", "signInUrl": "/sign-in"},
    }
    data, code = await client.recv_until_close()
    assert (data, code) == ([], 4401)
    await client.aclose()
    assert handler.sessions == []


async def test_upgrade_without_cookie_websockets_client(start: Start) -> None:
    listener, _ = await start()
    async with connect(url(listener.port), open_timeout=5) as ws:
        first = json.loads(await ws.recv())
        assert first["payload"]["code"] == "UNAUTHENTICATED"
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 4401


async def test_subprotocol_offered_is_answered(start: Start) -> None:
    listener, _ = await start()
    async with connect(
        url(listener.port),
        subprotocols=[websockets.Subprotocol("other"), websockets.Subprotocol(SUBPROTOCOL)],
        additional_headers={"Cookie": COOKIE},
        open_timeout=5,
    ) as ws:
        assert ws.subprotocol == SUBPROTOCOL


async def test_other_subprotocols_get_none(start: Start) -> None:
    listener, _ = await start()
    client = await RawClient.connect(
        listener.port, headers={"Cookie": COOKIE, "Sec-WebSocket-Protocol": "mqtt, other"}
    )
    assert client.status == 101
    assert "sec-websocket-protocol" not in client.headers
    await client.aclose()
    client = await RawClient.connect(
        listener.port, headers={"Cookie": COOKIE, "Sec-WebSocket-Protocol": f"x, {SUBPROTOCOL}"}
    )
    assert client.headers["sec-websocket-protocol"] == SUBPROTOCOL
    await client.aclose()


async def test_request_head_past_16_kib_gets_431_then_close(start: Start) -> None:
    listener, handler = await start()
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    try:
        head = (
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Cookie: {COOKIE}\r\nX-Pad: {'a' * 17_000}\r\n\r\n"
        )
        writer.write(head.encode())
        async with asyncio.timeout(5):
            answer = await reader.read(65536)
            rest = await reader.read(65536)  # then EOF: the server closed TCP
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]
        assert rest == b""
        assert handler.sessions == []
    finally:
        writer.close()


async def test_request_head_without_end_past_16_kib_gets_431(start: Start) -> None:
    listener, _handler = await start()
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    try:
        # Sent in pieces, never finished: the head passes 16 KiB without "\r\n\r\n".
        writer.write(b"GET /ws HTTP/1.1\r\nX-Pad: ")
        for _ in range(20):
            writer.write(b"b" * 1000)
            await writer.drain()
        async with asyncio.timeout(5):
            answer = await reader.read(65536)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]
    finally:
        writer.close()


@pytest.mark.parametrize("offer", [None, SUBPROTOCOL])
async def test_handshake_headers_are_freed_after_the_upgrade(start: Start, offer: str | None) -> None:
    """An open connection keeps neither the request's nor the 101's headers (memory
    per idle connection, bench/README.md), and still works."""
    listener, handler = await start()
    headers = {"Cookie": COOKIE, "User-Agent": "probe/1"}
    if offer is not None:
        headers["Sec-WebSocket-Protocol"] = offer
    client = await RawClient.connect(listener.port, headers=headers)
    assert client.status == 101
    (session,) = await handler.wait_sessions(1)
    wst = session.sink._wst  # type: ignore[attr-defined]
    assert len(wst.request.headers) == 0
    assert len(wst.response.headers) == 0
    assert wst.request.method is _SHARED[b"GET"]
    assert wst.request.version is _SHARED[b"HTTP/1.1"]
    session.sink.send(b'{"type":"x"}')
    assert await client.recv_frame() == (OP_TEXT, True, b'{"type":"x"}')
    await client.aclose()
