"""``wsgate serve`` as a real process: start-up errors, SIGHUP key rotation, live routes, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from wsgate.auth.cookie import CookieCodec
from wsgate.auth.keyring import KeyRing, new_key, parse_key
from wsgate.auth.principal import Principal

from .conftest import free_port

WSGATE = [sys.executable, "-m", "wsgate.cli"]


def write_config(tmp: Path, keys_file: Path, port: int, api_port: int) -> Path:
    path = tmp / "wsgate.toml"
    path.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
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


@contextmanager
def serving(config: Path) -> Iterator[subprocess.Popen[str]]:
    with subprocess.Popen([*WSGATE, "serve", "--config", str(config)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as proc:
        lines: list[str] = []
        assert proc.stderr is not None
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
        reader.start()
        proc.log_lines = lines  # type: ignore[attr-defined]
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # blocks until the banner (or EOF on failure)
            assert "listening on ws://" in line, line
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            reader.join(10)


async def logged(proc: subprocess.Popen[str], text: str, timeout_s: float = 10.0) -> None:
    """Wait (bounded) until the process has written ``text`` to its log (stderr)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(text in line for line in list(proc.log_lines)):  # type: ignore[attr-defined]
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{text!r} not logged in {timeout_s} s")


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


async def test_sighup_rereads_the_keys_file_without_signing_anyone_out(tmp_path: Path) -> None:
    old, new = new_key(), new_key()
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"{old}\n")
    port = free_port()
    with serving(write_config(tmp_path, keys_file, port, free_port())) as proc:
        assert (await first_frame(port, cookie_with(old)))["type"] == "@@wsgate/WELCOME"
        assert (await first_frame(port, cookie_with(new)))["type"] == "@@wsgate/ERROR"
        keys_file.write_text(f"{new}\n{old}\n")
        proc.send_signal(signal.SIGHUP)
        await logged(proc, "reloaded session keys: 2 keys")
        for _ in range(50):
            if (await first_frame(port, cookie_with(new)))["type"] == "@@wsgate/WELCOME":
                break
            await asyncio.sleep(0.1)
        assert (await first_frame(port, cookie_with(new)))["type"] == "@@wsgate/WELCOME"
        assert (await first_frame(port, cookie_with(old)))["type"] == "@@wsgate/WELCOME"
        keys_file.write_text("not a key\n")  # a bad rotation keeps the old keys
        proc.send_signal(signal.SIGHUP)
        # the documented line (docs/auth.md): proof the handler ran and kept the keys
        await logged(proc, "key reload failed, keeping the 2 current keys: ")
        assert (await first_frame(port, cookie_with(new)))["type"] == "@@wsgate/WELCOME"


async def test_routes_shows_the_live_table_and_sigterm_stops_cleanly(tmp_path: Path) -> None:
    key = new_key()
    keys_file = tmp_path / "keys"
    keys_file.write_text(key + "\n")
    port, api_port = free_port(), free_port()
    config = write_config(tmp_path, keys_file, port, api_port)
    with serving(config) as proc:
        import aiohttp

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
