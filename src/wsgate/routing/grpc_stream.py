"""Server-streaming calls: each message to the caller, then one end (issue 10, item 2).

The Upstream opens a stream with :meth:`GrpcInvoker.open_stream
<wsgate.routing.grpc_invoker.GrpcInvoker.open_stream>` and a
:class:`StreamSink` of its own; it gets a :class:`Stream` handle back.

Guarantees, in call order:

- ``sink.item`` gets every message of the stream, in order, transcoded;
  before reading the next message the stream waits for
  ``sink.when_writable()``, so a slow client pauses the reads (gRPC flow
  control then pauses the server) instead of filling a buffer;
- ``sink.end(status, message)`` is called exactly once, last, never from
  within :meth:`Stream.cancel` or ``open_stream``: ``OK`` when the service
  ended the stream, the ``status`` given to :meth:`Stream.cancel` when
  cancelled, else an :class:`~wsgate.protocol.codes.ErrorCode` value
  (``message`` only for the gateway's own ``BAD_REQUEST``);
- the gRPC call is cancelled when the stream is (the server sees its
  context cancelled), and the target's concurrency slot is held for the
  stream's life and released at its end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from wsgate.protocol.envelope import Action, Outbound

if TYPE_CHECKING:
    from wsgate.routing.context import InvocationContext
    from wsgate.routing.instances import Service

__all__ = ["CANCELLED", "OK", "Stream", "StreamSink", "Streams"]

log = logging.getLogger(__name__)

OK = "OK"
CANCELLED = "CANCELLED"


class StreamSink(Protocol):
    """Where a stream's messages go (one per stream, given by the Upstream)."""

    def item(self, reply: Outbound) -> None:
        """One message, as an action for the caller."""

    def when_writable(self) -> asyncio.Future[None] | None:
        """``None`` when the caller can take more now, else a future resolved when it can."""

    def end(self, status: str, message: str | None = None) -> None:
        """The stream is over (called once, last)."""


@runtime_checkable
class Streams(Protocol):
    """An invoker that also opens streams (the gRPC one)."""

    def streams(self, service: Service, action_type: str) -> bool:
        """Whether ``action_type`` is a streaming method of ``service`` (one dict probe)."""

    def open_stream(
        self,
        service: Service,
        action: Action,
        context: InvocationContext,
        sink: StreamSink,
        traceparent: str | None = None,
    ) -> Stream:
        """Open the stream; ``sink`` hears the rest."""


class Stream:
    """One open stream: its task, and :meth:`cancel`."""

    __slots__ = ("_cancel_status", "_ended", "_sink", "task")

    def __init__(self, sink: StreamSink) -> None:
        self._sink = sink
        self._ended = False
        self._cancel_status = CANCELLED
        self.task: asyncio.Task[None] | None = None
        """Set by the invoker right after creating it."""

    def cancel(self, status: str = CANCELLED) -> None:
        """End the stream early; its ``end`` gets ``status`` (later, from the task)."""
        if self.task is not None and not self._ended:
            self._cancel_status = status
            self.task.cancel()

    def finish(self, status: str, message: str | None = None) -> None:
        """Tell the sink ``status`` once; later calls are ignored."""
        if self._ended:
            return
        self._ended = True
        try:
            self._sink.end(status, message)
        except Exception:
            log.exception("stream end callback failed")

    def finished(self, task: asyncio.Task[None]) -> None:
        """The task's done callback: a task cancelled before it ran still ends the stream."""
        self.finish(self._cancel_status)

    async def pump(
        self,
        call: Any,
        reply: Callable[[Any], Outbound],
        failed: Callable[[Exception], str],
    ) -> None:
        """Read ``call`` (an async iterator of messages) into the sink, pacing by it.

        ``reply`` turns a message into the caller's action; ``failed`` maps
        the call's error to a status (and logs it).
        """
        messages: AsyncIterator[Any] = call.__aiter__()
        try:
            while True:
                try:
                    message = await messages.__anext__()
                except StopAsyncIteration:
                    break
                self._sink.item(reply(message))
                waiting = self._sink.when_writable()
                if waiting is not None:
                    await waiting
        except asyncio.CancelledError:
            call.cancel()
            self.finish(self._cancel_status)
            raise
        except Exception as exc:
            call.cancel()
            self.finish(failed(exc))
            return
        self.finish(OK)
