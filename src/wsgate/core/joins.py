"""A join's outcome: the channel joined, or a :class:`JoinRefused` with its code.

Kept apart from :mod:`wsgate.core.gateway` (which runs the join pipeline and
re-exports both names) so that the modules answering joins — the built-in
handlers, the internal API, the cluster — need not import the gateway.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from wsgate.protocol.codes import ErrorCode

if TYPE_CHECKING:
    from wsgate.core.pool import Channel

__all__ = ["JoinAnswer", "JoinRefused"]


class JoinRefused(Exception):
    """A join's refusal (given to the ``answer`` of :meth:`Gateway.request_join`)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


JoinAnswer = Callable[["Channel | JoinRefused"], None]
"""Told the outcome of :meth:`Gateway.request_join`: the channel joined, or why not."""
