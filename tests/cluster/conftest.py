"""The cluster tests run over each backend: in-process memory, a real Redis, a real NATS."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from ..servers import nats_server, redis_server


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as server:
        yield server.url


@pytest.fixture(scope="module")
def nats_url() -> Iterator[str]:
    with nats_server() as server:
        yield server.url


@pytest.fixture(params=["memory", "redis", "nats"])
def broker_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return f"memory://{uuid.uuid4().hex[:8]}"
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url
