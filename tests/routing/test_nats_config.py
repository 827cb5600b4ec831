"""[discovery.nats] and static NATS services in the config, and how the table takes them."""

from __future__ import annotations

from typing import Any

import pytest

from wsgate.config import Config, from_mapping, nats_services_url
from wsgate.exceptions import ConfigError
from wsgate.routing.table import RouteTable


def config(**data: Any) -> Config:
    return from_mapping(data, env={})


def test_defaults() -> None:
    nats = config().discovery.nats
    assert nats.url == ""
    assert nats.discover is True
    assert nats.interval_s == 5.0
    assert nats.window_ms == 250
    assert (nats.timeout_ms, nats.max_concurrency) == (2000, 256)
    assert (nats.max_services, nats.max_endpoints, nats.max_actions) == (256, 32, 64)
    assert (nats.max_info_bytes, nats.max_response_bytes) == (65536, 1 << 20)


def test_the_connection_defaults_to_a_nats_broker() -> None:
    assert nats_services_url(config()) is None
    assert nats_services_url(config(broker={"url": "redis://127.0.0.1:1"})) is None
    assert (
        nats_services_url(config(broker={"url": "nats://127.0.0.1:4222"}))
        == "nats://127.0.0.1:4222"
    )
    own = config(broker={"url": "nats://a:1"}, discovery={"nats": {"url": "nats://b:2"}})
    assert nats_services_url(own) == "nats://b:2"


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"discovery": {"nats": {"url": "http://x"}}}, "discovery.nats.url"),
        ({"discovery": {"nats": {"interval_s": 0}}}, "discovery.nats.interval_s"),
        ({"discovery": {"nats": {"max_services": 0}}}, "discovery.nats.max_services"),
        ({"discovery": {"nats": {"bogus": 1}}}, "discovery.nats.bogus"),
        ({"discovery": {"grpcx": {}}}, "discovery.grpcx"),
        (
            {"services": {"o": {"url": "nats:orders.*"}}, "broker": {"url": "nats://x:1"}},
            "services.o.url",
        ),
        ({"services": {"o": {"url": "nats:"}}, "broker": {"url": "nats://x:1"}}, "services.o.url"),
        ({"services": {"o": {"url": "nats:orders.get"}}}, "services.o.url"),  # no connection
        (
            {"services": {"o": {"url": "nats://127.0.0.1:4222"}}, "broker": {"url": "nats://x:1"}},
            "services.o.url",
        ),  # a server URL, not a subject
        (
            {
                "services": {"o": {"url": "nats:orders.get", "secret": "s"}},
                "broker": {"url": "nats://x:1"},
            },
            "services.o.secret",
        ),
    ],
)
def test_errors_name_the_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        config(**data)
    assert err.value.key == key


def test_a_static_nats_service_is_a_nats_route_on_its_subject() -> None:
    cfg = config(
        discovery={"nats": {"url": "nats://127.0.0.1:4222"}},
        services={
            "orders": {"url": "nats:orders.get", "timeout_ms": 500},
            "web": {"url": "http://127.0.0.1:9/actions"},
        },
        routes=[{"match": "orders/*", "service": "orders"}, {"match": "web/*", "service": "web"}],
    )
    assert cfg.services["orders"].transport == "nats"
    assert cfg.services["orders"].target == "orders.get"
    assert cfg.services["web"].transport == "http"
    table = RouteTable.from_config(cfg)
    orders = table.lookup("orders/GET")
    assert orders is not None
    assert orders.pool.transport == "nats"
    assert [i.url for i in orders.pool.instances] == ["orders.get"]
    assert orders.timeout_ms == 500
    web = table.lookup("web/X")
    assert web is not None and web.pool.transport == "http"
    entry = next(e for e in table.snapshot() if e["pattern"] == "orders/*")
    assert (entry["source"], entry["transport"]) == ("static", "nats")


def test_an_http_registration_cannot_join_a_static_nats_service() -> None:
    cfg = config(
        discovery={"nats": {"url": "nats://127.0.0.1:4222"}},
        services={"orders": {"url": "nats:orders.get"}},
    )
    table = RouteTable.from_config(cfg)
    with pytest.raises(ValueError, match="name"):
        table.register("orders", "http://127.0.0.1:9/actions", ["orders/*"], 30)
    service = table.service("orders")
    assert service is not None and [i.url for i in service.instances] == ["orders.get"]
