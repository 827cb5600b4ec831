"""Structured logs: one JSON line per lifecycle event, upstream failure and key reload; no payload.

Every test runs a real node on free ports with real WebSocket clients; the lines are the
formatted output of :class:`wsgate.logs.JsonFormatter` on a handler of the ``wsgate`` logger.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets

from wsgate.auth.cookie import CookieCodec
from wsgate.auth.keyring import KeyRing, new_key, parse_key
from wsgate.auth.principal import Principal
from wsgate.config import LogConfig, from_mapping
from wsgate.logs import JsonFormatter, TextFormatter, configure
from wsgate.transport.listener import GateListener

from .e2e.gateway import ADMIN_KEY, API_KEY, ORIGIN, make_config, running
from .e2e.services import with_service
from .helpers import eventually, free_port
from .servers import wsgate_serve

MARKER = "PAYLOAD-MARKER-5c1e"


class Lines(logging.Handler):
    """Every record of ``wsgate``, formatted as the json format prints it (bounded: a test's)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.text: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.text.append(self.format(record))

    def events(self, name: str) -> list[dict[str, Any]]:
        parsed = [json.loads(line) for line in self.text]
        return [p for p in parsed if p.get("event") == name]


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    logger = logging.getLogger("wsgate")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def _one(lines: Lines, name: str, **match: Any) -> dict[str, Any] | None:
    for event in lines.events(name):
        if all(event.get(k) == v for k, v in match.items()):
            return event
    return None


async def test_connected_then_closed_with_code(lines: Lines) -> None:
    async with running() as gw, gw.peer("u1", "acme") as peer:
        cid = peer.id
        await eventually(lambda: _one(lines, "connected", connection=cid), what="connected line")
        line = _one(lines, "connected", connection=cid)
        assert line is not None
        assert (line["user"], line["org"], line["remote"]) == ("u1", "acme", "127.0.0.1")
        assert line["level"] == "INFO" and line["logger"] == "wsgate.events"
        await peer.ws.close(1000)
        await eventually(lambda: _one(lines, "closed", connection=cid), what="closed line")
        closed = _one(lines, "closed", connection=cid)
        assert closed is not None
        assert (closed["code"], closed["user"], closed["org"], closed["remote"]) == (
            1000, "u1", "acme", "127.0.0.1"
        )


async def test_the_transport_feeds_the_connection_itself(lines: Lines) -> None:
    """No lifecycle wrapper per connection (memory per idle connection, bench/README.md):
    the transport's session is the core's :class:`Connection`, and the closed line
    still carries the code the transport saw."""
    async with running() as gw, gw.peer("u1", "acme") as peer:
        conn = gw.node.gateway.pool.connections[peer.id]
        sink = conn.sink
        assert isinstance(sink, GateListener)
        assert sink._session is conn
        await peer.ws.close(4321)
        await eventually(lambda: _one(lines, "closed", connection=peer.id), what="closed line")
        closed = _one(lines, "closed", connection=peer.id)
        assert closed is not None and closed["code"] == 4321


async def test_refused_for_a_bad_origin(lines: Lines) -> None:
    async with running() as gw:
        with pytest.raises(websockets.InvalidStatus):
            async with websockets.connect(gw.url, origin="http://evil.test", open_timeout=5):  # type: ignore[arg-type]
                pass
        await eventually(lambda: _one(lines, "refused", code=403), what="refused line")
        line = _one(lines, "refused", code=403)
        assert line is not None and "origin" in line["reason"]
        assert line["origin"] == "http://evil.test"


async def test_refused_without_a_cookie(lines: Lines) -> None:
    async with running() as gw:
        async with websockets.connect(gw.url, origin=ORIGIN, open_timeout=5) as ws:  # type: ignore[arg-type]
            error = json.loads(await ws.recv())
            assert error["payload"]["code"] == "UNAUTHENTICATED"
        await eventually(lambda: _one(lines, "refused", code=4401), what="refused line")
        line = _one(lines, "refused", code=4401)
        assert line is not None and line["reason"] == "unauthenticated"


async def test_refused_over_the_per_user_connection_limit(lines: Lines) -> None:
    config = make_config(limits={"max_connections_per_user": 1})
    async with running(config) as gw, gw.peer("u1") as first:
        headers = {"Cookie": gw.cookie("u1")}
        async with websockets.connect(gw.url, origin=ORIGIN, additional_headers=headers, open_timeout=5) as ws:  # type: ignore[arg-type]
            error = json.loads(await ws.recv())
            assert error["payload"]["code"] == "RATE_LIMITED"
        await eventually(lambda: _one(lines, "refused", code=4429), what="refused line")
        line = _one(lines, "refused", code=4429)
        assert line is not None
        assert (line["user"], line["org"], line["remote"]) == ("u1", "acme", "127.0.0.1")
        assert line["connection"] != first.id
        assert "limit" in line["reason"]
        assert _one(lines, "connected", connection=line["connection"]) is None


async def test_revoked_then_closed_4403(lines: Lines) -> None:
    async with running() as gw, gw.peer("u9") as peer, aiohttp.ClientSession() as http:
        cid = peer.id
        url = f"{gw.node.api_url}/v1/users/u9/connections"
        async with http.delete(url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as resp:
            assert resp.status == 200
        line = _one(lines, "revoked", user="u9")
        assert line is not None and line["count"] == 1
        await eventually(lambda: _one(lines, "closed", connection=cid), what="closed line")
        closed = _one(lines, "closed", connection=cid)
        assert closed is not None and closed["code"] == 4403


async def test_an_upstream_failure_is_one_line_with_the_request_id(lines: Lines) -> None:
    async with with_service() as (gw, _svc), gw.peer("u2", "acme") as peer:
        await peer.send("down/GET", {"secret": MARKER}, id="r1")
        error = await peer.expect("@@wsgate/ERROR")
        assert error["payload"]["code"] == "UPSTREAM_UNAVAILABLE"
        line = _one(lines, "upstream_failure", connection=peer.id)
        assert line is not None
        assert (line["service"], line["outcome"], line["user"], line["org"]) == (
            "down", "UPSTREAM_UNAVAILABLE", "u2", "acme"
        )
        assert line["request_id"] and line["action_type"] == "down/GET"
        assert line["level"] == "WARNING"


async def test_a_failed_authorize_or_connect_hook_is_an_upstream_failure_line(lines: Lines) -> None:
    dead = f"http://127.0.0.1:{free_port()}/actions"
    config = make_config(services={"down": {"url": dead}},
                         routes=[{"match": "@@wsgate/JOIN", "service": "down"}])
    async with running(config) as gw, gw.peer("u6") as peer:
        answer = await peer.join("acme:room/1")
        assert answer["payload"]["code"] == "UPSTREAM_UNAVAILABLE"
        line = _one(lines, "upstream_failure", connection=peer.id)
        assert line is not None and line["action_type"] == "@@wsgate/JOIN"
        assert (line["service"], line["outcome"], line["user"]) == ("down", "UPSTREAM_UNAVAILABLE", "u6")
        assert line["request_id"]
    config = make_config(services={"down": {"url": dead}},
                         routes=[{"match": "@@wsgate/CONNECT", "service": "down"}])
    async with running(config) as gw:
        headers = {"Cookie": gw.cookie("u7")}
        async with websockets.connect(gw.url, origin=ORIGIN, additional_headers=headers, open_timeout=5) as ws:  # type: ignore[arg-type]
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
        await eventually(lambda: _one(lines, "refused", code=1013), what="refused line")
        line = _one(lines, "upstream_failure", user="u7")
        assert line is not None and line["action_type"] == "@@wsgate/CONNECT"
        refused = _one(lines, "refused", code=1013)
        assert refused is not None and refused["connection"] == line["connection"]


async def test_a_key_reload_is_one_line(lines: Lines, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(new_key() + "\n")
    config = make_config(auth={"keys": [], "keys_file": str(keys)})
    async with running(config) as gw:
        keys.write_text(new_key() + "\n" + new_key() + "\n")
        gw.node.reload_keys()
        line = _one(lines, "keys_reloaded")
        assert line is not None and line["ok"] is True and line["keys"] == 2
        keys.write_text("")
        gw.node.reload_keys()
        failed = _one(lines, "keys_reloaded", ok=False)
        assert failed is not None and failed["level"] == "ERROR" and failed["keys"] == 2


async def test_no_payload_in_any_line(lines: Lines) -> None:
    """A marker sent through relay, a routed call and an API publish appears in no line."""
    async with with_service() as (gw, _svc), gw.peer("u3") as a, gw.peer("u4") as b, \
            aiohttp.ClientSession() as http:
        await a.join("acme:room/1")
        await b.join("acme:room/1")
        await a.send("chat/SAY", {"text": MARKER}, channel="acme:room/1")
        assert (await b.expect("chat/SAY"))["payload"]["text"] == MARKER
        await a.send("svc/ECHO", {"text": MARKER}, id="e1")
        assert (await a.expect("svc/ECHOED"))["payload"]["got"]["text"] == MARKER
        await a.send("down/GET", {"text": MARKER}, id="e2")
        await a.expect("@@wsgate/ERROR")
        body = {"to": {"channel": "acme:room/1"}, "action": {"type": "news/X", "payload": {"t": MARKER}}}
        async with http.post(f"{gw.node.api_url}/v1/publish", json=body,
                             headers={"Authorization": f"Bearer {API_KEY}"}) as resp:
            assert resp.status == 202
        assert (await b.expect("news/X"))["payload"]["t"] == MARKER
        await a.ws.close()
        await eventually(lambda: _one(lines, "closed", connection=a.id), what="closed line")
    assert lines.text, "nothing was logged: the check below would prove nothing"
    assert len(lines.events("connected")) == 2
    assert not [line for line in lines.text if MARKER in line]


# -- formats and [log] --------------------------------------------------------------------------

def _record(**extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("wsgate.events", logging.INFO, __file__, 1, "closed", None, None)
    record.__dict__.update(extra)
    return record


def test_json_format_is_one_object_a_line_with_the_extra_fields() -> None:
    line = JsonFormatter().format(_record(event="closed", connection="n1.x", code=1000))
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["msg"] == "closed" and parsed["connection"] == "n1.x" and parsed["code"] == 1000
    assert {"ts", "level", "logger"} <= set(parsed)


def test_text_format_has_the_fields_as_key_value() -> None:
    line = TextFormatter().format(_record(event="closed", connection="n1.x", user="a b"))
    assert line.endswith(' closed event=closed connection=n1.x user="a b"')
    line = TextFormatter().format(_record(reason="a=b", note="l1\nl2", q='say "x"', n=3, e=""))
    assert line.endswith(' reason="a=b" note="l1\\nl2" q="say \\"x\\"" n=3 e=""')


def test_timestamps_are_utc_milliseconds_across_seconds() -> None:
    # The formatted second is cached: records of the same second, then of the next one.
    stamps = []
    for created in (1764130000.125, 1764130000.875, 1764130001.0625, 1764126400.5):
        record = _record()
        record.created, record.msecs = created, (created - int(created)) * 1000
        stamps.append(json.loads(JsonFormatter().format(record))["ts"])
    assert stamps == ["2025-11-26T04:06:40.125Z", "2025-11-26T04:06:40.875Z",
                      "2025-11-26T04:06:41.062Z", "2025-11-26T03:06:40.500Z"]


def test_log_config_defaults_and_refusals() -> None:
    config = from_mapping({}, env={})
    assert (config.log.format, config.log.level) == ("text", "info")
    assert from_mapping({}, env={"WSGATE_LOG_FORMAT": "json"}).log.format == "json"
    with pytest.raises(Exception, match=r"log\.format"):
        from_mapping({"log": {"format": "xml"}}, env={})


def test_configure_applies_format_and_level() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    flags = ("_srcfile", "logProcesses", "logThreads", "logMultiprocessing")
    saved_flags = {name: getattr(logging, name) for name in flags}
    try:
        configure(LogConfig(format="json", level="warning"), stream)
        logging.getLogger("wsgate.events").info("hidden", extra={"event": "x"})
        logging.getLogger("wsgate.events").warning("shown", extra={"event": "y", "user": "u"})
        out = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert [(o["msg"], o["user"]) for o in out] == [("shown", "u")]
        # What no format prints is not collected per record (the caller's frame, pid, thread).
        assert not any(getattr(logging, name) for name in flags)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name, value in saved_flags.items():
            setattr(logging, name, value)


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def test_serve_prints_json_lines_when_the_config_says_so(tmp_path: Path) -> None:
    """``wsgate serve`` applies ``[log]``: every stderr line is JSON, the events among them."""
    key = new_key()
    config = tmp_path / "wsgate.toml"
    config.write_text(f"""
[server]
listen = "127.0.0.1:0"
allowed_origins = ["*"]
[api]
listen = "127.0.0.1:{free_port()}"
keys = ["k-test"]
[auth]
keys = ["{key}"]
[log]
format = "json"
level = "info"
""")
    sealed = CookieCodec(KeyRing([parse_key(key, "test")])).seal(
        Principal(sub="u5", org="acme", orgs=("acme",))
    )
    with wsgate_serve(config) as server:
        url = f"ws://127.0.0.1:{server.port}/ws"
        async with websockets.connect(url, additional_headers={"Cookie": f"wsgate_session={sealed}"}) as ws:
            await ws.recv()
        await eventually(
            lambda: any(e.get("event") == "closed" for e in _json_lines(server.output())),
            what="a closed line on stderr",
        )
        output = server.output()
    events = [e for e in _json_lines(output) if e.get("logger") == "wsgate.events"]
    assert [(e["event"], e["user"]) for e in events] == [("connected", "u5"), ("closed", "u5")]
    others = [line for line in output.splitlines() if line and not line.startswith("{")]
    assert all(line.startswith("wsgate:") for line in others), others  # the banner only


async def test_connected_lines_past_the_cap_are_one_suppressed_line(lines: Lines) -> None:
    # One line a second: of 4 connections opened at once at most a few are written
    # (one per second they took), the others are counted in `suppressed` lines.
    config = make_config(log={"lifecycle_lines_per_s": 1})
    async with running(config) as gw:
        async with gw.peer("u1") as a, gw.peer("u2") as b, gw.peer("u3") as c, gw.peer("u4") as d:
            ids = {a.id, b.id, c.id, d.id}

            def accounted() -> bool:
                held = sum(e["count"] for e in lines.events("suppressed") if e["of"] == "connected")
                return held + len(lines.events("connected")) == 4

            await eventually(accounted, what="every connection in a line or a count")
            written = {e["connection"] for e in lines.events("connected")}
            assert written < ids and lines.events("suppressed")
            line = lines.events("suppressed")[0]
            assert line["level"] == "INFO" and line["window_s"] == 1.0
        assert gw.node.lifecycle.opened == 4


def test_log_lifecycle_lines_per_s_default_and_refusal() -> None:
    assert from_mapping({}, env={}).log.lifecycle_lines_per_s == 100
    with pytest.raises(Exception, match=r"log\.lifecycle_lines_per_s"):
        from_mapping({"log": {"lifecycle_lines_per_s": -1}}, env={})
