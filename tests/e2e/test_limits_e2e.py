"""Abuse resistance over real sockets: floods, caps, drain."""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from ..helpers import eventually
from .gateway import ORIGIN, make_config, running
from .services import with_service


async def test_a_flooder_is_closed_4429_and_others_keep_working() -> None:
    config = make_config(limits={"default_rate": "50/1s", "default_burst": 50, "abuse_refusals": 20})
    async with running(config) as gw, gw.peer("calm") as calm, gw.peer("flood") as flood:
        codes: list[str] = []
        with contextlib.suppress(ConnectionClosed):
            for i in range(2000):  # bounded: closed long before the end
                await flood.send("chat/X", {"i": i})
                if i % 50 == 0:
                    await asyncio.sleep(0.001)  # pacing: let the server's answers come back
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(3000):
                codes.append((await flood.recv())["payload"]["code"])
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429
        assert "RATE_LIMITED" in codes
        await calm.send("@@wsgate/PING", 1, id="p")
        assert (await calm.expect("@@wsgate/PONG"))["meta"]["inReplyTo"] == "p"


async def test_per_user_connection_cap_refuses_with_error_then_4429() -> None:
    async with running(make_config(limits={"max_connections_per_user": 2})) as gw, \
            gw.peer("alice"), gw.peer("alice"):
        headers = {"Cookie": gw.cookie("alice")}
        async with websockets.connect(gw.url, additional_headers=headers, origin=ORIGIN) as ws:  # type: ignore[arg-type]
            err = json.loads(await asyncio.wait_for(ws.recv(), 3))
            assert err["type"] == "@@wsgate/ERROR" and err["payload"]["code"] == "RATE_LIMITED"
            assert err["payload"]["retryAfterMs"] > 0
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 3)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429


async def test_a_thousand_requests_complete_while_another_connection_floods() -> None:
    async with with_service() as (gw, _), gw.peer("worker") as worker:
        stop = asyncio.Event()

        async def flood() -> int:
            sent = 0
            headers = {"Cookie": gw.cookie("flooder")}
            for _ in range(20):  # reconnect after each 4429, bounded
                if stop.is_set():
                    break
                with contextlib.suppress(ConnectionClosed, OSError, TimeoutError):
                    async with websockets.connect(gw.url, additional_headers=headers, origin=ORIGIN) as ws:  # type: ignore[arg-type]
                        for _ in range(100_000):
                            if stop.is_set():
                                break
                            await ws.send('{"type":"svc/ECHO","payload":"spam"}')
                            sent += 1
                            if sent % 100 == 0:
                                await asyncio.sleep(0)  # pacing: the worker's calls go on
                await asyncio.sleep(0.05)  # pacing: a flooder reconnecting after its 4429
            return sent

        flooder = asyncio.create_task(flood())
        try:
            for i in range(1000):
                await worker.send("svc/ECHO", {"i": i}, id=f"r{i}")
                got = await worker.expect("svc/ECHOED", timeout=5)
                assert got["meta"]["inReplyTo"] == f"r{i}"
                assert got["payload"]["got"] == {"i": i}
        finally:
            stop.set()
            sent = await asyncio.wait_for(flooder, 30)
        assert sent > 1000  # it really flooded meanwhile


async def test_drain_finishes_in_flight_calls_then_closes_1012_and_readyz_is_503() -> None:
    async with with_service() as (gw, svc), gw.peer("alice") as alice, aiohttp.ClientSession() as http:

        async def service_busy() -> bool:
            async with http.get(f"{svc.url}/events") as resp:
                return any(e["type"] == "svc/SLOW" for e in await resp.json())

        async def not_ready() -> bool:
            async with http.get(f"{gw.node.api_url}/readyz") as resp:
                return resp.status == 503

        await alice.send("svc/SLOW", {"n": 1}, id="s")  # the service takes 0.5 s
        await eventually(service_busy, what="the slow call at the service")
        stopping = asyncio.create_task(gw.node.stop())
        await eventually(not_ready, what="readyz 503 while draining")
        got = await alice.expect("svc/SLOWED")
        assert got["meta"]["inReplyTo"] == "s" and got["payload"] == {"n": 1}
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(10):
                await alice.recv(5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
        assert "reconnect" in closed.value.rcvd.reason
        await stopping


async def test_in_flight_calls_are_capped_per_connection_and_per_user() -> None:
    async with with_service(routing={"max_in_flight": 2, "max_in_flight_per_user": 3}) as (gw, _), \
            gw.peer("mia") as tab1, gw.peer("mia") as tab2:
        for i in range(3):  # 0.5 s each: all still in flight when the next is sent
            await tab1.send("svc/SLOW", {"i": i}, id=f"a{i}")
        refused = await tab1.expect("@@wsgate/ERROR")
        assert refused["payload"]["code"] == "RATE_LIMITED" and refused["meta"]["inReplyTo"] == "a2"
        assert "per connection" in refused["payload"]["message"]
        await tab2.send("svc/SLOW", {"i": 3}, id="b0")  # the user's third call: allowed
        await tab2.send("svc/SLOW", {"i": 4}, id="b1")  # the fourth: past the per-user cap
        refused = await tab2.expect("@@wsgate/ERROR")
        assert refused["payload"]["code"] == "RATE_LIMITED" and refused["meta"]["inReplyTo"] == "b1"
        assert "per user" in refused["payload"]["message"]
        assert (await tab2.expect("svc/SLOWED"))["meta"]["inReplyTo"] == "b0"
        await tab2.send("svc/SLOW", {"i": 5}, id="b2")  # answers came back: room again
        assert (await tab2.expect("svc/SLOWED"))["meta"]["inReplyTo"] == "b2"


async def test_a_per_user_cap_of_0_is_off_as_documented() -> None:
    """``routing.max_in_flight_per_user = 0``: only the per-connection cap applies."""
    async with with_service(routing={"max_in_flight": 2, "max_in_flight_per_user": 0}) as (gw, _), \
            gw.peer("mia") as tab1, gw.peer("mia") as tab2, gw.peer("mia") as tab3:
        tabs = (tab1, tab2, tab3)
        for n, tab in enumerate(tabs):  # six calls of one user in flight at once (0.5 s each)
            for i in range(2):
                await tab.send("svc/SLOW", {"i": i}, id=f"t{n}-{i}")
        for n, tab in enumerate(tabs):
            answers = [await tab.expect("svc/SLOWED"), await tab.expect("svc/SLOWED")]
            assert sorted(a["meta"]["inReplyTo"] for a in answers) == [f"t{n}-0", f"t{n}-1"]
