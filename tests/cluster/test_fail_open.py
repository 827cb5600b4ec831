"""Cluster code that fails open logs each failure with its traceback and counts it.

A real Redis is stopped under a running node: the shared connection count and
the presence heartbeat (a job of the bus's ticker) then fail, the node keeps
serving on its own, and each failure is a counted, logged-with-traceback event
(not a silent warning).
"""

from __future__ import annotations

import logging

import pytest

from ..helpers import eventually
from ..servers import redis_server
from .cluster import cluster


def _logged_with_traceback(caplog: pytest.LogCaptureFixture, logger: str) -> bool:
    return any(r.name == logger and r.exc_info is not None for r in caplog.records)


async def test_backend_failures_are_logged_with_traceback_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="wsgate.cluster")
    with redis_server() as server:
        async with cluster(server.url, size=1, limits={"max_connections_per_user": 5}) as (a,):
            bus = a.node.bus
            assert bus is not None
            assert bus.limits.failures == 0 and bus.ticker.failures["presence.beat"] == 0
            server.stop()
            async with a.peer("u1") as peer:  # admitted by the local caps alone
                assert peer.id
            await eventually(
                lambda: bus.limits.failures >= 1 and bus.ticker.failures["presence.beat"] >= 1
            )
            assert _logged_with_traceback(caplog, "wsgate.cluster.shared")
            assert _logged_with_traceback(caplog, "wsgate.cluster.ticker")
