"""nats-py's client with raw subscriptions: messages handed over as the parser reads them.

:class:`ReplyClient` is nats-py's ``Client`` plus :meth:`~ReplyClient.subscribe_raw`:
each message of such a subscription goes, from nats-py's reader, straight to a
plain function ``handler(subject, data, headers)`` of bytes (``headers`` the raw
block, ``None`` without one), skipping what nats-py does for every other message:
parsing the header block into a dict, a ``Msg`` with its subject and reply
decoded, the subscription's queue, and its task awaiting the callback. The NATS
invoker's answers take this way (docs/routing.md, "NATS"): 133,686 against
107,429 instructions per call on the gateway's side of a NATS call, -20 %
(``bench/nats_request.py --callgrind``, medians of 5; bench/README.md, "The
NATS invoker: one timer, raw answers").

It overrides nats-py's private ``Client._process_msg`` (nats-py 2.x: ``(sid,
subject, reply, data, headers)``, awaited by its parser for each ``MSG`` and
``HMSG``) and reads ``Subscription._id``; the NATS invoker tests fail if nats-py
changes either. A raw subscription is still nats-py's (``SUB`` sent in order,
sent again after a reconnect, ``unsubscribe()`` works); its messages are not
counted in ``stats["in_msgs"]``. A handler must not block; an exception it
raises is logged and counted in :attr:`ReplyClient.raw_failures`, never
propagated into the reader (which would drop the connection).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.subscription import Subscription

__all__ = ["RawHandler", "ReplyClient"]

log = logging.getLogger(__name__)

RawHandler = Callable[[bytes, bytes, "bytes | None"], None]
"""``handler(subject, data, headers)``: one message of a raw subscription."""


class ReplyClient(Client):
    """nats-py's ``Client``, plus subscriptions whose messages skip the ``Msg``."""

    def __init__(self) -> None:
        super().__init__()
        self._raw: dict[int, RawHandler] = {}
        """Handlers by subscription id: one per :meth:`subscribe_raw`, dropped at the
        first message after its unsubscription (or with the client)."""
        self.raw_failures = 0
        """Exceptions raised by raw handlers (each logged)."""

    async def subscribe_raw(self, subject: str, handler: RawHandler) -> Subscription:
        """Subscribe ``subject``; its messages go to ``handler`` (see the module)."""
        sub = await self.subscribe(subject)
        self._raw[sub._id] = handler  # before any message: none is read until we yield
        return sub

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        handler = self._raw.get(sid)
        if handler is None:
            await super()._process_msg(sid, subject, reply, data, headers)  # type: ignore[arg-type]
            return
        if sid not in self._subs:  # unsubscribed; a message still on its way
            del self._raw[sid]
            return
        try:
            handler(subject, data, headers)
        except Exception:
            self.raw_failures += 1
            log.exception("NATS raw subscription handler failed")
