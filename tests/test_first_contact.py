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


async def test_routes_says_the_key_was_refused_not_that_the_node_is_down(tmp_path: Path) -> None:
    import asyncio

    async with running() as gw:  # its [api] keys hold only API_KEY
        config = _config(tmp_path, free_port(), int(gw.node.api_url.rpartition(":")[2]))
        proc = await asyncio.create_subprocess_exec(
            *WSGATE, "routes", "--config", str(config),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    text = err.decode()
    assert proc.returncode == 2, text
    assert "401" in text and "api.keys" in text and "not reachable" not in text


def test_the_demo_prints_its_internal_api_url_and_a_key(tmp_path: Path) -> None:
    import re
    import urllib.request

    from .helpers import wait_until
    from .servers import ServerProcess

    port = free_port()
    demo = ServerProcess([*WSGATE, "demo", "--port", str(port)], port, "http", log=tmp_path / "demo.log")
    demo.start()
    try:
        pattern = re.compile(r"internal API on (http://127\.0\.0\.1:\d+).*?Bearer ([A-Za-z0-9_-]+)", re.S)
        wait_until(lambda: pattern.search(demo.output()) is not None, 10, what="the API banner")
        found = pattern.search(demo.output())
        assert found is not None
        url, key = found.groups()
        request = urllib.request.Request(f"{url}/v1/hubs", headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status == 200
        admin = re.compile(r"admin dashboard on (http://\S+/admin/) with the admin key ([A-Za-z0-9_-]+)")
        wait_until(lambda: admin.search(demo.output()) is not None, 10, what="the dashboard banner")
        shown = admin.search(demo.output())
        assert shown is not None
        page, admin_key = shown.groups()
        with urllib.request.urlopen(page, timeout=5) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/html")
        errors = urllib.request.Request(f"{url}/v1/admin/errors",
                                        headers={"Authorization": f"Bearer {admin_key}"})
        with urllib.request.urlopen(errors, timeout=5) as resp:
            assert resp.status == 200
    finally:
        demo.stop()


def test_the_readme_names_both_ports_and_the_session_cookie_as_the_code_defaults_them() -> None:
    from wsgate.config import from_mapping

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    defaults = from_mapping({}, env={})
    assert f"`{defaults.server.listen}`" in readme
    assert f"`{defaults.api.listen}`" in readme
    assert f"`{defaults.auth.cookie_name}`" in readme
    assert "WSGATE_API_LISTEN" in readme  # how a second node avoids the first one's API port


async def test_a_registered_instance_at_a_dead_url_is_not_shown_healthy() -> None:
    import asyncio

    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    live_port = server.sockets[0].getsockname()[1]
    dead_port = free_port()
    try:
        async with running() as gw, aiohttp.ClientSession() as http:
            api = gw.node.api_url
            for name, port in (("dead", dead_port), ("live", live_port)):
                body = {"url": f"http://127.0.0.1:{port}/actions", "actions": [f"{name}/*"], "ttl": 60}
                async with http.put(f"{api}/v1/services/{name}", json=body, headers=AUTH) as resp:
                    assert resp.status == 200
                    assert (await resp.json())["reachable"] is (name == "live")
            async with http.get(f"{api}/v1/routes", headers=AUTH) as resp:
                rows = {row["service"]: row for row in await resp.json()}
            assert rows["dead"]["instances"][0]["healthy"] is False
            assert rows["live"]["instances"][0]["healthy"] is True
    finally:
        server.close()
        await server.wait_closed()


def test_sign_in_goes_back_to_a_view_fragment_and_nowhere_else() -> None:
    from wsgate.demo import DemoSite, demo_config

    site = DemoSite(demo_config(free_port()))
    for next_, location in (("%23orders/44", "/#orders/44"), ("//evil.example", "/"),
                            ("https://evil.example/", "/"), ("%23a%0d%0aSet-Cookie:x", "/")):
        answer = site.handle(f"/sign-in?user=ann&org=acme&next={next_}", {})
        assert answer is not None and answer.status == 302
        assert dict(answer.headers)["Location"] == location, next_


async def test_get_connection_reports_last_activity_and_the_user_agent() -> None:
    import asyncio
    from datetime import datetime
    from urllib.parse import quote

    import websockets

    from .e2e.gateway import ORIGIN, Peer

    async with running() as gw, aiohttp.ClientSession() as http:
        ws = await websockets.connect(
            gw.url, origin=ORIGIN, user_agent_header="wsgate-test/1.0 (first contact)",
            additional_headers={"Cookie": gw.cookie("ann", "acme")},
        )
        try:
            peer = Peer(ws)
            peer.welcome = (await peer.expect("@@wsgate/WELCOME"))["payload"]
            url = f"{gw.node.api_url}/@connections/{quote(peer.id)}"
            async with http.get(url, headers=AUTH) as resp:
                first = await resp.json()
            assert first["identity"]["userAgent"] == "wsgate-test/1.0 (first contact)"
            await asyncio.sleep(0.05)  # the behaviour: time passes between connecting and acting
            await peer.join("acme:v")
            async with http.get(url, headers=AUTH) as resp:
                later = await resp.json()

            def at(text: str) -> datetime:
                return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")

            assert at(later["lastActiveAt"]) > at(later["connectedAt"])
            assert later["connectedAt"] == first["connectedAt"]
        finally:
            await ws.close()
