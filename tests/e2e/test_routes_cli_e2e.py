"""``wsgate routes`` (the CLI, a real process) against a running node whose table has every
source: static routes (HTTP, and NATS with no responders: down), a registration, a gRPC target found by reflection (a real grpcio
server) and a NATS service found over ``$SRV.INFO`` (a real nats-server, the SDK's
NatsService): each row names its source, its target and its health."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from nats.aio.client import Client

from tests.conftest import Serve
from tests.grpc_services.server import SERVICE, ModuleServer
from tests.helpers import eventually, free_port
from tests.servers import WSGATE, ServerProcess
from wsgate.auth.keyring import new_key
from wsgate.config import load
from wsgate.sdk.nats_service import NatsService
from wsgate.sdk.service import Context

from .gateway import ORIGIN, running

pytestmark = pytest.mark.timeout(60)

API_KEY = "k-routes"


def write_config(path: Path, api_port: int, grpc_target: str, nats_url: str, http: str) -> Path:
    path.write_text(f"""
[server]
listen = "127.0.0.1:0"
allowed_origins = ["{ORIGIN}"]
[api]
listen = "127.0.0.1:{api_port}"
keys = ["{API_KEY}"]
[auth]
keys = ["{new_key()}"]
[services.billing]
url = "{http}/static"
[[routes]]
match = "billing/*"
service = "billing"
[services.lonely]
url = "nats:nobody.home"
[[routes]]
match = "lonely/*"
service = "lonely"
[[grpc]]
target = "{grpc_target}"
discover_every_s = 0.05
[discovery.nats]
url = "{nats_url}"
interval_s = 0.2
window_ms = 100
""")
    return path


def rows(output: str) -> dict[str, list[str]]:
    """``wsgate routes``' table by pattern: the row's columns after the pattern."""
    lines = output.strip().splitlines()
    assert lines[0].split()[:4] == ["PATTERN", "SERVICE", "SOURCE", "ROLES"], lines[0]
    table: dict[str, list[str]] = {}
    for line in lines[1:]:
        pattern, *rest = line.split(maxsplit=4)
        table[pattern] = rest
    return table


async def test_wsgate_routes_prints_every_source_with_its_target_and_health(
    tmp_path: Path,
    nats_proc: ServerProcess,
    svc_nc: Client,
    serve: Serve,
) -> None:
    async def handle(request: web.Request) -> web.Response:
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/{path}", handle)
    http = await serve(app)
    service = NatsService("orders")

    @service.action("orders/*")
    async def orders(action: dict[str, Any], ctx: Context) -> Any:
        return None

    async with ModuleServer() as grpc_server:
        config_file = write_config(
            tmp_path / "wsgate.toml", free_port(), grpc_server.target, nats_proc.url, http
        )
        async with running(load(config_file)) as gw:
            await service.start(svc_nc)
            try:
                headers = {"Authorization": f"Bearer {API_KEY}"}
                registration = {"url": f"{http}/registered", "actions": ["carts/*"], "ttl": 60}
                async with (
                    aiohttp.ClientSession() as client,
                    client.put(
                        f"{gw.node.api_url}/v1/services/carts", json=registration, headers=headers
                    ) as resp,
                ):
                    assert resp.status == 200, await resp.text()
                await eventually(
                    lambda: gw.node.routes.lookup("orders/GET") is not None
                    and gw.node.routes.lookup(f"{SERVICE}/Echo") is not None,
                    5.0,
                    what="the NATS service and the gRPC methods discovered",
                )
                async with gw.peer("ada") as peer:  # no responders: the subject is down
                    await peer.send("lonely/HELLO", {}, id="l1")
                    error = await peer.expect("@@wsgate/ERROR")
                    assert error["payload"]["code"] == "UPSTREAM_UNAVAILABLE"
                done = await asyncio.to_thread(
                    subprocess.run,
                    [*WSGATE, "routes", "--config", str(config_file)],
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
            finally:
                await service.stop()
    assert done.returncode == 0, done.stderr
    assert "not reachable" not in done.stderr  # the live table, not the static one
    table = rows(done.stdout)
    assert table["billing/*"][:2] == ["billing", "static/http"]
    assert f"{http}/static [static, up]" in table["billing/*"][3]
    assert table["carts/*"][:2] == ["carts", "registered/http"]
    assert f"{http}/registered [registered, up, expires in" in table["carts/*"][3]
    grpc_row = table[f"{SERVICE}/Echo"]
    assert grpc_row[:2] == [f"grpc:{grpc_server.target}", "grpc/grpc"]
    assert f"{grpc_server.target} [grpc, up]" in grpc_row[3]
    nats_row = table["orders/*"]
    assert nats_row[1] == "nats/nats"
    assert "wsgate.orders [nats, up]" in nats_row[3]
    assert table["lonely/*"][:2] == ["lonely", "static/nats"]
    assert "nobody.home [static, DOWN]" in table["lonely/*"][3]
    aligned(done.stdout)


def aligned(output: str) -> None:
    """Every column starts where its heading does, however long the gRPC names are."""
    header, *lines = output.strip().splitlines()
    starts = [header.index(name) for name in ("SERVICE", "SOURCE", "ROLES", "INSTANCES")]
    for line in lines:
        for start in starts:
            assert line[start - 1] == " " and line[start] != " ", (start, line)
