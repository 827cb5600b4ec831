"""Discovery of a real reflecting target: routes follow restarts and outages while running."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.certs import self_signed
from tests.grpc_services.server import SERVICE, ModuleServer
from tests.helpers import eventually
from wsgate.config import from_mapping
from wsgate.protocol.codes import ErrorCode
from wsgate.protocol.envelope import Action
from wsgate.routing.context import InvocationContext
from wsgate.routing.grpc_discovery import MISSES_TO_DROP, GrpcDiscovery
from wsgate.routing.grpc_invoker import GrpcInvoker, GrpcTarget
from wsgate.routing.results import InvocationResult
from wsgate.routing.table import RouteTable

ADDED = f"{SERVICE}/Added"
ECHO = f"{SERVICE}/Echo"


async def call(
    table: RouteTable, invoker: GrpcInvoker, type_: str, payload: bytes = b'{"tag": "t"}'
) -> InvocationResult | ErrorCode:
    service = table.lookup(type_)
    assert service is not None
    action = Action(type=type_, payload=msgspec.Raw(payload))
    return await invoker.invoke(service, action, InvocationContext(connectionId="n1.x"))


@pytest.fixture
async def running() -> Any:
    server = ModuleServer()
    await server.start()
    config = from_mapping(
        {"grpc": [{"target": server.target, "discover_every_s": 0.05, "timeout_ms": 500}]}, env={}
    ).grpc[0]
    table = RouteTable()
    invoker = GrpcInvoker([GrpcTarget(config.target)])
    discovery = GrpcDiscovery(table, invoker, [config])
    await discovery.start()
    state = {"server": server, "table": table, "invoker": invoker, "discovery": discovery}
    yield state
    await discovery.aclose()
    await invoker.aclose()
    await state["server"].stop()


async def test_a_target_restarted_with_a_new_method_is_routable_after_the_next_round(
    running: Any,
) -> None:
    table, invoker = running["table"], running["invoker"]
    assert table.lookup(ADDED) is None
    port = running["server"].port
    await running["server"].stop()
    running["server"] = newer = ModuleServer(port, added=True)
    await newer.start()
    await eventually(lambda: table.lookup(ADDED) is not None, what="the new method routed")
    result = await call(table, invoker, ADDED)
    assert isinstance(result, InvocationResult), result
    assert result.replies[0].payload == {"tag": "added:t"}


async def test_a_target_that_goes_away_is_unavailable_then_its_routes_drop(running: Any) -> None:
    table, invoker, discovery = running["table"], running["invoker"], running["discovery"]
    service = table.lookup(ECHO)
    assert service is not None
    await running["server"].stop()
    action = Action(type=ECHO, payload=msgspec.Raw(b"{}"))
    result = await invoker.invoke(service, action, InvocationContext(connectionId="n1.x"))
    assert result is ErrorCode.UPSTREAM_UNAVAILABLE
    rounds = discovery.rounds
    await eventually(lambda: table.lookup(ECHO) is None, what="the routes dropped")
    assert discovery.rounds - rounds >= MISSES_TO_DROP
    assert not any(r["source"] == "grpc" for r in table.snapshot())


async def test_a_target_back_after_an_outage_is_routed_again(running: Any) -> None:
    table = running["table"]
    port = running["server"].port
    await running["server"].stop()
    await eventually(lambda: table.lookup(ECHO) is None, what="the routes dropped")
    running["server"] = again = ModuleServer(port)
    await again.start()
    await eventually(lambda: table.lookup(ECHO) is not None, what="routed again")


async def test_a_target_down_at_start_is_routed_once_it_comes_up() -> None:
    server = ModuleServer()
    await server.start()
    port = server.port
    await server.stop()  # a port known to be free of it
    config = from_mapping(
        {"grpc": [{"target": f"127.0.0.1:{port}", "discover_every_s": 0.05, "timeout_ms": 500}]},
        env={},
    ).grpc[0]
    table = RouteTable()
    invoker = GrpcInvoker([GrpcTarget(config.target)])
    discovery = GrpcDiscovery(table, invoker, [config])
    later = ModuleServer(port)
    try:
        await discovery.start()
        assert table.lookup(ECHO) is None
        await later.start()
        await eventually(lambda: table.lookup(ECHO) is not None, what="routed once up")
    finally:
        await discovery.aclose()
        await invoker.aclose()
        await later.stop()


async def test_a_target_down_at_start_is_waited_for_quietly_then_logged_once_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Down at start is normal: one INFO line, no WARNING, no traceback; retried each round."""
    server = ModuleServer()
    await server.start()
    port = server.port
    await server.stop()
    config = from_mapping(
        {"grpc": [{"target": f"127.0.0.1:{port}", "discover_every_s": 0.05, "timeout_ms": 500}]},
        env={},
    ).grpc[0]
    table = RouteTable()
    invoker = GrpcInvoker([GrpcTarget(config.target)])
    discovery = GrpcDiscovery(table, invoker, [config])
    later = ModuleServer(port)
    caplog.set_level(logging.DEBUG, logger="wsgate.routing.grpc_discovery")
    try:
        await discovery.start()
        await eventually(lambda: discovery.rounds >= 3, what="rounds retried while down")
        mine = [r for r in caplog.records if r.name == "wsgate.routing.grpc_discovery"]
        assert [r.levelno for r in mine] == [logging.INFO], [r.getMessage() for r in mine]
        assert mine[0].getMessage().startswith(
            f"grpc target 127.0.0.1:{port}: waiting for it to answer (reflection failed: "
        )
        assert all(r.exc_info is None for r in mine)
        await later.start()
        await eventually(lambda: table.lookup(ECHO) is not None, what="routed once up")
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        # Once it has answered, going away is worth a warning (once).
        await later.stop()
        await eventually(lambda: table.lookup(ECHO) is None, what="the routes dropped")
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("reflection" in m or "UNAVAILABLE" in m for m in warned), warned
    finally:
        await discovery.aclose()
        await invoker.aclose()
        await later.stop()


async def test_a_tls_target_is_reached_with_its_ca_and_refused_without(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    (tmp_path / "other").mkdir()
    other, _ = self_signed(tmp_path / "other")  # a CA that did not sign the server's
    async with ModuleServer(tls=(cert, key)) as server:
        for ca, routed in ((str(cert), True), (str(other), False)):
            config = from_mapping(
                {
                    "grpc": [
                        {"target": server.target, "tls": True, "ca_file": ca, "timeout_ms": 1000}
                    ]
                },
                env={},
            ).grpc[0]
            table = RouteTable()
            invoker = GrpcInvoker(
                [GrpcTarget(config.target, tls=True, roots=Path(ca).read_bytes())]
            )
            discovery = GrpcDiscovery(table, invoker, [config])
            try:
                await discovery.start()
                assert (table.lookup(ECHO) is not None) is routed, ca
                if routed:
                    result = await call(table, invoker, ECHO, b"{}")
                    assert isinstance(result, InvocationResult), result
                    assert result.replies[0].type == "wsgate.test.v1.EchoResponse"
            finally:
                await discovery.aclose()
                await invoker.aclose()
