"""What an idle connection keeps of the listener's code, by allocating line (tracemalloc).

bench/README.md ("Idle memory per signed-in connection") has the whole
picture; this pins the part ``transport/server.py`` allocates per connection:
the protocol and the listener object, nothing else (no per-connection float
for the handshake timeout, no header copies).
"""

from __future__ import annotations

import gc
import sys
import tracemalloc

from tests.transport.conftest import Start
from tests.transport.helpers import RawClient, RecordingHandler
from wsgate.transport.protocol import _SHARED, GateProtocol

N = 40


async def _connect_traced(
    port: int, handler: RecordingHandler
) -> tuple[list[RawClient], list[tracemalloc.StatisticDiff]]:
    """Open 5 warm-up connections, then :data:`N` under tracemalloc; the clients (kept
    open while the caller holds them) and what grew meanwhile, by allocating line."""
    warm = [await RawClient.connect(port) for _ in range(5)]
    await handler.wait_sessions(len(warm))
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        clients = [await RawClient.connect(port) for _ in range(N)]
        assert all(c.status == 101 for c in clients)
        await handler.wait_sessions(len(warm) + N)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    return warm + clients, after.compare_to(before, "lineno")


async def test_server_py_keeps_two_objects_per_idle_connection(start: Start) -> None:
    listener, handler = await start()
    _open, grown = await _connect_traced(listener.port, handler)  # held: the connections stay
    kept = [
        st
        for st in grown
        if st.traceback[0].filename.endswith("wsgate/transport/server.py") and st.count_diff > 0
    ]
    blocks = sum(st.count_diff for st in kept)
    # GateProtocol and GateListener, one block each per connection.
    assert blocks <= 2 * N + 2, [(str(st.traceback[0]), st.count_diff) for st in kept]


async def test_the_upgrade_request_keeps_no_bytes_of_its_own(start: Start) -> None:
    # picows keeps the upgrade request on its transport for the connection's
    # life; its headers and request line are shared objects after the 101.
    listener, handler = await start()
    clients = [await RawClient.connect(listener.port) for _ in range(3)]
    assert all(c.status == 101 for c in clients)
    await handler.wait_sessions(len(clients))
    for session in handler.sessions:
        request = session.sink._wst.request  # type: ignore[attr-defined]
        assert not request.headers
        assert request.path == b""  # the path was read by the routing, before the 101
        assert request.method is _SHARED[b"GET"] and request.version is _SHARED[b"HTTP/1.1"]


async def test_an_idle_listener_object_is_at_most_224_bytes(start: Start) -> None:
    # A fragmented message's state is one object, made for its first fragment
    # (pymalloc rounds to 16 bytes: 25 slots were 256 bytes, 22 are 224).
    listener, handler = await start()
    client = await RawClient.connect(listener.port)
    assert client.status == 101
    (session,) = await handler.wait_sessions(1)
    assert sys.getsizeof(session.sink) <= 224


async def test_listener_py_keeps_nothing_per_idle_connection(start: Start) -> None:
    # The heartbeat wheel is the listener's one registry of its connections
    # (no second set of them beside it); what listener.py allocates per idle
    # connection is one float, the upgrade's time (``last_active``, which the
    # core's ``connected_at`` shares).
    listener, handler = await start()
    clients, grown = await _connect_traced(listener.port, handler)
    kept = [
        st
        for st in grown
        if st.traceback[0].filename.endswith("wsgate/transport/listener.py") and st.size_diff > 0
    ]
    assert sum(st.size_diff for st in kept) <= 32 * N, [
        (str(st.traceback[0]), st.size_diff) for st in kept
    ]
    assert listener.connection_count == len(clients)


async def test_an_idle_protocol_object_is_at_most_336_bytes(start: Start) -> None:
    # No memoryview slot (the bytes just read are looked up in picows' buffer
    # when a read needs walking) and one state field, not a mode and a flag.
    listener, handler = await start()
    client = await RawClient.connect(listener.port)
    assert client.status == 101
    (session,) = await handler.wait_sessions(1)
    protocol = session.sink._wst.underlying_transport.get_protocol()  # type: ignore[attr-defined]
    assert isinstance(protocol, GateProtocol)
    assert sys.getsizeof(protocol) <= 336
    assert "get_buffer" not in GateProtocol.__dict__  # uvloop calls picows' own
