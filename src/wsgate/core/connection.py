"""One client connection as the core sees it: identity, membership, outbound sink.

A :class:`Connection` is the :class:`~wsgate.transport.base.Session` the
transport feeds. It holds no socket: it writes through its ``sink``. It is
created by :meth:`Gateway.open <wsgate.core.gateway.Gateway.open>` and dies in
:meth:`on_close`, after which the pool holds no reference to it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from wsgate.auth.principal import Principal
from wsgate.protocol import builtins as bi
from wsgate.protocol.codes import ErrorCode
from wsgate.protocol.envelope import Outbound, OutMeta, encode
from wsgate.transport.base import Sink
from wsgate.typing import ChannelAddress, ConnectionId, HubId, UserId

if TYPE_CHECKING:
    from wsgate.core.gateway import Gateway

__all__ = ["Connection"]


class Connection:
    """A connected client; also the transport's session for it."""

    __slots__ = (
        "_gateway",
        "_member",
        "channels",
        "closed",
        "connected_at",
        "hubs",
        "id",
        "peer",
        "pending",
        "principal",
        "sink",
        "views",
    )

    def __init__(
        self,
        gateway: Gateway,
        cid: ConnectionId,
        principal: Principal,
        sink: Sink,
        peer: str,
        hubs: tuple[HubId, ...],
    ) -> None:
        self._gateway = gateway
        self.id = cid
        self.principal = principal
        self.sink = sink
        self.peer = peer
        """The client's IP address."""
        self.hubs = hubs
        """Hubs joined on connect; fixed for the connection's life."""
        self.channels: set[ChannelAddress] | None = None
        """View channels joined (created on first join: idle connections cost less)."""
        self.views: dict[HubId, ChannelAddress] | None = None
        """The current NAVIGATE view per hub."""
        self.closed = False
        self.pending: list[bytes] | None = None
        """Messages received while a connect hook decides (``None``: admitted)."""
        self.connected_at = time.time()
        """Unix time of the handshake (for the internal API)."""
        self._member: bi.Member | None = None

    @property
    def user_id(self) -> UserId:
        return UserId(self.principal.sub)

    @property
    def member(self) -> bi.Member:
        """This connection as presence shows it (built once)."""
        if self._member is None:
            self._member = bi.Member(self.principal.sub, self.id, self.principal.name)
        return self._member

    def in_channel(self, address: ChannelAddress) -> bool:
        """Tell whether this connection may act in ``address`` (a joined view or hub)."""
        if address in self.hubs:  # type: ignore[comparison-overlap]  # a hub is a channel too
            return True
        return self.channels is not None and address in self.channels

    # Session protocol -------------------------------------------------------

    def on_message(self, data: bytes) -> None:
        pending = self.pending
        if pending is None:
            self._gateway.dispatcher.dispatch(self, data)
        elif len(pending) < self._gateway.max_pending:
            pending.append(data)
        else:
            self.send_error(ErrorCode.RATE_LIMITED, "wait for WELCOME", retry_after_ms=100)

    def on_binary(self) -> None:
        self.send_error(ErrorCode.BAD_REQUEST, "binary frames are not accepted; send JSON text")

    def on_close(self, code: int) -> None:
        self._gateway.close(self)

    # Sending -----------------------------------------------------------------

    def send_action(
        self, type_: str, payload: Any, *, in_reply_to: str | None = None, error: bool = False
    ) -> None:
        meta = OutMeta(inReplyTo=in_reply_to) if in_reply_to is not None else None
        self.sink.send(encode(Outbound(type_, payload, meta, error)))

    def send_error(
        self,
        code: ErrorCode,
        message: str,
        in_reply_to: str | None = None,
        *,
        retry_after_ms: int | None = None,
    ) -> None:
        """Answer with ``@@wsgate/ERROR``; the connection stays open."""
        payload = bi.ErrorPayload(code.value, message, retryAfterMs=retry_after_ms)
        self.send_action(bi.ERROR, payload, in_reply_to=in_reply_to, error=True)

    def __repr__(self) -> str:
        return f"<Connection {self.id} user={self.principal.sub!r}>"
