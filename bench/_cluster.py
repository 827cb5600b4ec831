"""Cluster helpers for ``cluster_fanout.py``: brokers, gateway nodes, broker counters.

- :func:`broker` starts a real Redis or NATS (``tests/servers.py``: free port,
  temporary data directory; NATS with its HTTP monitoring port) and pins it to
  the servers' CPU, or yields ``None`` for ``memory://``;
- :func:`start_nodes` writes one config per node (ids ``a``, ``b``, ``c``, one
  ``[broker]`` url and prefix, one session key) and starts ``wsgate serve``
  for each through ``_servers.ServerProcess`` (pinned to the servers' CPU,
  output to a log file, bounded start);
- :class:`RedisCounters` / :class:`NatsCounters` read the broker's own
  counters (Redis ``INFO commandstats``/``stats``, ``PUBSUB NUMSUB``,
  ``CLIENT LIST``; NATS ``/varz`` and ``/connz?subs=1``), so the messages per
  published action are counted where they are sent, not where we hope;
- :func:`publish_all` sends a burst from one publisher and waits until every
  receiver in several pools (one per node) has it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

try:
    from _clients import Client, Pool
    from _servers import REPO, SERVER_CPU, BenchError, ServerProcess, _cli, free_port
except ImportError:  # pragma: no cover - imported as bench._cluster
    from bench._clients import Client, Pool
    from bench._servers import REPO, SERVER_CPU, BenchError, ServerProcess, _cli, free_port

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # tests/servers.py: real Redis and NATS on free ports

NODE_CONFIG: Final = """\
[server]
listen = "127.0.0.1:{port}"
allowed_origins = ["*"]
node_id = "{node}"
max_channels_per_connection = 64
outbound_high_water_bytes = 16777216
heartbeat_ms = 600000

[api]
listen = "127.0.0.1:{api_port}"
keys = ["bench-only"]

[auth]
keys = ["{key}"]

[broker]
url = "{broker_url}"
prefix = "{prefix}"

[presence]
max_members = 100
batch_ms = 50

[limits]
max_connections = 100000
max_connections_per_ip = 0
max_connections_per_user = 0
handshake_rate_per_ip = ""
default_rate = ""

[history]
size = 1000

[[relays]]
match = "bench/*"
"""


def _pin(pid: int) -> None:
    """Pin every thread of ``pid`` (a broker started by tests/servers.py) to the servers' CPU."""
    if (os.cpu_count() or 1) < 2:
        return
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(tid), {SERVER_CPU})


def unpin_self() -> None:
    """Let this process run anywhere again (before starting servers: they inherit it,
    and ``_servers.ServerProcess`` pins only when the parent may use the servers' CPU)."""
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))


@dataclass
class Broker:
    kind: str  # memory | redis | nats
    url: str
    pid: int | None = None
    monitor_port: int | None = None

    def cpu_seconds(self) -> float:
        if self.pid is None:
            return 0.0
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def broker(kind: str) -> Any:
    """A fresh broker of ``kind`` (pinned to the servers' CPU), stopped on exit."""
    if kind == "memory":
        yield Broker("memory", "memory://")
        return
    from tests.servers import nats_server, redis_server

    if kind == "redis":
        with redis_server() as srv:
            assert srv.proc is not None
            _pin(srv.proc.pid)
            yield Broker("redis", srv.url, srv.proc.pid)
    elif kind == "nats":
        monitor = free_port()
        with nats_server(monitor_port=monitor) as srv:
            assert srv.proc is not None
            _pin(srv.proc.pid)
            _wait_http(f"http://127.0.0.1:{monitor}/varz", 10)
            yield Broker("nats", srv.url, srv.proc.pid, monitor)
    else:
        raise BenchError(f"unknown broker {kind!r}")


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                r.read()
            return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise BenchError(f"{url} did not answer in {timeout:.0f}s: {exc}") from None
            time.sleep(0.1)


@dataclass
class Node:
    name: str
    srv: ServerProcess
    config: Path

    @property
    def url(self) -> str:
        return self.srv.url

    @property
    def pid(self) -> int:
        return self.srv.pid


def start_nodes(workdir: Path, names: str, broker_url: str) -> tuple[list[Node], str]:
    """Start one ``wsgate serve`` per name; return the nodes and a session cookie value."""
    key = _cli("keys", "new")
    prefix = "bench" + uuid.uuid4().hex[:8]
    nodes: list[Node] = []
    try:
        for name in names:
            port = free_port()
            config = workdir / f"node-{name}-{port}.toml"
            config.write_text(
                NODE_CONFIG.format(
                    port=port,
                    api_port=free_port(),
                    node=name,
                    key=key,
                    broker_url=broker_url,
                    prefix=prefix,
                )
            )
            argv = [sys.executable, "-m", "wsgate.cli", "serve", "--config", str(config)]
            srv = ServerProcess(
                f"node {name}", argv, workdir / f"node-{name}-{port}.log", "listening on "
            )
            nodes.append(Node(name, srv, config))
        cookie = _cli(
            "cookie", "--config", str(nodes[0].config), "--user", "bench", "--org", "acme"
        )
    except BaseException:
        stop_nodes(nodes)
        raise
    return nodes, cookie


def stop_nodes(nodes: Sequence[Node]) -> None:
    for node in nodes:
        with contextlib.suppress(Exception):
            node.srv.stop()


# -- broker counters -------------------------------------------------------------------


def _socket_ports(pid: int, remote_port: int) -> set[int]:
    """Local ports of ``pid``'s TCP connections to 127.0.0.1:``remote_port``."""
    inodes: set[str] = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f)
            for line in f:
                parts = line.split()
                local, remote, inode = parts[1], parts[2], parts[9]
                if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == remote_port:
                    ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


class RedisCounters:
    """Redis's view: commands called, bytes in and out, who subscribes to what."""

    def __init__(self, url: str, nodes: Sequence[Node], channel_subject: str) -> None:
        import redis.asyncio as aioredis

        self._r = aioredis.Redis.from_url(url, socket_timeout=5)
        self._port = int(url.rsplit(":", 1)[1])
        self._nodes = nodes
        self.channel_subject = channel_subject

    async def close(self) -> None:
        await self._r.aclose()

    PROBES: Final = frozenset(
        {"info", "client|list", "client", "pubsub|channels", "pubsub|numsub", "pubsub"}
    )
    """Commands this class sends itself (left out of the per-action figures)."""

    async def calibrate(self) -> None:
        """Bytes two back-to-back snapshots cost (this class's own probes), subtracted later."""
        a = await self.snapshot()
        b = await self.snapshot()
        self.probe_out = b["out_bytes"] - a["out_bytes"]
        self.probe_in = b["in_bytes"] - a["in_bytes"]

    probe_out = 0
    probe_in = 0

    async def snapshot(self) -> dict[str, Any]:
        r = self._r
        net = await r.info("stats")
        stats = await r.info("commandstats")
        calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}
        found = await r.pubsub_channels("*" + self.channel_subject)
        channels = [c.decode() if isinstance(c, bytes) else c for c in found]
        numsub = dict(await r.pubsub_numsub(*channels)) if channels else {}
        by_port = {}
        for c in await r.client_list():
            by_port[int(c["addr"].rsplit(":", 1)[1])] = c
        subs: dict[str, int] = {}
        for node in self._nodes:
            ports = _socket_ports(node.pid, self._port)
            subs[node.name] = sum(int(by_port[p].get("sub", 0)) for p in ports if p in by_port)
        return {
            "t": time.monotonic(),
            "calls": calls,
            "in_bytes": net["total_net_input_bytes"],
            "out_bytes": net["total_net_output_bytes"],
            "probe_out": self.probe_out,
            "probe_in": self.probe_in,
            "channel_subscribers": sum(int(v) for v in numsub.values()),
            "subs_per_node": subs,
        }

    @staticmethod
    def per_action(a: dict[str, Any], b: dict[str, Any], actions: int) -> dict[str, Any]:
        calls = {k: b["calls"].get(k, 0) - a["calls"].get(k, 0) for k in b["calls"]}
        calls = {k: v for k, v in calls.items() if v and k not in RedisCounters.PROBES}
        evalsha = calls.get("evalsha", 0)
        return {
            "actions": actions,
            "seconds": b["t"] - a["t"],
            "commands": calls,
            # A channel action is one EVALSHA (XADD + PUBLISH inside the script);
            # Redis delivers each PUBLISH once to each subscribed connection.
            "in": evalsha / actions,
            "out": evalsha / actions * b["channel_subscribers"],
            "out_bytes": (b["out_bytes"] - a["out_bytes"] - b["probe_out"]) / actions,
            "in_bytes": (b["in_bytes"] - a["in_bytes"] - b["probe_in"]) / actions,
            "channel_subscribers": b["channel_subscribers"],
            "subs_per_node": b["subs_per_node"],
        }


class NatsCounters:
    """NATS's view (monitoring port): messages in and out, per node connection."""

    def __init__(self, monitor_port: int, nodes: Sequence[Node], channel_subject: str) -> None:
        self._base = f"http://127.0.0.1:{monitor_port}"
        self._nodes = nodes
        self.channel_subject = channel_subject

    async def close(self) -> None:
        return None

    async def calibrate(self) -> None:
        """Nothing to do: the monitoring port is HTTP, not a NATS client."""

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(self._base + path, timeout=5) as r:
            return json.loads(r.read())

    async def snapshot(self) -> dict[str, Any]:
        varz, connz = await asyncio.gather(
            asyncio.to_thread(self._get, "/varz"),
            asyncio.to_thread(self._get, "/connz?subs=1&limit=1024"),
        )
        per: dict[str, dict[str, Any]] = {}
        for c in connz.get("connections", []):
            name = c.get("name", "")
            if name.startswith("wsgate "):
                subs = c.get("subscriptions_list") or []
                per[name[7:]] = {
                    "in": c["in_msgs"],
                    "out": c["out_msgs"],
                    "subs": len(subs),
                    "channel": any(s.endswith(self.channel_subject) for s in subs),
                }
        return {
            "t": time.monotonic(),
            "in": varz["in_msgs"],
            "out": varz["out_msgs"],
            "in_bytes": varz["in_bytes"],
            "out_bytes": varz["out_bytes"],
            "nodes": per,
        }

    @staticmethod
    def per_action(a: dict[str, Any], b: dict[str, Any], actions: int) -> dict[str, Any]:
        nodes = {}
        for name, now in b["nodes"].items():
            was = a["nodes"].get(name, {"in": 0, "out": 0})
            nodes[name] = {
                "in": (now["in"] - was["in"]) / actions,
                "out": (now["out"] - was["out"]) / actions,
                "subs": now["subs"],
                "channel": now["channel"],
            }
        return {
            "actions": actions,
            "seconds": b["t"] - a["t"],
            "in": sum(n["in"] for n in nodes.values()),
            "out": sum(n["out"] for n in nodes.values()),
            "server_in": (b["in"] - a["in"]) / actions,
            "server_out": (b["out"] - a["out"]) / actions,
            "out_bytes": (b["out_bytes"] - a["out_bytes"]) / actions,
            "in_bytes": (b["in_bytes"] - a["in_bytes"]) / actions,
            "nodes": nodes,
        }


def nats_channel_subject(channel: str) -> str:
    """The tail of the NATS subject of ``channel``'s deliveries (any prefix)."""
    from wsgate.backends.nats_names import encode_token

    return f".msg.{encode_token('chan')}.{encode_token(channel)}"


# -- publishing across pools -------------------------------------------------------------


async def publish_all(
    publisher: Client,
    pools: Sequence[Pool],
    receivers: Sequence[int],
    msgs: list[bytes],
    timeout: float,
) -> tuple[float, list[list[float]]]:
    """Send ``msgs`` back to back from ``publisher``; wait until every receiver of
    every pool has them. Returns the send time and each pool's arrival stamps."""
    loop = asyncio.get_running_loop()
    for pool, n in zip(pools, receivers, strict=True):
        pool.expect += len(msgs)
        pool.arrivals = []
        pool.waiting_for = n
        pool.done = loop.create_future()
    send = publisher.wst.send
    from picows import WSMsgType

    t0 = time.perf_counter()
    for m in msgs:
        send(WSMsgType.TEXT, m)
    futures = [p.done for p in pools if p.done is not None]
    try:
        _, pending = await asyncio.wait(futures, timeout=timeout)
        if pending:
            lines = []
            for i, pool in enumerate(pools):
                got = sorted(c.got for c in pool.clients) or [0]
                lines.append(
                    f"pool {i}: {len(pool.arrivals)}/{receivers[i]} complete, counts "
                    f"min={got[0]} max={got[-1]} expected {pool.expect}; "
                    f"closes={pool.closes[:3]} errors={pool.errors[:2]}"
                )
            raise BenchError(
                f"after {timeout:.1f}s not every receiver had every message:\n  "
                + "\n  ".join(lines)
            )
    finally:
        for p in pools:
            p.done = None
    return t0, [p.arrivals for p in pools]


@contextlib.asynccontextmanager
async def closing(counters: RedisCounters | NatsCounters | None) -> AsyncIterator[None]:
    try:
        yield
    finally:
        if counters is not None:
            await counters.close()
