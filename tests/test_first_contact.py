"""The rough edges a new user hits first (issue 11, item 6): each one fails here if it comes back."""

from __future__ import annotations

import io
import os
import socket
import subprocess
from pathlib import Path

import aiohttp

from wsgate.auth.keyring import new_key

from .e2e.gateway import API_KEY, running
from .helpers import free_port
from .servers import WSGATE

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def _config(tmp_path: Path, port: int, api_port: int) -> Path:
    path = tmp_path / "wsgate.toml"
    path.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\n'
        f'[api]\nlisten = "127.0.0.1:{api_port}"\nkeys = ["k-test"]\n'
        f'[auth]\nkeys = ["{new_key()}"]\n'
    )
    return path


def _serve(config: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSGATE_")}
    return subprocess.run(
        [*WSGATE, "serve", "--config", str(config)], capture_output=True, text=True, timeout=30, env=env
    )


def test_a_port_in_use_is_one_line_naming_the_address(tmp_path: Path) -> None:
    for taken_is_api in (False, True):
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            busy = taken.getsockname()[1]
            free = free_port()
            port, api_port = (free, busy) if taken_is_api else (busy, free)
            done = _serve(_config(tmp_path, port, api_port))
        assert done.returncode == 2, done.stderr
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert "Traceback" not in done.stderr, done.stderr
        errors = [line for line in lines if line.startswith("wsgate:")]
        assert len(errors) == 1, done.stderr
        key = "api.listen" if taken_is_api else "server.listen"
        assert f"127.0.0.1:{busy}" in errors[0] and "in use" in errors[0] and key in errors[0]


async def test_the_default_sign_in_url_under_serve_is_no_redirect_loop() -> None:
    async with running() as gw, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{gw.node.port}"
        async with http.get(f"{base}/", allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "/sign-in"
        async with http.get(f"{base}/sign-in", allow_redirects=False) as resp:
            assert resp.status == 401, resp.headers.get("Location")
            text = await resp.text()
        assert "auth.sign_in_url" in text  # says what to configure


async def test_api_errors_are_json_for_unknown_paths_and_oversized_bodies() -> None:
    async with running() as gw, aiohttp.ClientSession() as http:
        api = gw.node.api_url
        async with http.get(f"{api}/v1/nothing-here", headers=AUTH) as resp:
            assert resp.status == 404 and resp.content_type == "application/json"
            assert "error" in await resp.json()
        async with http.post(f"{api}/v1/nothing-here", headers=AUTH) as resp:
            assert resp.status in (404, 405) and resp.content_type == "application/json"
        huge = b"x" * (3 << 20)
        async with http.post(f"{api}/v1/publish", data=io.BytesIO(huge), headers=AUTH) as resp:
            assert resp.status == 413 and resp.content_type == "application/json"
            assert "error" in await resp.json()
