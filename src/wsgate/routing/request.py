"""The invocation request body every transport sends: ``{"action", "context"}``.

One encoder for all invokers (HTTP, NATS), so a service sees the same bytes
whatever carries them: ``action`` as the client sent it (its payload raw JSON,
embedded without re-encoding) and the :class:`~wsgate.routing.context.
InvocationContext` with every field.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from wsgate.protocol.envelope import Action, Outbound
from wsgate.routing.context import InvocationContext

__all__ = ["InvocationRequest", "encode_request"]


class InvocationRequest(msgspec.Struct):
    """The body of one invocation."""

    action: Any
    context: InvocationContext


_encoder: Final = msgspec.json.Encoder()


def encode_request(action: Action | Outbound, context: InvocationContext) -> bytes:
    """The JSON body for ``action`` on behalf of ``context`` (one msgspec pass)."""
    return _encoder.encode(InvocationRequest(action, context))
