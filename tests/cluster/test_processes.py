"""Three gateway processes over a real Redis, and over a real NATS.

Each test starts ``wsgate serve`` three times (nodes a, b, c) on free ports,
sharing one broker prefix and one session key, and talks to them with real
WebSocket and HTTP clients: the internal API of one node reaches a connection
on another; users on different nodes sync; a node killed with SIGKILL loses
nobody's messages once its clients rejoin elsewhere with ``since``; and the
broker restarted under load resumes delivery by itself, the gap recovered
from history.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from wsgate.auth.cookie import CookieCodec
from wsgate.auth.keyring import KeyRing, new_key, parse_key
from wsgate.auth.principal import Principal
from wsgate.backends import open_backend

from ..e2e.gateway import Peer
from ..helpers import eventually, free_port
from ..servers import ServerProcess, nats_server, redis_server

API_KEY = "k-cluster"
ORIGIN = "http://app.test"


class Proc:
    def __init__(self, name: str, port: int, api_port: int, proc: subprocess.Popen[str]) -> None:
        self.name = name
        self.port = port
        self.api_port = api_port
        self.proc = proc

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"


@contextlib.contextmanager
def nodes(tmp: Path, broker_url: str, count: int = 3) -> Iterator[tuple[list[Proc], str]]:
    key = new_key()
    prefix = "p" + uuid.uuid4().hex[:8]
    procs: list[Proc] = []
    try:
        for name in "abc"[:count]:
            port, api_port = free_port(), free_port()
            config = tmp / f"{name}.toml"
            config.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
allowed_origins = ["{ORIGIN}"]
node_id = "{name}"
[api]
listen = "127.0.0.1:{api_port}"
keys = ["{API_KEY}"]
[auth]
keys = ["{key}"]
[broker]
url = "{broker_url}"
prefix = "{prefix}"
presence_ttl_s = 1.0
[presence]
batch_ms = 0
[history]
size = 1000
[inbox]
max_messages = 1000
[[relays]]
match = "chat/*"
""")
            proc = subprocess.Popen([sys.executable, "-m", "wsgate.cli", "serve", "--config", str(config)],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert "listening" in line, f"node {name} did not start: {line!r}"
            procs.append(Proc(name, port, api_port, proc))
        yield procs, key
    finally:
        for p in procs:
            if p.proc.poll() is None:
                p.proc.terminate()
        for p in procs:
            try:
                p.proc.wait(10)
            except subprocess.TimeoutExpired:
                p.proc.kill()
                p.proc.wait(5)
            if p.proc.stdout is not None:
                p.proc.stdout.close()


def cookie(key: str, user: str) -> str:
    codec = CookieCodec(KeyRing([parse_key(key, "test")]))
    return "wsgate_session=" + codec.seal(Principal(sub=user, name=user, org="acme", orgs=("acme",)))


@contextlib.asynccontextmanager
async def peer(node: Proc, key: str, user: str) -> AsyncIterator[Peer]:
    async with websockets.connect(node.url, additional_headers={"Cookie": cookie(key, user)},  # type: ignore[arg-type]
                                  origin=ORIGIN, open_timeout=5) as ws:  # type: ignore[arg-type]
        p = Peer(ws)
        welcome = await p.recv()
        assert welcome["type"] == "@@wsgate/WELCOME"
        p.welcome = welcome["payload"]
        yield p


@pytest.fixture(params=["redis", "nats"])
def broker(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    if request.param == "redis":
        with redis_server(persistent=True) as server:
            yield server
    else:
        with nats_server() as server:
            yield server


async def test_api_of_one_node_reaches_a_connection_on_another_and_views_sync(
    tmp_path: Path, broker: ServerProcess
) -> None:
    with nodes(tmp_path, broker.url) as ((a, _b, c), key):
        async with peer(c, key, "carol") as carol, peer(a, key, "alice") as alice, \
                aiohttp.ClientSession() as http:
            body = {"to": {"connection": carol.id}, "action": {"type": "note/HI", "payload": {"via": "a"}}}
            async with http.post(f"{a.api}/v1/publish", json=body,
                                 headers={"Authorization": f"Bearer {API_KEY}"}) as resp:
                assert resp.status == 202
            assert (await carol.expect("note/HI", 5))["payload"] == {"via": "a"}
            await alice.join("acme:orders/1")
            joined = await carol.join("acme:orders/1")
            assert joined["payload"]["count"] == 2
            await alice.send("chat/MESSAGE", {"text": "across"}, channel="acme:orders/1")
            got = await carol.expect("chat/MESSAGE", 5)
            assert got["payload"] == {"text": "across"} and got["meta"]["from"]["userId"] == "alice"


async def _publish(alice: Peer, count: int, channel: str, pause: float) -> None:
    for i in range(count):
        await alice.send("chat/MESSAGE", {"i": i}, channel=channel)
        await asyncio.sleep(pause)  # the behaviour: a steady trickle while a node dies


async def _collect(p: Peer, into: dict[int, int], until: int, seconds: float) -> None:
    """Record offset → i of chat messages until ``until`` arrives or time runs out."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        try:
            action = await p.recv(max(0.05, deadline - loop.time()))
        except TimeoutError:
            return
        if action["type"] == "chat/MESSAGE":
            into[action["meta"]["offset"]] = action["payload"]["i"]
            if action["payload"]["i"] == until:
                return


async def test_a_killed_node_loses_nobody_s_messages(tmp_path: Path, broker: ServerProcess) -> None:
    count = 60
    with nodes(tmp_path, broker.url) as ((a, b, c), key):
        async with peer(a, key, "alice") as alice:
            await alice.join("acme:live")
            seen: dict[int, int] = {}
            async with peer(b, key, "bob") as bob:
                joined = await bob.join("acme:live")
                last = joined["payload"]["offset"]
                sender = asyncio.create_task(_publish(alice, count, "acme:live", 0.01))
                for _ in range(200):  # bounded: until bob has some of them
                    action = await bob.recv(5)
                    if action["type"] == "chat/MESSAGE":
                        seen[action["meta"]["offset"]] = action["payload"]["i"]
                        last = action["meta"]["offset"]
                        if len(seen) >= 10:
                            break
                b.proc.send_signal(signal.SIGKILL)
                with contextlib.suppress(ConnectionClosed, TimeoutError):
                    for _ in range(1000):
                        action = await bob.recv(5)
                        if action["type"] == "chat/MESSAGE":
                            seen[action["meta"]["offset"]] = action["payload"]["i"]
                            last = max(last, action["meta"]["offset"])
            await sender
            left: list[str] = []
            for _ in range(20):  # bob's old tab expires with its node's heartbeat
                presence = await alice.expect("@@wsgate/PRESENCE", timeout=5)
                left += [m["userId"] for m in presence["payload"]["left"]]
                if "bob" in left:
                    break
            assert "bob" in left
            async with peer(c, key, "bob") as back:
                await back.send("@@wsgate/JOIN", {"channel": "acme:live", "since": last}, id="j")
                rejoined = await back.expect("@@wsgate/JOINED", 5)
                assert rejoined["payload"]["recovered"] is True
                await _collect(back, seen, count - 1, 10)
            assert sorted(seen.values()) == list(range(count)), sorted(set(range(count)) - set(seen.values()))


async def test_broker_restart_under_load_resumes_and_recovers_the_gap(
    tmp_path: Path, broker: ServerProcess
) -> None:
    with nodes(tmp_path, broker.url) as ((a, _b, c), key):
        async with peer(a, key, "alice") as alice, peer(c, key, "carol") as carol:
            await alice.join("acme:load")
            joined = await carol.join("acme:load")
            start = joined["payload"]["offset"]
            received: dict[int, int] = {}
            collector = asyncio.create_task(_collect(carol, received, -1, 60))
            for i in range(30):
                await alice.send("chat/MESSAGE", {"i": i}, channel="acme:load")
                await asyncio.sleep(0.01)  # the behaviour: load paced before the restart
            await asyncio.to_thread(broker.restart)
            resumed = False
            for i in range(30, 400):  # bounded: until delivery resumed, then 40 more
                await alice.send("chat/MESSAGE", {"i": i}, channel="acme:load")
                await asyncio.sleep(0.02)  # the behaviour: load paced across the restart
                if not resumed and received and max(received.values()) >= 30:
                    resumed, stop_at = True, i + 40
                if resumed and i >= stop_at:
                    break
            # Offsets are delivered in order, a gap recovered before anything later:
            # once the last one sent is in, every earlier stored one is too.
            last_sent = i
            if resumed:
                await eventually(lambda: last_sent in received.values(), 10.0,
                                 what="the last action sent reaching carol")
            collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collector
            assert resumed, "delivery did not resume after the broker restarted"
            # Every action the stream holds after carol joined reached her: any
            # pub/sub delivery she missed around the restart came from history.
            prefix = _prefix(tmp_path)
            backend = await open_backend(broker.url, prefix=prefix, node="probe",
                                         history_size=1000, history_ttl_s=300)
            try:
                window = await backend.history.window("acme:load")
            finally:
                await backend.close()
            stored = {o for o, _ in window.entries if o > start}
            assert stored, "nothing was stored"
            missing = sorted(stored - set(received))
            assert not missing, f"{len(missing)} stored actions never reached carol: {missing[:5]}"


def _prefix(tmp: Path) -> str:
    text = (tmp / "a.toml").read_text()
    return text.split('prefix = "')[1].split('"')[0]


async def _publish_to_user(api: str, user: str, count: int, pause: float) -> None:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"}) as http:
        for i in range(count):
            body = {"to": {"user": user}, "action": {"type": "note/NEW", "payload": {"i": i}}}
            async with http.post(f"{api}/v1/publish", json=body) as resp:
                assert resp.status == 202
            await asyncio.sleep(pause)  # the behaviour: a steady trickle while a node dies


async def test_a_killed_node_loses_nothing_of_a_user_s_inbox(tmp_path: Path, broker: ServerProcess) -> None:
    """Bob's node is SIGKILLed while pushes to him stream in through another node's API;
    he reconnects to a third node with RESUME and the last offset he saw: every push
    reaches him exactly once, in offset order."""
    count = 60
    with nodes(tmp_path, broker.url) as ((a, b, c), key):
        seen: list[tuple[int, int]] = []
        async with peer(b, key, "bob") as bob:
            last = bob.welcome["inbox"]
            sender = asyncio.create_task(_publish_to_user(a.api, "bob", count, 0.01))
            for _ in range(200):  # bounded: until bob has some of them
                action = await bob.recv(5)
                if action["type"] == "note/NEW":
                    seen.append((action["meta"]["offset"], action["payload"]["i"]))
                    if len(seen) >= 10:
                        break
            b.proc.send_signal(signal.SIGKILL)
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                for _ in range(1000):
                    action = await bob.recv(5)
                    if action["type"] == "note/NEW":
                        seen.append((action["meta"]["offset"], action["payload"]["i"]))
        await sender
        last = max([last, *(o for o, _ in seen)])
        async with peer(c, key, "bob") as back:
            await back.send("@@wsgate/RESUME", {"inbox": last}, id="r")
            resumed = await back.expect("@@wsgate/RESUMED", 5)
            assert resumed["payload"]["recovered"] is True
            for _ in range(count):  # bounded: at most every push once more
                if len(seen) == count:
                    break
                action = await back.expect("note/NEW", 5)
                seen.append((action["meta"]["offset"], action["payload"]["i"]))
            await back.silent(0.3)
        offsets = [o for o, _ in seen]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
        assert sorted(i for _, i in seen) == list(range(count))


async def test_broker_restart_under_pushes_to_a_user_recovers_the_inbox_gap(
    tmp_path: Path, broker: ServerProcess
) -> None:
    """Pushes to carol stream in through node a's API while the broker restarts; carol's
    tab on node c gets every push the inbox stream stored, in offset order, the ones
    pub/sub lost around the restart fetched from the stream."""
    with nodes(tmp_path, broker.url) as ((a, _b, c), key):
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"}) as http, \
                peer(c, key, "carol") as carol:
            start = carol.welcome["inbox"]
            received: list[tuple[int, int]] = []

            async def collect() -> None:
                for _ in range(10_000):  # bounded; cancelled at the end
                    action = await carol.recv(60)
                    if action["type"] == "note/NEW":
                        received.append((action["meta"]["offset"], action["payload"]["i"]))

            collector = asyncio.create_task(collect())

            async def push(i: int) -> None:
                body = {"to": {"user": "carol"}, "action": {"type": "note/NEW", "payload": {"i": i}}}
                async with http.post(f"{a.api}/v1/publish", json=body) as resp:
                    assert resp.status == 202

            for i in range(30):
                await push(i)
                await asyncio.sleep(0.01)  # the behaviour: pushes paced before the restart
            await asyncio.to_thread(broker.restart)
            resumed, stop_at = False, 0
            for i in range(30, 400):  # bounded: until delivery resumed, then 40 more
                with contextlib.suppress(aiohttp.ClientError):
                    await push(i)
                await asyncio.sleep(0.02)  # the behaviour: pushes paced across the restart
                if not resumed and any(n >= 30 for _, n in received):
                    resumed, stop_at = True, i + 40
                if resumed and i >= stop_at:
                    break
            last_sent = i
            if resumed:
                await eventually(lambda: any(n == last_sent for _, n in received), 10.0,
                                 what="the last push reaching carol")
            collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collector
            assert resumed, "delivery did not resume after the broker restarted"
            offsets = [o for o, _ in received]
            assert offsets == sorted(set(offsets)), "out of order or twice"
            backend = await open_backend(broker.url, prefix=_prefix(tmp_path), node="probe",
                                         history_size=1000, history_ttl_s=300, inbox_size=1000)
            try:
                window = await backend.history.window("@inbox:carol")
            finally:
                await backend.close()
            stored = {o for o, _ in window.entries if o > start}
            assert stored, "nothing was stored"
            missing = sorted(stored - set(offsets))
            assert not missing, f"{len(missing)} stored pushes never reached carol: {missing[:5]}"
