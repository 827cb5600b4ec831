"""Build a core Gateway with fakes, and talk to it like a client would."""

from __future__ import annotations

from typing import Any

import msgspec

from wsgate.auth.policy import ChannelPolicy
from wsgate.auth.principal import Principal
from wsgate.backends.memory import MemoryHistory, MemoryRateLimits
from wsgate.config import (
    ChannelRule,
    HistoryConfig,
    LimitsConfig,
    NamespaceRule,
    PresenceConfig,
    RateLimitRule,
)
from wsgate.core.acks import AckSettings
from wsgate.core.connection import Connection
from wsgate.core.fanout import Bus
from wsgate.core.gateway import Admission, AuthorizeHook, Gateway
from wsgate.core.limits import Limiter, SharedCheck
from wsgate.core.namespaces import Namespaces
from wsgate.core.presence import PresenceBatcher
from wsgate.typing import NodeId

from .fakes import ManualClock, RecordingSink


class Harness:
    def __init__(
        self,
        *,
        batch_ms: int = 0,
        max_members: int = 100,
        relays: tuple[str, ...] = ("chat/*",),
        history: int = 100,
        max_channels: int = 64,
        rules: list[ChannelRule] | None = None,
        allow_anonymous: bool = True,
        limits: LimitsConfig | None = None,
        rate_limits: list[RateLimitRule] | None = None,
        admission: Admission | None = None,
        shared: SharedCheck | None = None,
        gates: tuple[AuthorizeHook, ...] = (),
        bus: Bus | None = None,
        namespaces: list[NamespaceRule] | None = None,
        inbox: int = 0,
        acks: AckSettings | None = None,
    ) -> None:
        self.clock = ManualClock()
        limiter = None
        if limits is not None:
            limiter = Limiter(limits, rate_limits or [], MemoryRateLimits(), self.clock.time)
        self.namespaces = Namespaces(
            namespaces or [], HistoryConfig(size=history), PresenceConfig(max_members=max_members)
        )
        self.history = MemoryHistory(
            history, 300.0, self.clock.time, limits=self.namespaces.history_of
        )
        self.inbox = None
        if inbox:  # users' inbox streams of ``inbox`` actions each
            self.inbox = MemoryHistory(inbox, 300.0, self.clock.time, max_channels=64)
        self.gw = Gateway(
            node_id=NodeId("n1"),
            inbox=self.inbox,
            acks=acks,
            wall=self.clock.time,
            policy=ChannelPolicy(rules or [], allow_anonymous),
            scheduler=self.clock,
            history=self.history,
            relays=list(relays),
            presence=PresenceBatcher(self.clock, batch_ms=batch_ms, large_batch_ms=1000),
            namespaces=self.namespaces,
            max_channels=max_channels,
            limiter=limiter,
            admission=admission,
            shared=shared,
            gates=gates,
            bus=bus,
        )

    def connect(self, user: str, org: str = "acme", ip: str = "127.0.0.1", **claims: Any) -> Client:
        principal = Principal(sub=user, name=user.title(), org=org, orgs=(org,), **claims)
        sink = RecordingSink()
        conn = self.gw.open(sink, principal, ip)
        return Client(conn, sink)


class Client:
    def __init__(self, conn: Connection, sink: RecordingSink) -> None:
        self.conn = conn
        self.sink = sink

    @property
    def id(self) -> str:
        return self.conn.id

    def send(self, type_: str, payload: Any = None, **meta: Any) -> list[dict[str, Any]]:
        """Send one action; return what this client received because of it."""
        self.sink.frames.clear()
        action: dict[str, Any] = {"type": type_}
        if payload is not None:
            action["payload"] = payload
        if meta:
            action["meta"] = meta
        self.conn.on_message(msgspec.json.encode(action))
        return self.sink.take()

    def raw(self, data: bytes) -> list[dict[str, Any]]:
        self.sink.frames.clear()
        self.conn.on_message(data)
        return self.sink.take()

    def join(self, channel: str, **extra: Any) -> list[dict[str, Any]]:
        return self.send("@@wsgate/JOIN", {"channel": channel, **extra}, id="j")

    def take(self) -> list[dict[str, Any]]:
        return self.sink.take()

    def close(self) -> None:
        self.conn.on_close(1000)
