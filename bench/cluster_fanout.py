"""Cross-node fan-out: one channel of N members over three gateway nodes, through
Redis and through NATS, beside the single-node run as the reference.

For each backend, in this order, in one invocation:

- ``memory`` (the reference): one node, ``[broker] url = "memory://"``, all N
  members on it;
- ``redis`` and ``nats``: a fresh broker (``tests/servers.py``) and three
  nodes ``a``, ``b``, ``c`` (``python -m wsgate.cli serve``, one shared
  prefix and session key), N/3 members on each.

A publisher client (also a member) on node ``a`` sends
``{"type":"bench/MSG","payload":{~100 bytes},"meta":{"channel":"acme:bench"}}``;
the ``bench/*`` relay delivers it to every other member on every node.

Measured:

- burst: B messages back to back; deliveries/s = N * B / (time until every
  member has every message). R rounds after warm-up, median;
- one at a time: latency from the send to the last member and to the median
  member (and to the last member of each node). R rounds, median;
- the servers' CPU (every node + the broker) per delivery during the bursts;
- broker messages per published action, counted by the broker itself: Redis
  ``INFO commandstats`` (one ``EVALSHA`` per action: XADD + PUBLISH inside) ×
  ``PUBSUB NUMSUB`` of the channel's pub/sub channel (Redis delivers a
  PUBLISH once per subscribed connection), and bytes out per action; NATS
  ``/connz`` in/out message deltas of each node's connection (and ``/varz``);
- control: node ``c``'s members leave (idle signed-in clients stay on it) and
  more actions are published: the broker must send node ``c`` nothing for
  the channel (NATS: its connection's out_msgs delta and subscriptions;
  Redis: the channel's subscriber count and ``c``'s subscription count).

Pinning (2 cores): every server process — nodes and broker — on CPU 0, the
load generator (this process: picows clients on uvloop) on CPU 1. The
cluster gets the same one core of server CPU as the single node: the ratios
show the cost of the broker hop and of three processes sharing that core.

Usage::

    . .venv/bin/activate
    python bench/cluster_fanout.py [--n 3000] [--burst 20] [--rounds 7]
                                   [--backends memory redis nats] [--profile DIR]

Exits non-zero, saying what happened, when a server does not start, a client
cannot connect or join, a round times out or a receiver lost or duplicated a
message.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _clients import Client, Pool, bench_message
from _cluster import (
    Broker,
    NatsCounters,
    Node,
    RedisCounters,
    broker,
    nats_channel_subject,
    publish_all,
    start_nodes,
    stop_nodes,
    unpin_self,
)
from _servers import CLIENT_CPU, SERVER_CPU, BenchError, pin_self

CHANNEL = "acme:bench"
PAYLOAD = 100
WARMUP_BURSTS = 2
WARMUP_ONES = 3
CONTROL_ACTIONS = 20
IDLE_ON_C = 10
"""Signed-in clients left on node c in the control run (it is alive, has no member)."""


@dataclass
class Result:
    kind: str
    n: int
    nodes: int
    rates: list[float] = field(default_factory=list)
    last: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    node_last: dict[str, list[float]] = field(default_factory=dict)
    cpu_us: float = 0.0
    cpu_share: dict[str, float] = field(default_factory=dict)
    writes_per_delivery: dict[str, float] = field(default_factory=dict)
    burst_wall: float = 0.0
    frame: int = 0
    counts_burst: dict[str, Any] | None = None
    counts_one: dict[str, Any] | None = None
    counts_ctrl: dict[str, Any] | None = None
    background: dict[str, Any] | None = None
    verdict: str = ""

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    @property
    def lat_last(self) -> float:
        return statistics.median(self.last) * 1000

    @property
    def lat_p50(self) -> float:
        return statistics.median(self.p50) * 1000


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _syscw(pid: int) -> int:
    """Write system calls of ``pid`` so far (``/proc/<pid>/io``; 0 when unreadable)."""
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("syscw:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _split(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


async def _connect(node: Node, n: int, cookie: str, join: str | None) -> Pool:
    pool = Pool(gateway=True, join=join)
    await pool.connect(node.url, n, {"Cookie": f"wsgate_session={cookie}"}, timeout=60 + n / 50)
    return pool


async def _quiesce(pools: list[Pool], quiet: float = 1.5, limit: float = 60.0) -> None:
    await asyncio.gather(*(p.quiesce(quiet, limit) for p in pools))


def _check(pools: list[Pool]) -> None:
    for p in pools:
        p.check_counts(p.clients)


async def run_backend(kind: str, args: argparse.Namespace, workdir: Path) -> Result:
    cluster = kind != "memory"
    names = "abc" if cluster else "a"
    n, burst = args.n, args.burst
    unpin_self()
    with broker(kind) as brk:
        nodes, cookie = start_nodes(workdir, names, brk.url)
        pin_self(CLIENT_CPU)
        try:
            return await _measure(kind, brk, nodes, cookie, n, burst, args)
        except BenchError as exc:
            tails = "\n".join(f"--- node {x.name} log tail:\n{x.srv.log_tail(1200)}" for x in nodes)
            raise BenchError(f"{kind}: {exc}\n{tails}") from None
        finally:
            stop_nodes(nodes)


async def _measure(
    kind: str,
    brk: Broker,
    nodes: list[Node],
    cookie: str,
    n: int,
    burst: int,
    args: argparse.Namespace,
) -> Result:
    res = Result(kind, n, len(nodes))
    split = _split(n, len(nodes))
    t = time.monotonic()
    pub_pool = await _connect(nodes[0], 1, cookie, CHANNEL)
    publisher: Client = pub_pool.clients[0]
    pools = [await _connect(node, k, cookie, CHANNEL) for node, k in zip(nodes, split, strict=True)]
    await _quiesce([pub_pool, *pools])
    print(
        f"  {kind}: {n} members on {len(nodes)} node(s) {split} + publisher on a, "
        f"ready in {time.monotonic() - t:.1f}s",
        flush=True,
    )
    gc.collect()
    gc.freeze()

    counters: RedisCounters | NatsCounters | None = None
    if brk.kind == "redis":
        counters = RedisCounters(brk.url, nodes, "chan." + CHANNEL)
    elif brk.kind == "nats":
        assert brk.monitor_port is not None
        counters = NatsCounters(brk.monitor_port, nodes, nats_channel_subject(CHANNEL))
    if counters is not None:
        await counters.calibrate()
    try:
        return await _rounds(
            res, brk, nodes, cookie, pools, publisher, split, burst, counters, args
        )
    finally:
        if counters is not None:
            await counters.close()
        for p in [pub_pool, *pools]:
            await p.close_all()


async def _rounds(
    res: Result,
    brk: Broker,
    nodes: list[Node],
    cookie: str,
    pools: list[Pool],
    publisher: Client,
    split: list[int],
    burst: int,
    counters: RedisCounters | NatsCounters | None,
    args: argparse.Namespace,
) -> Result:
    n = res.n
    seq = 0

    def msgs(k: int) -> list[bytes]:
        nonlocal seq
        out = [bench_message(seq + i, CHANNEL, PAYLOAD) for i in range(k)]
        seq += k
        return out

    burst_timeout = 10 + n * burst / 20_000
    for _ in range(WARMUP_BURSTS):
        await publish_all(publisher, pools, split, msgs(burst), burst_timeout)
        await asyncio.sleep(0.2)
    for _ in range(WARMUP_ONES):
        await publish_all(publisher, pools, split, msgs(1), 10)
        await asyncio.sleep(0.05)
    _check(pools)

    if counters is not None:  # background broker traffic (heartbeats): an idle window
        a = await counters.snapshot()
        await asyncio.sleep(args.idle)
        b = await counters.snapshot()
        res.background = counters.per_action(a, b, 1)

    # Bursts -------------------------------------------------------------------------
    pids = {x.name: x.pid for x in nodes}
    if brk.pid is not None:
        pids["broker"] = brk.pid
    cpu_total = dict.fromkeys(pids, 0.0)
    c0 = await counters.snapshot() if counters else None
    w0 = {x.name: _syscw(x.pid) for x in nodes}
    for _ in range(args.rounds):
        before = {k: _cpu(p) for k, p in pids.items()}
        t0, arrivals = await publish_all(publisher, pools, split, msgs(burst), burst_timeout)
        wall = max(a[-1] for a in arrivals) - t0
        after = {k: _cpu(p) for k, p in pids.items()}
        for k in pids:
            cpu_total[k] += after[k] - before[k]
        res.burst_wall += wall
        res.rates.append(n * burst / wall)
        _check(pools)
        await asyncio.sleep(0.2)
    c1 = await counters.snapshot() if counters else None
    for x, members in zip(nodes, split, strict=True):
        writes = _syscw(x.pid) - w0[x.name]
        res.writes_per_delivery[x.name] = writes / (members * burst * args.rounds)
    cpu_sum = sum(cpu_total.values())
    res.cpu_us = cpu_sum / (n * burst * args.rounds) * 1e6
    res.cpu_share = {k: v / res.burst_wall for k, v in cpu_total.items()}
    res.frame = max(p.frame_size for p in pools)

    # One at a time --------------------------------------------------------------------
    for x in nodes:
        res.node_last[x.name] = []
    for _ in range(args.rounds_one):
        t0, arrivals = await publish_all(publisher, pools, split, msgs(1), 10)
        every = sorted(stamp for stamps in arrivals for stamp in stamps)
        res.last.append(every[-1] - t0)
        res.p50.append(every[len(every) // 2] - t0)
        for x, stamps in zip(nodes, arrivals, strict=True):
            res.node_last[x.name].append(stamps[-1] - t0)
        _check(pools)
        await asyncio.sleep(0.05)
    c2 = await counters.snapshot() if counters else None

    if counters is not None:
        assert c0 and c1 and c2
        res.counts_burst = counters.per_action(c0, c1, args.rounds * burst)
        res.counts_one = counters.per_action(c1, c2, args.rounds_one)
        res.counts_ctrl = await _control(nodes, cookie, pools, publisher, split, counters, msgs)

    if args.profile and len(nodes) > 0:
        await _profile(res, nodes, pools, publisher, split, burst, burst_timeout, msgs, args)
    return res


async def _control(
    nodes: list[Node],
    cookie: str,
    pools: list[Pool],
    publisher: Client,
    split: list[int],
    counters: RedisCounters | NatsCounters,
    msgs: Any,
) -> dict[str, Any]:
    """Node c's members leave; c keeps idle signed-in clients; publish; count."""
    await pools[2].close_all()
    idle = await _connect(nodes[2], IDLE_ON_C, cookie, None)
    try:
        await _quiesce([*pools[:2], idle])
        a = await counters.snapshot()
        for _ in range(CONTROL_ACTIONS):
            await publish_all(publisher, pools[:2], split[:2], msgs(1), 10)
            await asyncio.sleep(0.02)
        _check(pools[:2])
        b = await counters.snapshot()
        counts = counters.per_action(a, b, CONTROL_ACTIONS)
        counts["idle_on_c_got"] = sum(c.got for c in idle.clients)
        return counts
    finally:
        await idle.close_all()


async def _profile(
    res: Result,
    nodes: list[Node],
    pools: list[Pool],
    publisher: Client,
    split: list[int],
    burst: int,
    timeout: float,
    msgs: Any,
    args: argparse.Namespace,
) -> None:
    """py-spy record every node (raw collapsed stacks) while bursts run for --profile-s."""
    out = Path(args.profile)
    out.mkdir(parents=True, exist_ok=True)
    live = [
        (x, p) for x, p in zip(nodes, pools, strict=True) if p.clients and p.disconnected < p.opened
    ]
    spies = []
    for x in nodes:
        path = out / f"{res.kind}-node-{x.name}.txt"
        spies.append(
            subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    "--pid",
                    str(x.pid),
                    "--format",
                    "raw",
                    "--rate",
                    "200",
                    "-d",
                    str(int(args.profile_s)),
                    "-o",
                    str(path),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    await asyncio.sleep(0.5)
    end = time.monotonic() + args.profile_s - 1
    rounds = 0
    while time.monotonic() < end and rounds < 1000:
        await publish_all(
            publisher, [p for _, p in live], [len(p.clients) for _, p in live], msgs(burst), timeout
        )
        rounds += 1
        await asyncio.sleep(0.05)
    for s in spies:
        try:
            s.wait(args.profile_s + 30)
        except subprocess.TimeoutExpired:
            s.kill()
    print(f"  {res.kind}: profiled {rounds} bursts into {out}", flush=True)


# -- report ------------------------------------------------------------------------


def _fmt_counts(c: dict[str, Any] | None) -> str:
    if c is None:
        return "- (no broker)"
    return f"{c['in']:.2f} in + {c['out']:.2f} out = {c['in'] + c['out']:.2f}"


def report(results: list[Result], args: argparse.Namespace) -> bool:
    ref = next((r for r in results if r.kind == "memory"), None)
    print()
    print(
        f"Cross-node fan-out: N = {args.n} members of {CHANNEL}, burst B = {args.burst}, "
        f"R = {args.rounds} bursts / {args.rounds_one} single messages (medians)"
    )
    print()
    head = (
        "| backend | nodes | deliveries/s | ratio | latency p50 / last (ms) | ratio (last) "
        "| server CPU µs/delivery | broker msgs per action |"
    )
    print(head)
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    ok = True
    for r in results:
        ratio = f"{r.rate / ref.rate:.2f}" if ref else "-"
        lratio = f"{r.lat_last / ref.lat_last:.2f}" if ref else "-"
        print(
            f"| {r.kind} | {r.nodes} | {r.rate:,.0f} | {ratio} | {r.lat_p50:.1f} / "
            f"{r.lat_last:.1f} | {lratio} | {r.cpu_us:.2f} | {_fmt_counts(r.counts_burst)} |"
        )
    print()
    for r in results:
        share = ", ".join(f"{k} {v:.0%}" for k, v in r.cpu_share.items())
        per_node = ", ".join(
            f"{k} {statistics.median(v) * 1000:.1f}" for k, v in r.node_last.items()
        )
        print(
            f"{r.kind}: best burst {max(r.rates):,.0f}/s, worst {min(r.rates):,.0f}/s; "
            f"delivered frame {r.frame} B; CPU during bursts: {share}; write syscalls per "
            f"delivery: {', '.join(f'{k} {v:.3f}' for k, v in r.writes_per_delivery.items())}; "
            f"one at a time, last member per node (ms): {per_node}"
        )
    for r in results:
        if r.counts_one is None:
            continue
        print()
        print(f"{r.kind} broker counters (per published action):")
        for label, c in (
            ("bursts", r.counts_burst),
            ("one at a time", r.counts_one),
            ("control, members on a and b only", r.counts_ctrl),
        ):
            assert c is not None
            if r.kind == "redis":
                cmds = ", ".join(
                    f"{k} {v / c['actions']:.2f}" for k, v in sorted(c["commands"].items())
                )
                print(
                    f"  {label} ({c['actions']} actions): commands [{cmds}]; channel "
                    f"subscribers {c['channel_subscribers']}; bytes out {c['out_bytes']:.0f}, "
                    f"in {c['in_bytes']:.0f}; subscriptions per node {c['subs_per_node']}"
                )
            else:
                per = "; ".join(
                    f"{k}: in {v['in']:.2f} out {v['out']:.2f} subs {v['subs']}"
                    f"{' +channel' if v['channel'] else ' (no channel sub)'}"
                    for k, v in sorted(c["nodes"].items())
                )
                print(
                    f"  {label} ({c['actions']} actions): {per}; server total in "
                    f"{c['server_in']:.2f} out {c['server_out']:.2f}; bytes out "
                    f"{c['out_bytes']:.0f}"
                )
            if "idle_on_c_got" in c:
                print(f"    idle clients on c received {c['idle_on_c_got']} bench messages")
        bg = r.background
        if bg is not None:
            if r.kind == "redis":
                print(
                    f"  background (idle {args.idle:.0f}s, per second): "
                    f"{ {k: round(v / bg['seconds'], 2) for k, v in bg['commands'].items()} }"
                )
            else:
                print(
                    f"  background (idle {args.idle:.0f}s, per second): in "
                    f"{bg['in'] / bg['seconds']:.2f} out {bg['out'] / bg['seconds']:.2f}"
                )
        # Target: broker messages per action <= nodes with members (3) + 1 (the publish).
        one, ctrl, bur = r.counts_one, r.counts_ctrl, r.counts_burst
        assert one is not None and ctrl is not None and bur is not None
        if r.kind == "redis":
            total = bur["in"] + bur["out"]
            deliveries = bur["out"]
            subs_ok = one["channel_subscribers"] == 3 and ctrl["channel_subscribers"] == 2
            c_quiet = ctrl["subs_per_node"]["c"] < one["subs_per_node"]["c"]
            detail = (
                f"{bur['in']:.2f} EVALSHA in + {bur['out']:.2f} deliveries out "
                f"(PUBSUB NUMSUB {one['channel_subscribers']} → "
                f"{ctrl['channel_subscribers']} in the control)"
            )
        else:
            nodes = bur["nodes"]
            # Heartbeats (JetStream puts and their acks) run beside: subtract their rate
            # from the idle window.
            bg = r.background or {"in": 0, "out": 0, "seconds": 1.0}
            scale = bur["seconds"] / bg["seconds"] / bur["actions"]
            b_in, b_out = bur["in"] - bg["in"] * scale, bur["out"] - bg["out"] * scale
            total = b_in + b_out
            # The append is a plain publish, republished by JetStream to the channel
            # subject: everything out is a delivery (flow-control syncs, 2 per 1,000
            # actions, are within the rounding).
            deliveries = b_out
            # The nodes' own bus connections ("a", "b", "c"); a node's other NATS
            # connections ("a services", "<prefix> acks") never subscribe to channels.
            subs_ok = all(v["channel"] for k, v in nodes.items() if " " not in k)
            c_node = ctrl["nodes"].get("c", {})
            c_quiet = not c_node.get("channel", True) and c_node.get("out", 1.0) < 0.1
            detail = (
                f"{b_in:.2f} in (the history append) + "
                f"{b_out:.2f} out (republished deliveries), heartbeats subtracted "
                f"({bur['in']:.2f} + {bur['out']:.2f} raw); control: node c "
                f"out {c_node.get('out', float('nan')):.2f}/action"
            )
        c_quiet = c_quiet and ctrl["idle_on_c_got"] == 0
        fan_ok = deliveries <= 3.1 and subs_ok
        total_ok = total <= 4.1
        print(f"  per action (bursts): {detail}")
        print(
            f"  target: deliveries ≤ nodes with members (3): "
            f"{'met' if fan_ok else 'NOT met'} ({deliveries:.2f}); total ≤ 3 + 1: "
            f"{'met' if total_ok else 'NOT met'} ({total:.2f}); control, node c gets nothing "
            f"for the channel: {'yes' if c_quiet else 'NO'}"
        )
        r.verdict = f"{total:.2f} ({deliveries:.2f} deliveries)" + ("" if total_ok else " > 4")
        ok = ok and fan_ok and c_quiet
    return ok


async def main_async(args: argparse.Namespace) -> int:
    results: list[Result] = []
    unpin_self()
    print(
        f"pinning: nodes and brokers on CPU {SERVER_CPU}, this load generator on CPU "
        f"{CLIENT_CPU} ({'yes' if pin_self(CLIENT_CPU) else 'no: fewer than 2 CPUs'})",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="wsgate-cluster-bench-") as tmp:
        for kind in args.backends:
            print(f"running {kind} ...", flush=True)
            t = time.monotonic()
            results.append(await run_backend(kind, args, Path(tmp)))
            print(f"  {kind}: done in {time.monotonic() - t:.0f}s", flush=True)
    report(results, args)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=3000, help="members (spread over the nodes)")
    ap.add_argument("--burst", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=7, help="measured bursts")
    ap.add_argument("--rounds-one", type=int, default=15, help="measured single messages")
    ap.add_argument("--idle", type=float, default=4.0, help="background window (s)")
    ap.add_argument(
        "--backends",
        nargs="+",
        default=["memory", "redis", "nats"],
        choices=["memory", "redis", "nats"],
    )
    ap.add_argument("--profile", default="", help="py-spy raw stacks of each node into DIR")
    ap.add_argument("--profile-s", type=float, default=8.0)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, args.n + 1000))
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    try:
        return uvloop.run(main_async(args))
    except BenchError as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
