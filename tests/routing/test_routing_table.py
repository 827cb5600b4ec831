from __future__ import annotations

from typing import Any

import pytest

from wsgate.config import from_mapping
from wsgate.routing.table import Discovered, RouteTable

ManualClock = Any  # the ``clock`` fixture of conftest.py


def static_table(clock: Any = None) -> RouteTable:
    config = from_mapping(
        {
            "services": {
                "orders": {"url": "http://o/actions", "timeout_ms": 700, "secret": "s"},
                "admin": {"url": "http://a/actions", "max_concurrency": 3},
                "fallback": {"url": "http://f/actions"},
            },
            "routes": [
                {"match": "orders/*", "service": "orders"},
                {"match": "orders/admin/*", "service": "admin", "roles": ["admin"]},
                {"match": "orders/admin/PING", "service": "orders"},
                {"match": "*", "service": "fallback"},
            ],
        },
        env={},
    )
    return RouteTable.from_config(config, **({} if clock is None else {"clock": clock}))


def test_most_specific_pattern_wins() -> None:
    table = static_table()
    assert table.lookup("orders/GET").name == "orders"  # type: ignore[union-attr]
    assert table.lookup("orders/admin/DROP").name == "admin"  # type: ignore[union-attr]
    assert table.lookup("orders/admin/PING").name == "orders"  # type: ignore[union-attr]
    assert table.lookup("chat/SAY").name == "fallback"  # type: ignore[union-attr]
    assert table.lookup("orders").name == "fallback"  # type: ignore[union-attr]


def test_services_carry_config_settings_and_route_roles() -> None:
    table = static_table()
    orders = table.lookup("orders/GET")
    admin = table.lookup("orders/admin/DROP")
    assert orders is not None and admin is not None
    assert (orders.timeout_ms, orders.secret, orders.max_concurrency) == (700, "s", 256)
    assert admin.max_concurrency == 3 and admin.roles == ("admin",)
    assert admin.allows(("user", "admin")) and not admin.allows(("user",))
    assert orders.allows(())
    # two routes to one service share its pool (load, health, cap)
    ping = table.lookup("orders/admin/PING")
    assert ping is not None and ping.pool is orders.pool


def test_no_route_without_catch_all() -> None:
    table = RouteTable()
    table.add_service("s", "http://s/")
    table.add_route("a/*", "s")
    assert table.lookup("b/X") is None
    with pytest.raises(ValueError):
        table.add_route("x", "missing")


class CountingStr(str):
    """Counts the prefix slices PatternTable takes: one per dict probe."""

    probes = 0

    def __getitem__(self, key: object) -> str:  # type: ignore[override]
        CountingStr.probes += 1
        return str.__getitem__(self, key)  # type: ignore[index]


def probes(table: RouteTable, name: str) -> int:
    CountingStr.probes = 0
    assert table.lookup(CountingStr(name)) is not None
    return CountingStr.probes


def test_lookup_cost_does_not_depend_on_route_count() -> None:
    small = RouteTable()
    large = RouteTable()
    for table in (small, large):
        table.add_service("s", "http://s/")
        table.add_route("*", "s")
    # the same prefix lengths (3..6) in both; 10 vs 10,000 routes
    for i in (0, 10, 100, 1000, 1, 2, 3, 4, 5, 6):
        small.add_route(f"p{i}/*", "s")
    for i in range(5000):
        large.add_route(f"p{i}/*", "s")
        large.add_route(f"x/{i}", "s")
    assert (len(small), len(large)) == (11, 10_001)
    for name in ("zzzz/NOTHING", "q42/GET", "x/77/more"):  # both answer "*"
        # one probe per distinct prefix length (6, 5, 4, 3 and 0 for "*")
        assert probes(small, name) == probes(large, name) == 5
    # hits cost no more than misses
    assert probes(large, "p42/GET") <= 5
    assert probes(large, "x/77") == 0  # exact: one dict probe, no prefix probes


def test_registration_adds_instances_and_expires(clock: ManualClock) -> None:
    table = static_table(clock)
    table.register("chat", "http://c1/actions", ["chat/*"], ttl_s=30)
    chat = table.lookup("chat/SAY")
    assert chat is not None and chat.name == "chat"
    assert [i.url for i in chat.instances] == ["http://c1/actions"]
    clock.advance(20)
    table.register("chat", "http://c1/actions", ["chat/*"], ttl_s=30)  # renewed
    clock.advance(20)
    assert table.lookup("chat/SAY").name == "chat"  # type: ignore[union-attr]
    clock.advance(11)  # past the renewal's ttl: lazily dropped on lookup
    assert table.lookup("chat/SAY").name == "fallback"  # type: ignore[union-attr]
    assert table.service("chat") is None
    assert [e["pattern"] for e in table.snapshot()].count("chat/*") == 0


def test_sweep_drops_only_expired_instances(clock: ManualClock) -> None:
    table = RouteTable(clock=clock)
    table.register("chat", "http://c1/", ["chat/*"], ttl_s=10)
    table.register("chat", "http://c2/", ["chat/*"], ttl_s=30)
    clock.advance(15)
    assert table.sweep() == 1
    assert [i.url for i in table.lookup("chat/X").instances] == ["http://c2/"]  # type: ignore[union-attr]
    assert table.sweep(now=clock.now + 100) == 1
    assert table.lookup("chat/X") is None and len(table) == 0


def test_registered_instance_joins_a_static_service(clock: ManualClock) -> None:
    table = static_table(clock)
    table.register("orders", "http://o2/actions", ["orders/extra/*"], ttl_s=5)
    svc = table.lookup("orders/extra/GO")
    assert svc is not None and svc.secret == "s" and svc.timeout_ms == 700
    assert [i.source for i in svc.instances] == ["static", "registered"]
    clock.advance(6)
    table.sweep()
    orders = table.lookup("orders/GET")
    assert orders is not None and [i.url for i in orders.instances] == ["http://o/actions"]
    assert table.lookup("orders/extra/GO") is orders  # falls back to orders/*
    # the static URL registered again changes nothing and never expires
    table.register("orders", "http://o/actions", ["zzz"], ttl_s=1)
    assert table.lookup("zzz") is not None and table.lookup("zzz").name == "fallback"  # type: ignore[union-attr]


def test_conflicts_static_wins_then_first_registration(clock: ManualClock) -> None:
    table = static_table(clock)
    table.register("rogue", "http://r/", ["orders/*", "mine/*"], ttl_s=60)
    assert table.lookup("orders/GET").name == "orders"  # type: ignore[union-attr]
    table.register("late", "http://l/", ["mine/*"], ttl_s=120)
    assert table.lookup("mine/X").name == "rogue"  # type: ignore[union-attr]
    clock.advance(61)
    assert table.lookup("mine/X").name == "late"  # type: ignore[union-attr]


def test_registration_changes_patterns_and_unregister(clock: ManualClock) -> None:
    table = RouteTable(clock=clock)
    table.register("s", "http://s/", ["a/*"], ttl_s=60)
    table.register("s", "http://s/", ["b/*"], ttl_s=60)
    assert table.lookup("a/X") is None and table.lookup("b/X") is not None
    assert table.unregister("s", "http://s/")
    assert not table.unregister("s", "http://s/")
    assert table.lookup("b/X") is None


@pytest.mark.parametrize(
    ("name", "url", "actions", "ttl"),
    [
        ("bad name", "http://s/", ["a"], 10),
        ("s", "ftp://s/", ["a"], 10),
        ("s", "http://s/", [], 10),
        ("s", "http://s/", ["bad type"], 10),
        ("s", "http://s/", ["a*b"], 10),
        ("s", "http://s/", ["a"], 0),
        ("s", "http://s/", ["a"], 10**6),
    ],
)
def test_bad_registrations_are_refused(name: str, url: str, actions: list[str], ttl: float) -> None:
    with pytest.raises(ValueError):
        RouteTable().register(name, url, actions, ttl_s=ttl)


def test_registration_limit(clock: ManualClock) -> None:
    table = RouteTable(clock=clock, max_registrations=2)
    table.register("s", "http://s1/", ["a"], ttl_s=10)
    table.register("s", "http://s2/", ["a"], ttl_s=10)
    table.register("s", "http://s2/", ["a"], ttl_s=10)  # renewal is not a new one
    with pytest.raises(ValueError, match="limit"):
        table.register("t", "http://t/", ["b"], ttl_s=10)
    clock.advance(11)
    table.sweep()
    table.register("t", "http://t/", ["b"], ttl_s=10)


def test_snapshot_lists_every_route_most_specific_first(clock: ManualClock) -> None:
    table = static_table(clock)
    table.register("chat", "http://c1/", ["chat/SAY"], ttl_s=30)
    clock.advance(10)
    snap = table.snapshot()
    assert [e["pattern"] for e in snap] == [
        "chat/SAY",
        "orders/admin/PING",
        "orders/admin/*",
        "orders/*",
        "*",
    ]
    assert snap[0] == {
        "pattern": "chat/SAY",
        "service": "chat",
        "source": "registered",
        "transport": "http",
        "roles": [],
        "instances": [
            {"url": "http://c1/", "source": "registered", "healthy": True, "expires_in": 20.0}
        ],
    }
    assert snap[2]["roles"] == ["admin"]
    assert snap[3]["instances"] == [
        {"url": "http://o/actions", "source": "static", "healthy": True, "expires_in": None}
    ]


def test_several_static_instances_and_promotion(clock: ManualClock) -> None:
    table = RouteTable(clock=clock)
    table.register("s", "http://b/", ["b/*"], ttl_s=10)
    table.add_service("s", "http://a/", secret="x")
    table.add_service("s", "http://b/")  # the registered instance becomes static
    table.add_route("*", "s")
    clock.advance(100)
    table.sweep()
    service = table.lookup("anything")
    assert service is not None and service.secret == "x"
    assert [(i.url, i.source) for i in service.instances] == [
        ("http://a/", "static"),
        ("http://b/", "static"),
    ]
    picks = [service.pick() for _ in range(4)]
    assert [i.url for i in picks if i is not None] == ["http://a/", "http://b/"] * 2


def test_gateway_types_match_only_gateway_patterns() -> None:
    table = RouteTable()
    table.add_service("all", "http://all/")
    table.add_service("hooks", "http://hooks/")
    table.add_route("*", "all")
    assert table.lookup("orders/GET") is not None
    assert table.lookup("@@wsgate/CONNECT") is None  # "*" is no connect hook
    assert table.lookup("@@wsgate/JOIN") is None
    table.add_route("@@wsgate/*", "hooks")
    found = table.lookup("@@wsgate/CONNECT")
    assert found is not None and found.name == "hooks"


def grpc(name: str, *patterns: str, url: str = "127.0.0.1:50051") -> Discovered:
    return Discovered(f"grpc:{name}", url, patterns, "grpc")


def nats(name: str, *patterns: str) -> Discovered:
    return Discovered(f"nats:{name}", f"svc.{name}", patterns, "nats")


def test_discovered_routes_rank_after_static_and_registered(clock: ManualClock) -> None:
    table = static_table(clock)
    table.register("reg", "http://r/", ["shared/*"], ttl_s=60)
    assert table.sync("grpc", [grpc("m", "orders/*", "shared/*", "both/*", "grpc/ONLY")])
    assert table.sync("nats", [nats("n", "orders/*", "shared/*", "both/*", "nats/*")])
    assert table.lookup("orders/X").name == "orders"  # type: ignore[union-attr]  static
    assert table.lookup("shared/X").name == "reg"  # type: ignore[union-attr]  registered
    assert table.lookup("both/X").name == "grpc:m"  # type: ignore[union-attr]  grpc over nats
    assert table.lookup("nats/X").name == "nats:n"  # type: ignore[union-attr]
    assert table.lookup("nats/X").pool.transport == "nats"  # type: ignore[union-attr]
    # The most specific pattern wins across sources: an exact NATS type beats static orders/*.
    table.sync("nats", [nats("n", "orders/GET")])
    assert table.lookup("orders/GET").name == "nats:n"  # type: ignore[union-attr]
    assert table.lookup("nats/X").name == "fallback"  # type: ignore[union-attr]  dropped now
    rows = {row["pattern"]: row for row in table.snapshot()}
    assert rows["orders/GET"]["source"] == "nats" and rows["orders/GET"]["transport"] == "nats"
    assert rows["both/*"]["source"] == "grpc" and rows["orders/*"]["source"] == "static"
    assert rows["both/*"]["instances"] == [
        {"url": "127.0.0.1:50051", "source": "grpc", "healthy": True, "expires_in": None}
    ]


def test_sync_replaces_a_source_whole_and_keeps_health(clock: ManualClock) -> None:
    table = RouteTable(clock=clock)
    assert table.sync("grpc", [grpc("a", "a/*"), grpc("b", "b/*", url="127.0.0.1:2")])
    inst = table.lookup("a/X").pool.instances[0]  # type: ignore[union-attr]
    table.lookup("a/X").pool.mark_failed(inst)  # type: ignore[union-attr]
    assert not table.sync("grpc", [grpc("a", "a/*"), grpc("b", "b/*", url="127.0.0.1:2")])
    assert table.sync("grpc", [grpc("a", "a/*", "a2/*")])
    assert table.lookup("b/X") is None  # no longer found: gone at once
    again = table.lookup("a2/X")
    assert again is not None and again.pool.instances[0] is inst and not inst.healthy(clock())
    assert table.sync("nats", []) is False  # another source's set is untouched
    assert table.sync("grpc", [])
    assert len(table) == 0 and table.service("grpc:a") is None


def test_sync_refuses_names_outside_its_namespace(clock: ManualClock) -> None:
    table = static_table(clock)
    with pytest.raises(ValueError, match="<source>:<name>"):
        table.sync("grpc", [Discovered("orders", "x", ("z/*",), "grpc")])
    with pytest.raises(ValueError, match="not a discovered source"):
        table.sync("static", [])
    table.register("reg", "http://r/", ["r/*"], ttl_s=60)  # registered names hold no ":"
    table.sync("grpc", [grpc("reg", "r/*")])
    assert table.lookup("r/X").name == "reg"  # type: ignore[union-attr]
