"""The gRPC invoker against a real reflecting grpcio server: transcoding, metadata, statuses, caps."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from tests.grpc_services.server import SERVICE, ModuleServer
from tests.helpers import eventually, loop_lookups
from wsgate.config import GrpcConfig, from_mapping
from wsgate.protocol.codes import ErrorCode
from wsgate.protocol.envelope import Action, Meta
from wsgate.routing.context import InvocationContext
from wsgate.routing.grpc_discovery import GrpcDiscovery
from wsgate.routing.grpc_invoker import STATUS, GrpcInvoker, GrpcTarget
from wsgate.routing.instances import Service
from wsgate.routing.results import InvocationResult
from wsgate.routing.table import RouteTable

ECHO = f"{SERVICE}/Echo"
FAIL = f"{SERVICE}/Fail"
HOLD = f"{SERVICE}/Hold"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Rig:
    def __init__(
        self,
        server: ModuleServer,
        table: RouteTable,
        invoker: GrpcInvoker,
        discovery: GrpcDiscovery,
    ) -> None:
        self.server = server
        self.table = table
        self.invoker = invoker
        self.discovery = discovery

    def service(self, type_: str) -> Service:
        service = self.table.lookup(type_)
        assert service is not None, f"no route for {type_}"
        return service

    async def call(
        self, type_: str, payload: Any = None, **context: Any
    ) -> InvocationResult | ErrorCode:
        raw = (
            msgspec.Raw(json.dumps(payload).encode())
            if payload is not None
            else msgspec.Raw(b"null")
        )
        action = Action(type=type_, payload=raw, meta=Meta(id="r1"))
        ctx = InvocationContext(connectionId=context.pop("cid", "n1.abc"), **context)
        return await self.invoker.invoke(self.service(type_), action, ctx, TRACEPARENT)


def target_config(target: str, **extra: Any) -> GrpcConfig:
    return from_mapping({"grpc": [{"target": target, **extra}]}, env={}).grpc[0]


@pytest.fixture
async def rig_factory() -> AsyncIterator[Any]:
    made: list[Rig] = []

    async def make(**extra: Any) -> Rig:
        server = ModuleServer()
        await server.start()
        config = target_config(server.target, **extra)
        table = RouteTable()
        invoker = GrpcInvoker([GrpcTarget(config.target)])
        discovery = GrpcDiscovery(table, invoker, [config])
        await discovery.start()
        rig = Rig(server, table, invoker, discovery)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        await rig.discovery.aclose()
        await rig.invoker.aclose()
        await rig.server.stop()


@pytest.fixture
async def rig(rig_factory: Any) -> Rig:
    return await rig_factory()  # type: ignore[no-any-return]


def only_reply(result: InvocationResult | ErrorCode) -> dict[str, Any]:
    assert isinstance(result, InvocationResult), result
    assert len(result.replies) == 1 and not result.publishes
    reply = result.replies[0]
    return {"type": reply.type, "payload": reply.payload, "error": reply.error}


MODULE = {
    "moduleId": "m-1",
    "kind": "KIND_PLUGIN",
    "owner": {"name": "ada", "emails": ["ada@example.org", "a@example.org"]},
    "tags": ["x", "y"],
    "counts": {"stars": 3, "forks": 0},
    "gitUrl": "https://example.org/m.git",
    "createdAt": "2026-01-02T03:04:05.500Z",
    "ttl": "90s",
    "extra": {"nested": {"list": [1, "two", None, True]}, "n": 1.5},
    "size": "9007199254740993",
    "maintainers": [{"name": "bob", "emails": []}],
}


async def test_unary_and_server_streaming_methods_are_routed_by_name(rig: Rig) -> None:
    for name in ("Echo", "Fail", "Hold"):
        assert rig.table.lookup(f"{SERVICE}/{name}") is not None
    assert rig.table.lookup(f"{SERVICE}/Watch") is not None  # server streaming
    assert rig.table.lookup(f"{SERVICE}/Upload") is None  # client streaming: not routed
    route = next(r for r in rig.table.snapshot() if r["pattern"] == ECHO)
    assert route["source"] == "grpc" and route["transport"] == "grpc"


async def test_round_trip_of_every_field_kind(rig: Rig) -> None:
    reply = only_reply(await rig.call(ECHO, {"module": MODULE}))
    assert reply["type"] == "wsgate.test.v1.EchoResponse"
    got = reply["payload"]["module"]
    assert got["counts"] == {"stars": 3, "forks": 0}  # zero values are printed too
    assert got == {**MODULE, "createdAt": "2026-01-02T03:04:05.500Z"}


async def test_proto_field_names_are_accepted_and_oneof_keeps_the_one_set(rig: Rig) -> None:
    payload = {
        "module": {"module_id": "m-2", "path": "/src/m", "created_at": "2026-01-01T00:00:00Z"}
    }
    got = only_reply(await rig.call(ECHO, payload))["payload"]["module"]
    assert got["moduleId"] == "m-2" and got["path"] == "/src/m" and "gitUrl" not in got
    assert got["kind"] == "KIND_UNSPECIFIED" and got["tags"] == [] and got["counts"] == {}
    assert (
        "owner" not in got and "createdAt" in got
    )  # messages have presence: unset ones are left out


async def test_null_payload_is_the_empty_message(rig: Rig) -> None:
    reply = only_reply(await rig.call(ECHO, None))
    assert reply["type"] == "wsgate.test.v1.EchoResponse"
    assert reply["payload"]["module"]["moduleId"] == "" and rig.server.calls == 1


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"module": {"kind": "KIND_NOPE"}}, "kind"),
        ({"module": {"size": "many"}}, "size"),
        ({"module": {"owner": {"emails": "not-a-list"}}}, "emails"),
        ({"module": {"nope": 1}}, "nope"),
        ({"module": {"createdAt": "yesterday"}}, "createdAt"),
        ({"module": {"counts": {"a": "b"}}}, "counts"),
    ],
)
async def test_a_field_that_does_not_transcode_is_bad_request_naming_it(
    rig: Rig, payload: Any, field: str
) -> None:
    reply = only_reply(await rig.call(ECHO, payload))
    assert reply["type"] == "@@wsgate/ERROR" and reply["error"] is True
    error = reply["payload"]
    assert error.code == "BAD_REQUEST"
    assert field in error.message, error.message
    assert rig.server.calls == 0  # the service was never called


async def test_a_payload_that_is_no_object_is_bad_request(rig: Rig) -> None:
    reply = only_reply(await rig.call(ECHO, [1, 2]))
    assert reply["payload"].code == "BAD_REQUEST"


async def test_context_goes_as_metadata(rig: Rig) -> None:
    result = await rig.call(
        ECHO, {}, cid="n1.c0nn", userId="u-7", hub="acme", channel="acme:orders/1", requestId="rq-9"
    )
    seen = only_reply(result)["payload"]["metadata"]
    assert seen["wsgate-connection-id"] == "n1.c0nn"
    assert seen["wsgate-user"] == "u-7"
    assert seen["wsgate-organization"] == "acme"
    assert seen["wsgate-channel"] == "acme:orders/1"
    assert seen["wsgate-request-id"] == "rq-9"
    assert seen["traceparent"] == TRACEPARENT


async def test_a_non_ascii_value_goes_as_binary_metadata(rig: Rig) -> None:
    seen = only_reply(await rig.call(ECHO, {}, userId="zoë"))["payload"]["metadata"]
    assert seen["wsgate-user-bin"] == "zoë" and "wsgate-user" not in seen


async def test_a_connections_next_call_carries_its_own_request_id_and_channel(
    rig: Rig,
) -> None:
    """The connection's part of the metadata is kept encoded; the per-call part is not."""
    first = await rig.call(ECHO, {}, cid="n1.same", userId="u-1", hub="acme", requestId="rq-1")
    second = await rig.call(ECHO, {}, cid="n1.same", userId="u-1", hub="acme", requestId="rq-2")
    third = await rig.call(
        ECHO, {}, cid="n1.same", userId="u-1", hub="acme", channel="acme:v/2", requestId="rq-3"
    )
    seen = [only_reply(r)["payload"]["metadata"] for r in (first, second, third)]
    assert [m["wsgate-request-id"] for m in seen] == ["rq-1", "rq-2", "rq-3"]
    assert [m.get("wsgate-channel") for m in seen] == [None, None, "acme:v/2"]
    assert all(m["wsgate-connection-id"] == "n1.same" for m in seen)


@pytest.mark.parametrize("rid", ["r" * 126, "r" * 127, "r" * 300])
async def test_a_request_id_of_any_length_arrives_whole(rig: Rig, rid: str) -> None:
    seen = only_reply(await rig.call(ECHO, {}, requestId=rid))["payload"]["metadata"]
    assert seen["wsgate-request-id"] == rid and seen["traceparent"] == TRACEPARENT


async def test_a_non_ascii_request_id_goes_as_binary_metadata(rig: Rig) -> None:
    seen = only_reply(await rig.call(ECHO, {}, requestId="rq-é"))["payload"]["metadata"]
    assert seen["wsgate-request-id-bin"] == "rq-é" and "wsgate-request-id" not in seen


async def test_the_kept_context_blocks_are_bounded(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wsgate.routing import grpc_invoker

    monkeypatch.setattr(grpc_invoker, "MAX_CONTEXT_BLOCKS", 3)
    for i in range(7):
        seen = only_reply(await rig.call(ECHO, {}, cid=f"n1.c{i}"))["payload"]["metadata"]
        assert seen["wsgate-connection-id"] == f"n1.c{i}"
        assert 1 <= len(rig.invoker._context_blocks) <= 3


async def test_an_absent_context_field_is_left_out(rig: Rig) -> None:
    seen = only_reply(await rig.call(ECHO, {}))["payload"]["metadata"]
    assert "wsgate-user" not in seen and "wsgate-channel" not in seen


@pytest.mark.parametrize(("status", "code"), sorted(STATUS.items()))
async def test_status_mapping(rig: Rig, status: str, code: ErrorCode) -> None:
    result = await rig.call(FAIL, {"status": status, "detail": "secret server detail"})
    assert result is code


@pytest.mark.parametrize(
    "status", ["INTERNAL", "UNKNOWN", "ABORTED", "DATA_LOSS", "CANCELLED", "ALREADY_EXISTS"]
)
async def test_other_statuses_are_upstream_error(rig: Rig, status: str) -> None:
    assert await rig.call(FAIL, {"status": status, "detail": "x"}) is ErrorCode.UPSTREAM_ERROR


async def test_every_documented_status_row(rig: Rig) -> None:
    assert dict(STATUS) == {
        "INVALID_ARGUMENT": ErrorCode.BAD_REQUEST,
        "FAILED_PRECONDITION": ErrorCode.BAD_REQUEST,
        "OUT_OF_RANGE": ErrorCode.BAD_REQUEST,
        "PERMISSION_DENIED": ErrorCode.FORBIDDEN,
        "UNAUTHENTICATED": ErrorCode.UNAUTHENTICATED,
        "UNAVAILABLE": ErrorCode.UPSTREAM_UNAVAILABLE,
        "DEADLINE_EXCEEDED": ErrorCode.UPSTREAM_TIMEOUT,
        "RESOURCE_EXHAUSTED": ErrorCode.RATE_LIMITED,
        "UNIMPLEMENTED": ErrorCode.NO_ROUTE,
        "NOT_FOUND": ErrorCode.UPSTREAM_ERROR,
    }


async def test_aliases_route_with_the_response_type_or_their_own(rig_factory: Any) -> None:
    rig = await rig_factory(
        aliases={
            "modules/ECHO": ECHO,
            "modules/HOLD": {"method": HOLD, "reply": "modules/HELD"},
            "modules/GONE": f"{SERVICE}/Nope",
        }
    )
    assert only_reply(await rig.call("modules/ECHO", {}))["type"] == "wsgate.test.v1.EchoResponse"
    rig.server.gate.set()
    reply = only_reply(await rig.call("modules/HOLD", {"tag": "t"}))
    assert reply == {"type": "modules/HELD", "payload": {"tag": "t"}, "error": False}
    assert rig.table.lookup("modules/GONE") is None  # the target does not serve it


async def test_timeout_is_upstream_timeout_and_the_server_sees_the_deadline(
    rig_factory: Any,
) -> None:
    rig = await rig_factory(timeout_ms=200)
    assert await rig.call(HOLD, {"tag": "slow"}) is ErrorCode.UPSTREAM_TIMEOUT
    await eventually(lambda: rig.server.cancelled == 1, what="the server's call cancelled")


async def test_concurrency_cap_bounds_calls_in_flight(rig_factory: Any) -> None:
    rig = await rig_factory(max_concurrency=2, timeout_ms=5000)
    calls = [asyncio.ensure_future(rig.call(HOLD, {"tag": str(i)})) for i in range(5)]
    await eventually(lambda: rig.server.holding == 2, what="two calls held")
    assert rig.service(HOLD).pool.slots.free == 0
    rig.server.gate.set()
    results = await asyncio.gather(*calls)
    assert [only_reply(r)["payload"]["tag"] for r in results] == [str(i) for i in range(5)]
    assert rig.server.max_holding == 2
    assert rig.service(HOLD).pool.slots.free == 2


async def test_a_full_cap_past_timeout_is_upstream_unavailable(rig_factory: Any) -> None:
    rig = await rig_factory(max_concurrency=1, timeout_ms=200)
    slots = rig.service(ECHO).pool.slots
    assert slots.try_acquire()  # the one slot, taken for longer than the timeout
    try:
        assert await rig.call(ECHO, {}) is ErrorCode.UPSTREAM_UNAVAILABLE
    finally:
        slots.release()
    assert rig.server.calls == 0
    assert only_reply(await rig.call(ECHO, {}))["type"] == "wsgate.test.v1.EchoResponse"


async def test_aclose_ends_calls_in_flight_unavailable(rig: Rig) -> None:
    got: list[Any] = []
    action = Action(type=HOLD, payload=msgspec.Raw(b"{}"))
    rig.invoker.start(rig.service(HOLD), action, InvocationContext(connectionId="n1.x"), got.append)
    await eventually(lambda: rig.server.holding == 1, what="the call held")
    await rig.invoker.aclose()
    assert got == [ErrorCode.UPSTREAM_UNAVAILABLE]


async def test_start_calls_done_once_later(rig: Rig) -> None:
    got: list[Any] = []
    action = Action(type=ECHO, payload=msgspec.Raw(b"{}"))
    rig.invoker.start(rig.service(ECHO), action, InvocationContext(connectionId="n1.x"), got.append)
    assert got == []
    await eventually(lambda: len(got) == 1, what="done called")
    assert only_reply(got[0])["type"] == "wsgate.test.v1.EchoResponse"


async def test_a_call_on_a_ready_connection_takes_no_task_and_frees_its_slot(rig: Rig) -> None:
    assert isinstance(await rig.call(ECHO, {}), InvocationResult)  # connected now
    service = rig.service(ECHO)
    free = service.pool.slots.free
    got: list[Any] = []
    action = Action(type=ECHO, payload=msgspec.Raw(b"{}"))
    rig.invoker.start(service, action, InvocationContext(connectionId="n1.x"), got.append)
    assert got == [] and not rig.invoker._tasks and service.pool.slots.free == free - 1
    await eventually(lambda: len(got) == 1, what="done called")
    assert only_reply(got[0])["type"] == "wsgate.test.v1.EchoResponse"
    assert service.pool.slots.free == free


async def test_calls_on_a_ready_connection_look_the_loop_up_never(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each asyncio.get_running_loop() is a getpid() system call on CPython 3.11:
    # py-spy --native sampled 8 % of the gateway there, one per call (bench/README.md).
    assert isinstance(await rig.call(ECHO, {}), InvocationResult)  # connected now
    service = rig.service(ECHO)
    got: list[Any] = []
    action = Action(type=ECHO, payload=msgspec.Raw(b"{}"))
    with loop_lookups(monkeypatch) as lookups:
        for i in range(10):
            ctx = InvocationContext(connectionId=f"n1.{i}")
            rig.invoker.start(service, action, ctx, got.append)
        assert not rig.invoker._tasks  # all ten took the fast path
        await eventually(lambda: len(got) == 10, what="ten answers")
    assert all(isinstance(g, InvocationResult) for g in got)
    assert lookups == [0]


async def test_aclose_ends_fast_path_calls_in_flight_unavailable(rig: Rig) -> None:
    assert isinstance(await rig.call(ECHO, {}), InvocationResult)  # connected now
    got: list[Any] = []
    action = Action(type=HOLD, payload=msgspec.Raw(b"{}"))
    rig.invoker.start(rig.service(HOLD), action, InvocationContext(connectionId="n1.x"), got.append)
    assert not rig.invoker._tasks
    await eventually(lambda: rig.server.holding == 1, what="the call held")
    await rig.invoker.aclose()
    assert got == [ErrorCode.UPSTREAM_UNAVAILABLE]


async def test_streams_tells_a_server_streaming_method_and_follows_bind(rig: Rig) -> None:
    watch = f"{SERVICE}/Watch"
    service = rig.service(watch)
    assert rig.invoker.streams(service, watch)
    assert not rig.invoker.streams(service, ECHO)
    assert not rig.invoker.streams(service, f"{SERVICE}/Nope")
    target = rig.server.target
    methods = dict(rig.invoker.methods(target))
    rig.invoker.bind(target, {ECHO: methods[ECHO]})
    assert not rig.invoker.streams(service, watch)
    rig.invoker.bind(target, methods)
    assert rig.invoker.streams(service, watch)
