"""The one exception the client raises, and its own error codes.

``ClientError.code`` is a gateway error code (``FORBIDDEN``, ``NO_ROUTE``, …,
from an ``@@wsgate/ERROR`` or any ``error: true`` answer) or one of the
client's codes below, which never come from the gateway.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = [
    "CLOSED",
    "DISCONNECTED",
    "LEFT",
    "PENDING_FULL",
    "QUEUE_FULL",
    "TIMEOUT",
    "ClientError",
    "error_of",
]

TIMEOUT: Final = "TIMEOUT"
"""No answer within the request's timeout."""
DISCONNECTED: Final = "DISCONNECTED"
"""The socket closed after the request went out on it (its answer cannot come on another)."""
CLOSED: Final = "CLOSED"
"""The client is closed, or stopped reconnecting."""
QUEUE_FULL: Final = "QUEUE_FULL"
"""More than ``max_queue`` actions waiting for a connection."""
PENDING_FULL: Final = "PENDING_FULL"
"""More than ``max_pending`` requests waiting for their answers."""
LEFT: Final = "LEFT"
"""A pending ``join()`` of a channel that ``leave()`` or the gateway dropped."""


class ClientError(Exception):
    """A refused or failed request.

    ``action`` is the error action received, when there is one;
    ``retry_after_ms`` its ``retryAfterMs``.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        action: dict[str, Any] | None = None,
        retry_after_ms: int | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.action = action
        self.retry_after_ms = retry_after_ms


def error_of(action: dict[str, Any]) -> ClientError:
    """The :class:`ClientError` an error action (``error: true``) stands for."""
    payload = action.get("payload")
    p: dict[str, Any] = payload if isinstance(payload, dict) else {}
    retry = p.get("retryAfterMs")
    return ClientError(
        str(p.get("code") or "ERROR"),
        str(p.get("message") or f"{action.get('type')} failed"),
        action=action,
        retry_after_ms=retry if isinstance(retry, int) else None,
    )
