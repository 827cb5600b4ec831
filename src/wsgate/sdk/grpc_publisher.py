"""A client of the gateway's gRPC API (``wsgate.v1.Gateway``), for Python services.

::

    async with GrpcPublisher("127.0.0.1:8082", api_key) as gw:
        await gw.publish({"channel": "acme:orders/42"}, {"type": "orders/UPDATED"})

The same calls as :class:`~wsgate.sdk.Publisher` (and the same dict shapes),
over one ``grpc.aio`` channel opened at the first call and closed by
:meth:`aclose`. Every call sends ``authorization: Bearer <api_key>`` and is
bounded by ``timeout_s``; a refusal raises grpc's own
:class:`grpc.aio.AioRpcError` with its status code (docs/api.md "gRPC"),
except where noted. Needs the ``grpc`` extra.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Final

import grpc
import grpc.aio
import msgspec

from wsgate.api.proto.wsgate.v1 import gateway_pb2 as pb
from wsgate.api.proto.wsgate.v1 import gateway_pb2_grpc as pb_grpc

__all__ = ["GrpcPublisher"]

_encoder: Final = msgspec.json.Encoder()


class GrpcPublisher:
    """Async client of ``wsgate.v1.Gateway`` at ``target`` (``host:port``).

    ``credentials``: TLS channel credentials; plaintext when ``None``.
    """

    def __init__(
        self,
        target: str,
        api_key: str,
        *,
        timeout_s: float = 5.0,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self._target = target
        self._metadata = (("authorization", f"Bearer {api_key}"),)
        self._timeout = timeout_s
        self._credentials = credentials
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None

    async def publish(
        self, to: dict[str, str], action: dict[str, Any], exclude_connection: str | None = None
    ) -> int:
        """Deliver ``action`` (``{type, payload?, error?}``) to ``to`` (``{"channel": addr}``…);
        return the deliveries on the node asked."""
        payload = _encoder.encode(action["payload"]).decode() if "payload" in action else ""
        request = pb.PublishRequest(
            to=pb.Target(**to),
            action=pb.Action(
                type=action["type"], payload=payload, error=action.get("error", False)
            ),
        )
        if exclude_connection is not None:
            request.exclude.connection = exclude_connection
        reply = await self._call("Publish", request)
        return int(reply.delivered)

    async def disconnect(self, connection_id: str) -> bool:
        """Close a connection with 1000; ``False`` when it is unknown (``NOT_FOUND``)."""
        try:
            await self._call("Disconnect", pb.DisconnectRequest(connection=connection_id))
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.NOT_FOUND:
                return False
            raise
        return True

    async def disconnect_user(self, user: str) -> int:
        """Close every tab of ``user`` with 4403 on every node; return how many the node asked
        closed. Needs an ``[admin]`` key (a service key: ``PERMISSION_DENIED``)."""
        reply = await self._call("Disconnect", pb.DisconnectRequest(user=user))
        return int(reply.disconnected)

    async def join(self, connection_id: str, channel: str) -> None:
        """Join the connection to ``channel`` (through the gateway's join pipeline)."""
        await self._call("Join", pb.JoinRequest(connection=connection_id, channel=channel))

    async def leave(self, connection_id: str, channel: str) -> None:
        """Take the connection out of ``channel``."""
        await self._call("Leave", pb.LeaveRequest(connection=connection_id, channel=channel))

    async def presence(self, channel: str) -> list[dict[str, str]]:
        """The members of ``channel`` on every node, as ``{userId, connectionId, name}``."""
        reply = await self._call("Presence", pb.PresenceRequest(channel=channel))
        return [
            {"userId": m.user_id, "connectionId": m.connection_id, "name": m.name}
            for m in reply.members
        ]

    async def aclose(self) -> None:
        """Close the channel (a later call opens a new one)."""
        if self._channel is not None:
            channel, self._channel, self._stub = self._channel, None, None
            await channel.close()

    async def __aenter__(self) -> GrpcPublisher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _call(self, method: str, request: Any) -> Any:
        if self._stub is None:
            if self._credentials is None:
                self._channel = grpc.aio.insecure_channel(self._target)
            else:
                self._channel = grpc.aio.secure_channel(self._target, self._credentials)
            self._stub = pb_grpc.GatewayStub(self._channel)  # type: ignore[no-untyped-call]
        return await getattr(self._stub, method)(
            request, metadata=self._metadata, timeout=self._timeout
        )
