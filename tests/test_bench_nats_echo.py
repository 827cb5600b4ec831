"""The Go NATS echo of ``bench/procedures.py --nats-service go``: discovered over $SRV.INFO
as the Python echo is, and it answers as the Python echo does.

Built by ``bench/anchors/build_nats_echo.sh`` (as the bench builds it on first use); skipped
where Go or Debian's nats.go sources are missing.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client

from tests.helpers import eventually
from tests.servers import NATS_SERVER, nats_server
from wsgate.backends.nats import close_client, connect_nats
from wsgate.protocol.envelope import Action
from wsgate.routing.context import InvocationContext
from wsgate.routing.nats_discovery import NatsDiscovery
from wsgate.routing.nats_invoker import NatsInvoker
from wsgate.routing.results import InvocationResult
from wsgate.routing.table import RouteTable

BENCH = Path(__file__).resolve().parent.parent / "bench"
GOPATH = Path("/usr/share/gocode/src/github.com/nats-io/nats.go")

pytestmark = [
    pytest.mark.skipif(
        shutil.which("go") is None or not GOPATH.is_dir() or NATS_SERVER is None,
        reason="no Go NATS toolchain (apt-get install golang-go golang-github-nats-io-go-nats-dev)"
        " or no nats-server",
    ),
    pytest.mark.timeout(120),  # the first build takes ~30 s on a loaded machine
    pytest.mark.slow,
]


@pytest.fixture(scope="module")
def nats_url() -> Iterator[str]:
    with nats_server() as server:
        yield server.url


@pytest.fixture(scope="module")
def procedures() -> Iterator[Any]:
    sys.path.insert(0, str(BENCH))
    sys.modules.pop("procedures", None)
    import procedures

    try:
        yield procedures
    finally:
        sys.path.remove(str(BENCH))


def _echo(procedures: Any, kind: str, url: str, log: Path) -> Any:
    from _servers import ServerProcess as BenchProcess

    if kind == "go":
        reason = procedures.go_echo_reason()
        assert reason is None, reason
    return BenchProcess(f"echo-nats-{kind}", procedures._nats_echo(kind, url), log, "listening on ")


@pytest.fixture
def go_echo(procedures: Any, nats_url: str, tmp_path: Path) -> Iterator[None]:
    proc = _echo(procedures, "go", nats_url, tmp_path / "go.log")
    try:
        yield
    finally:
        proc.stop()


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await connect_nats(nats_url, name="wsgate test")
    yield client
    await close_client(client)


async def test_the_go_echo_is_discovered_and_answers_the_request(
    go_echo: None, nc: Client
) -> None:
    table = RouteTable()
    disco = NatsDiscovery(nc, table, interval_s=0.3, window_s=0.1)
    disco.start()
    invoker = NatsInvoker(nc)
    try:
        await eventually(lambda: table.lookup("nats/PING") is not None, 10, what="routed")
        found = table.lookup("nats/PING")
        assert found is not None and found.pool.transport == "nats"
        assert [i.url for i in found.pool.instances] == ["wsgate.echo-nats"]
        assert table.lookup("echo/PING") is None  # it announces nats/* only
        payload = {"pad": "xyz", "n": [1, 2.5, None]}
        results = [
            await invoker.invoke(
                found,
                Action(type="nats/PING", payload=msgspec.Raw(json.dumps(payload).encode())),
                InvocationContext(connectionId="n1.AbCdEf"),
            )
            for _ in range(3)
        ]
    finally:
        await invoker.aclose()
        await disco.aclose()
    for result in results:
        assert isinstance(result, InvocationResult)
        assert [(r.type, json.loads(bytes(r.payload))) for r in result.replies] == [
            ("nats/PONG", payload)
        ]


async def _served(url: str) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
    """$SRV.INFO.echo-nats and $SRV.PING.echo-nats (ids dropped), and the answers (data and
    error headers) to a good request, a body that is not an invocation and a foreign type."""
    client = await nats.connect(url)
    try:
        info = json.loads((await client.request("$SRV.INFO.echo-nats", b"", timeout=5)).data)
        ping = json.loads((await client.request("$SRV.PING.echo-nats", b"", timeout=5)).data)
        answers = []
        for body in (
            {"action": {"type": "nats/PING", "payload": {"pad": "x"}}, "context": {"connectionId": "c"}},
            {"action": {"type": "nats/PING"}, "context": {"connectionId": "c"}},
            {"action": {"payload": 1}, "context": {"connectionId": "c"}},
            {"action": {"type": "orders/GET"}, "context": {"connectionId": "c"}},
        ):
            msg = await client.request("wsgate.echo-nats", json.dumps(body).encode(), timeout=5)
            data = json.loads(msg.data) if msg.data else None
            answers.append((data, msg.headers))
    finally:
        await client.close()
    for d in (info, ping):
        d.pop("id")
    return info, ping, answers


async def test_the_go_echo_serves_what_the_python_echo_does(
    procedures: Any, nats_url: str, tmp_path: Path
) -> None:
    served = {}
    for kind in ("python", "go"):  # one at a time: one name on the server
        proc = _echo(procedures, kind, nats_url, tmp_path / f"{kind}.log")
        try:
            served[kind] = await _served(nats_url)
        finally:
            proc.stop()
    assert served["go"] == served["python"]
    info, _, answers = served["go"]
    assert info["endpoints"] == [
        {"name": "echo-nats", "subject": "wsgate.echo-nats", "queue_group": "echo-nats",
         "metadata": {"wsgate.actions": "nats/*"}}
    ]  # fmt: skip
    assert answers[0][0] == {"reply": [{"type": "nats/PONG", "payload": {"pad": "x"}}]}
    assert answers[1][0] == {"reply": [{"type": "nats/PONG", "payload": None}]}
    assert [a[1]["Nats-Service-Error-Code"] for a in answers[2:]] == ["400", "404"]

