"""Tracing: the client's ``traceparent`` reaches the service; with ``[tracing]`` every routed
call and API publish is a span, child of the incoming traceparent (real node, real service,
the SDK's in-memory exporter)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from wsgate.config import Config
from wsgate.node import Node
from wsgate.tracing import Tracer

from .e2e.gateway import API_KEY, Running, make_config
from .helpers import eventually, free_port

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_PARENT = "00f067aa0ba902b7"
CLIENT_TP = f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01"
MARKER = "PAYLOAD-MARKER-91ab"


@contextlib.asynccontextmanager
async def service() -> AsyncIterator[tuple[str, list[str]]]:
    """A real HTTP service on a free port: records each request's traceparent, replies ``t/OK``."""
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        if len(seen) < 100:
            seen.append(request.headers.get("traceparent", ""))
        return web.json_response({"reply": [{"type": "t/OK"}]})

    app = web.Application()
    app.router.add_post("/actions", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/actions", seen
    finally:
        await runner.cleanup()


def _config(url: str, **sections: Any) -> Config:
    return make_config(
        services={"t": {"url": url}}, routes=[{"match": "t/*", "service": "t"}], **sections
    )


@contextlib.asynccontextmanager
async def node(config: Config, tracer: Tracer | None = None) -> AsyncIterator[Running]:
    n = Node(config, tracer=tracer)
    await n.start()
    try:
        yield Running(n)
    finally:
        await n.stop()


def _tracer(exporter: InMemorySpanExporter) -> Tracer:
    config = make_config(tracing={"enabled": True, "service_name": "gw-test"}).tracing
    return Tracer(config, exporter=exporter)


async def test_without_tracing_the_clients_traceparent_reaches_the_service() -> None:
    async with service() as (url, seen), node(_config(url)) as gw, gw.peer("u1") as peer:
        assert gw.node.tracer is None
        await peer.send("t/GO", None, id="a", traceparent=CLIENT_TP)
        await peer.expect("t/OK")
        await peer.send("t/GO", None, id="b", traceparent="garbage")
        await peer.expect("t/OK")
        assert seen[0] == CLIENT_TP
        assert seen[1] != "garbage" and len(seen[1]) == 55


async def test_a_routed_call_is_a_child_span_and_the_service_sees_its_child() -> None:
    exporter = InMemorySpanExporter()
    async with service() as (url, seen), node(_config(url), _tracer(exporter)) as gw, \
            gw.peer("u1") as peer:
        await peer.send("t/GO", {"m": MARKER}, id="a", traceparent=CLIENT_TP)
        await peer.expect("t/OK")
        await eventually(lambda: exporter.get_finished_spans(), what="a finished span")
        (span,) = exporter.get_finished_spans()
        ctx = span.get_span_context()
        assert ctx is not None and span.parent is not None
        assert f"{ctx.trace_id:032x}" == CLIENT_TRACE
        assert f"{span.parent.span_id:016x}" == CLIENT_PARENT
        assert seen == [f"00-{CLIENT_TRACE}-{ctx.span_id:016x}-01"]
        attrs = dict(span.attributes or {})
        assert attrs == {
            "wsgate.action_type": "t/GO",
            "wsgate.service": "t",
            "wsgate.outcome": "OK",
            "wsgate.connection_id": peer.id,
        }
        assert span.resource.attributes["service.name"] == "gw-test"
        assert MARKER not in json.dumps(span.to_json())


async def test_a_routed_call_without_a_traceparent_is_a_root_span() -> None:
    exporter = InMemorySpanExporter()
    async with service() as (url, seen), node(_config(url), _tracer(exporter)) as gw, \
            gw.peer("u1") as peer:
        await peer.send("t/GO", None, id="a")
        await peer.expect("t/OK")
        await eventually(lambda: exporter.get_finished_spans(), what="a finished span")
        (span,) = exporter.get_finished_spans()
        ctx = span.get_span_context()
        assert span.parent is None and ctx is not None
        assert seen == [f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"]
        assert int(ctx.trace_flags) & 1  # sampled


async def test_a_failed_call_is_a_span_with_its_error_code() -> None:
    exporter = InMemorySpanExporter()
    dead = f"http://127.0.0.1:{free_port()}/actions"
    async with node(_config(dead), _tracer(exporter)) as gw, gw.peer("u1") as peer:
        await peer.send("t/GO", None, id="a", traceparent=CLIENT_TP)
        await peer.expect("@@wsgate/ERROR")
        await eventually(lambda: exporter.get_finished_spans(), what="a finished span")
        (span,) = exporter.get_finished_spans()
        assert (span.attributes or {})["wsgate.outcome"] == "UPSTREAM_UNAVAILABLE"
        assert span.status.status_code.name == "ERROR"


async def test_an_api_publish_is_a_span_child_of_its_traceparent() -> None:
    exporter = InMemorySpanExporter()
    async with service() as (url, _seen), node(_config(url), _tracer(exporter)) as gw, \
            gw.peer("u1") as peer, aiohttp.ClientSession() as http:
        body = {"to": {"user": "u1"}, "action": {"type": "news/X", "payload": {"m": MARKER}}}
        headers = {"Authorization": f"Bearer {API_KEY}", "traceparent": CLIENT_TP}
        async with http.post(f"{gw.node.api_url}/v1/publish", json=body, headers=headers) as resp:
            assert resp.status == 202
        await peer.expect("news/X")
        (span,) = exporter.get_finished_spans()
        assert span.name == "publish"
        assert span.parent is not None and f"{span.parent.span_id:016x}" == CLIENT_PARENT
        assert dict(span.attributes or {}) == {
            "wsgate.action_type": "news/X", "wsgate.target": "user", "wsgate.delivered": 1,
            "wsgate.outcome": "OK",
        }
        assert MARKER not in json.dumps(span.to_json())


async def test_spans_reach_the_otlp_endpoint_by_the_time_the_node_stopped() -> None:
    """``[tracing] endpoint``: the real OTLP/HTTP exporter posts the spans to a real collector."""
    posts: list[tuple[str, bytes]] = []

    async def collect(request: web.Request) -> web.Response:
        if len(posts) < 100:
            posts.append((request.content_type, await request.read()))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/v1/traces", collect)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with service() as (url, _seen):
            tracing = {"enabled": True, "endpoint": f"http://127.0.0.1:{port}/v1/traces"}
            async with node(_config(url, tracing=tracing)) as gw, gw.peer("u1") as peer:
                assert gw.node.tracer is not None
                await peer.send("t/GO", {"m": MARKER}, id="a", traceparent=CLIENT_TP)
                await peer.expect("t/OK")
        assert posts, "no export reached the collector"
        assert all(kind == "application/x-protobuf" for kind, _ in posts)
        body = b"".join(b for _, b in posts)
        assert b"call t" in body and bytes.fromhex(CLIENT_TRACE) in body
        assert MARKER.encode() not in body
    finally:
        await runner.cleanup()


def test_tracing_off_imports_no_opentelemetry() -> None:
    """Zero cost without ``[tracing]``: a node starts, routes and stops without importing the SDK."""
    code = (
        "import asyncio, sys\n"
        "from tests.e2e.gateway import make_config\n"
        "from wsgate.node import Node\n"
        "async def main():\n"
        "    n = Node(make_config())\n"
        "    await n.start()\n"
        "    await n.stop()\n"
        "    assert n.tracer is None\n"
        "asyncio.run(main())\n"
        "bad = sorted(m for m in sys.modules if m.startswith('opentelemetry'))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{root / 'src'}{os.pathsep}{root}"}
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_tracing_enabled_without_the_sdk_is_a_config_error_naming_the_key() -> None:
    """The SDK made unimportable in a fresh process: start-up stops with one line, as serve shows it."""
    code = (
        "import sys\n"
        "sys.modules['opentelemetry.sdk'] = None\n"
        "from tests.e2e.gateway import make_config\n"
        "from wsgate.exceptions import ConfigError\n"
        "from wsgate.node import Node\n"
        "try:\n"
        "    Node(make_config(tracing={'enabled': True}))\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{root / 'src'}{os.pathsep}{root}"}
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "tracing.enabled" in out.stdout and "wsgate[tracing]" in out.stdout


def test_tracing_config_defaults() -> None:
    tracing = make_config().tracing
    assert (tracing.enabled, tracing.service_name, tracing.endpoint) == (False, "wsgate", "")
