"""``wsgate serve`` as a real process: start-up errors, SIGHUP key rotation, live routes, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from wsgate.auth.cookie import CookieCodec
from wsgate.auth.keyring import KeyRing, new_key, parse_key
from wsgate.auth.principal import Principal

from .helpers import eventually, free_port
from .servers import WSGATE, wsgate_serve


def write_config(tmp: Path, keys_file: Path, api_port: int) -> Path:
    """A config whose WebSocket listener takes any free port (the banner names it)."""
    path = tmp / "wsgate.toml"
    path.write_text(f"""
[server]
listen = "127.0.0.1:0"
allowed_origins = ["*"]
[api]
listen = "127.0.0.1:{api_port}"
keys = ["k-test"]
[auth]
keys_file = "{keys_file}"
[services.orders]
url = "http://127.0.0.1:9/actions"
[[routes]]
match = "orders/*"
service = "orders"
""")
    return path


def cookie_with(key: str) -> str:
    ring = KeyRing([parse_key(key, "test")])
    return "wsgate_session=" + CookieCodec(ring).seal(Principal(sub="u1", org="acme", orgs=("acme",)))


async def first_frame(port: int, cookie: str) -> dict[str, object]:
    url = f"ws://127.0.0.1:{port}/ws"
    async with websockets.connect(url, additional_headers={"Cookie": cookie}) as ws:
        return json.loads(await asyncio.wait_for(ws.recv(), 5))  # type: ignore[no-any-return]


def test_a_bad_config_stops_start_up_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nlisten = "127.0.0.1:8080"\nmax_mesage_bytes = 10\n')
    done = subprocess.run([*WSGATE, "serve", "--config", str(bad)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "server.max_mesage_bytes" in done.stderr and "unknown key" in done.stderr
    bad.write_text('[server]\nlisten = "nowhere"\n')
    done = subprocess.run([*WSGATE, "serve", "--config", str(bad)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "server.listen" in done.stderr
    env = {**os.environ, "WSGATE_SERVER_HEARTBEAT_MS": "soon"}
    done = subprocess.run([*WSGATE, "serve", "--config", str(bad)], capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == 2 and "server.heartbeat_ms" in done.stderr


def test_serve_helper_reports_a_process_that_exits_before_its_banner(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[server]\nlisten = "nowhere"\n')
    with pytest.raises(RuntimeError, match=r"(?s)exited with 2:\n.*config server\.listen"), wsgate_serve(config):
        raise AssertionError("started")


async def test_sighup_rereads_the_keys_file_without_signing_anyone_out(tmp_path: Path) -> None:
    old, new = new_key(), new_key()
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"{old}\n")
    with wsgate_serve(write_config(tmp_path, keys_file, free_port())) as server:
        assert server.proc is not None
        port = server.port
        assert (await first_frame(port, cookie_with(old)))["type"] == "@@wsgate/WELCOME"
        assert (await first_frame(port, cookie_with(new)))["type"] == "@@wsgate/ERROR"
        keys_file.write_text(f"{new}\n{old}\n")
        server.proc.send_signal(signal.SIGHUP)
        await eventually(lambda: "reloaded session keys: 2 keys" in server.output(), what="the reload")
        assert (await first_frame(port, cookie_with(new)))["type"] == "@@wsgate/WELCOME"
        assert (await first_frame(port, cookie_with(old)))["type"] == "@@wsgate/WELCOME"
        keys_file.write_text("not a key\n")  # a bad rotation keeps the old keys
        server.proc.send_signal(signal.SIGHUP)
        await eventually(lambda: "key reload failed, keeping the 2 current keys: " in server.output(), what="the refusal")
        assert (await first_frame(port, cookie_with(new)))["type"] == "@@wsgate/WELCOME"
        assert (await first_frame(port, cookie_with(old)))["type"] == "@@wsgate/WELCOME"


async def test_routes_shows_the_live_table_and_sigterm_stops_cleanly(tmp_path: Path) -> None:
    key = new_key()
    keys_file = tmp_path / "keys"
    keys_file.write_text(key + "\n")
    api_port = free_port()
    config = write_config(tmp_path, keys_file, api_port)
    with wsgate_serve(config) as server:
        import aiohttp

        proc, port = server.proc, server.port
        assert proc is not None
        async with aiohttp.ClientSession() as http:
            body = {"url": "http://127.0.0.1:9/billing", "actions": ["billing/*"], "ttl": 60}
            async with http.put(f"http://127.0.0.1:{api_port}/v1/services/billing", json=body,
                                headers={"Authorization": "Bearer k-test"}) as resp:
                assert resp.status == 200
        shown = subprocess.run([*WSGATE, "routes", "--config", str(config)], capture_output=True, text=True, timeout=30)
        assert shown.returncode == 0
        assert "billing/*" in shown.stdout and "registered" in shown.stdout
        assert "orders/*" in shown.stdout and "static" in shown.stdout
        url = f"ws://127.0.0.1:{port}/ws"
        async with websockets.connect(url, additional_headers={"Cookie": cookie_with(key)}) as ws:
            await asyncio.wait_for(ws.recv(), 5)
            proc.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
        assert proc.wait(15) == 0
