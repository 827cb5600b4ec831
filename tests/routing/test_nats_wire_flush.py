"""nats_wire.flush puts the invoker's batch on the socket at once, against a real
nats-server: no waiting for nats-py's flusher task (one loop iteration more of every
round trip), and nothing lost or reordered."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.helpers import eventually
from tests.servers import NATS_SERVER, ServerProcess, nats_server
from wsgate.backends.nats import close_client, connect_nats
from wsgate.backends.nats_client import ReplyClient
from wsgate.routing.nats_wire import flush, write
from wsgate.sdk.nats_service import on_server

pytestmark = [pytest.mark.skipif(NATS_SERVER is None, reason="no nats-server"),
              pytest.mark.timeout(30)]  # fmt: skip


@pytest.fixture(scope="module")
def nats_proc() -> Iterator[ServerProcess]:
    with nats_server() as server:
        yield server


@pytest.fixture
async def nc(nats_proc: ServerProcess) -> AsyncIterator[ReplyClient]:
    client = await connect_nats(nats_proc.url, name="wsgate test flush")
    yield client
    await close_client(client)


async def test_flush_writes_the_batch_before_the_loop_runs_again(nc: ReplyClient) -> None:
    got: list[bytes] = []
    await nc.subscribe_raw("flush.t", lambda s, d, h: got.append(d))
    await on_server(nc)
    await write(nc, b"PUB flush.t 3\r\none\r\nPUB flush.t 3\r\ntwo\r\n")
    await flush(nc)  # no await in it yields: the bytes left the client's buffer here
    assert nc._pending == [] and nc._pending_data_size == 0
    await eventually(lambda: len(got) == 2, what="both messages")
    assert got == [b"one", b"two"]


async def test_flush_with_nothing_pending_writes_nothing(nc: ReplyClient) -> None:
    await flush(nc)
    assert nc._pending == [] and nc._pending_data_size == 0
