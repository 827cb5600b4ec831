"""``wsgate tap`` as a real subprocess against a real node: one line per action, Ctrl-C ends it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

from wsgate.cli_tap import line

from .e2e.gateway import ADMIN_KEY, API_KEY, make_config, running
from .helpers import eventually

START_S = 20.0
"""A cold Python start on a shared machine; every read below is bounded by it."""


async def _tap(api_port: int, *args: str) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSGATE_")}
    env["WSGATE_API_LISTEN"] = f"127.0.0.1:{api_port}"
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wsgate.cli", "tap", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def _readline(stream: asyncio.StreamReader | None) -> str:
    assert stream is not None
    return (await asyncio.wait_for(stream.readline(), START_S)).decode()


async def test_tap_prints_one_line_per_action_redacted_and_ends_cleanly_on_ctrl_c() -> None:
    config = make_config(tap={"redact": [{"match": "chat/*", "fields": ["payload.card"]}]})
    async with running(config) as gw, gw.peer("alice") as alice, gw.peer("bob") as bob:
        await alice.join("acme:orders/42")
        await bob.join("acme:orders/42")
        proc = await _tap(gw.node.api_port, "--channel", "acme:orders/42", "--key", ADMIN_KEY)
        try:
            assert "tapping channel acme:orders/42" in await _readline(proc.stderr)
            await alice.send("chat/SAY", {"text": "hi", "card": "4111"}, channel="acme:orders/42")
            await bob.expect("chat/SAY")
            printed = await _readline(proc.stdout)
            assert printed.split(" ", 3)[:3] == ["channel", "acme:orders/42", "chat/SAY"]
            assert f"from alice/{alice.id}" in printed
            assert '{"text":"hi","card":"[redacted]"}' in printed and "4111" not in printed
            proc.send_signal(signal.SIGINT)
            assert await asyncio.wait_for(proc.wait(), START_S) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert gw.node.gateway is not None
        fanout = gw.node.gateway.fanout
        await eventually(lambda: fanout.taps is None, what="the tap freed on the node")


async def test_tap_with_a_service_key_is_refused_with_exit_2() -> None:
    async with running() as gw:
        proc = await _tap(gw.node.api_port, "--connection", "x.y", "--key", API_KEY)
        _, err = await asyncio.wait_for(proc.communicate(), START_S)
        assert proc.returncode == 2
        assert "refused the tap (403" in err.decode() and "Traceback" not in err.decode()


async def test_tap_ends_with_exit_1_when_the_node_closes_it() -> None:
    async with running() as gw:
        proc = await _tap(gw.node.api_port, "--connection", "x.y", "--key", ADMIN_KEY)
        try:
            assert "tapping connection x.y" in await _readline(proc.stderr)
            await asyncio.wait_for(gw.node.stop(deadline_s=0), 10)  # an open tap never holds it
            _, err = await asyncio.wait_for(proc.communicate(), START_S)
            assert proc.returncode == 1 and "the node closed the tap" in err.decode()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


def test_a_line_names_target_type_origin_payload_and_drops() -> None:
    frame = {"to": {"kind": "connection", "target": "n1.c"}, "type": "a/B", "payload": [1],
             "error": True, "from": None, "dropped": 3}
    assert line(frame) == "connection n1.c a/B error [1] (dropped 3)"
    assert json.loads(json.dumps(frame)) == frame
