"""Low-level JetStream calls shared by the NATS stores.

Every call is one request (or one batch of direct-get replies) with a
timeout; none retries by itself. Reads use *direct get* (the stream's
``allow_direct``), which any server holding the stream answers without a
consumer: ``last_by_subj`` for one subject, ``next_by_subj`` + ``batch`` to
page through the messages of a (wildcard) subject in sequence order.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from typing import Any, NamedTuple

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import api

from wsgate.backends.errors import boundary
from wsgate.backends.nats_names import Names

__all__ = ["Jet", "Stored", "WrongLastSequence", "guard"]

guard = boundary(
    (
        nats.errors.TimeoutError,
        nats.errors.NoServersError,
        nats.errors.ConnectionClosedError,
        nats.errors.ConnectionReconnectingError,
        nats.errors.ConnectionDrainingError,
        nats.errors.StaleConnectionError,
        nats.errors.NoRespondersError,
        nats.errors.FlushTimeoutError,
        nats.errors.OutboundBufferLimitError,
        OSError,
        TimeoutError,
    ),
    (nats.errors.Error,),
)
"""The NATS backend's boundary: every public awaited call raises
:class:`~wsgate.exceptions.BackendUnavailable` (no connection, or no answer
within the request timeout) or :class:`~wsgate.exceptions.BackendError` (any
other NATS or JetStream error, e.g. a JetStream API error)."""

log = logging.getLogger(__name__)

_WRONG_LAST = (10071, 10164)
_WRONG_LAST_RE = re.compile(r"wrong last sequence: (\d+)")
_STREAM_IN_USE = 10058
_EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"
_BATCH = 256

def _republish(config: api.StreamConfig) -> tuple[str, str, bool] | None:
    rp = config.republish
    if rp is None:
        return None
    return (rp.src or "", rp.dest or "", bool(rp.headers_only))


def _limits(config: api.StreamConfig) -> tuple[object, ...]:
    """What :meth:`Jet.ensure_streams` brings an existing stream to."""
    most = config.max_msgs if config.max_msgs and config.max_msgs > 0 else -1
    age = round(config.max_age or 0.0, 3)
    return (config.max_msgs_per_subject, most, age, _republish(config))


class Stored(NamedTuple):
    """One message read back from a stream."""

    subject: str
    seq: int
    data: bytes
    headers: dict[str, str]


class WrongLastSequence(Exception):
    """A compare-and-set publish lost: the subject's last sequence is not the expected one."""

    def __init__(self, actual: int | None) -> None:
        super().__init__(f"wrong last sequence (actual {actual})")
        self.actual = actual
        """The subject's real last sequence, when the server said it (0: no message)."""


class Jet:
    """JetStream access for one prefix: its three streams and the calls on them."""

    def __init__(self, nc: Client, names: Names, timeout: float) -> None:
        self.nc = nc
        self.names = names
        self.timeout = timeout
        self.js = nc.jetstream(timeout=timeout)

    async def ensure_streams(
        self,
        history_size: int,
        history_ttl_s: float,
        history_max_channels: int = 10_000,
        inbox: tuple[int, float, int] = (100, 300.0, 10_000),
    ) -> None:
        """Create the three streams, or bring an existing one to these limits.

        The history stream frees everything with the server's own limits, so
        no node sweeps: a message is removed ``history_ttl_s`` after its
        append (``max_age``), a channel keeps its last ``history_size``
        (``max_msgs_per_subject``; 1 when the size is 0, for the channel's
        offset counter), and the stream holds at most ``history_max_channels
        × that`` messages, the oldest removed first (``max_msgs``, discard
        old; 0: unbounded). It republishes every channel message, headers
        included, to the channel's broker subject.

        The inbox stream does the same for users' inboxes with ``inbox``'s
        ``(max_messages, ttl_s, max_users)`` (``[inbox]``): a user keeps their
        last ``max_messages``, each removed ``ttl_s`` after its append, at most
        ``max_users × max_messages`` messages in all. Apart from the history
        stream, so neither kind evicts the other.
        """
        names = self.names
        kinds = (
            (names.hist_stream, names.hist_subjects, names.hist_republish_src,
             (history_size, history_ttl_s, history_max_channels)),
            (names.inbox_stream, names.inbox_subjects, names.inbox_republish_src, inbox),
        )
        for name, subjects, src, (size, ttl_s, most) in kinds:
            per_subject = max(size, 1)
            await self._ensure(
                api.StreamConfig(
                    name=name,
                    subjects=subjects,
                    max_msgs_per_subject=per_subject,
                    max_msgs=most * per_subject if most > 0 else -1,
                    max_age=max(ttl_s, 0.001),
                    allow_direct=True,
                    discard=api.DiscardPolicy.OLD,
                    republish=api.RePublish(src=src, dest=names.hist_republish_dest),
                ),
            )
        await self._ensure(
            api.StreamConfig(
                name=names.state_stream,
                subjects=names.state_subjects,
                max_msgs_per_subject=1,
                allow_direct=True,
                allow_msg_ttl=True,
                discard=api.DiscardPolicy.OLD,
            ),
        )

    async def _ensure(self, config: api.StreamConfig) -> None:
        """Create the stream, or update an existing one to ``config``'s limits."""
        assert config.name is not None
        try:
            info = await self.js.stream_info(config.name)
        except nats.js.errors.NotFoundError:
            try:
                info = await self.js.add_stream(config)
            except nats.js.errors.APIError as err:
                if err.err_code != _STREAM_IN_USE:  # another node created it first
                    raise
                await self.js.stream_info(config.name)
            return
        have = info.config
        if _limits(have) != _limits(config):
            log.warning("updating stream %s to this node's limits", config.name)
            have.max_msgs_per_subject = config.max_msgs_per_subject
            have.max_msgs = config.max_msgs
            have.max_age = config.max_age
            have.republish = config.republish
            await self.js.update_stream(have)

    # Writes ------------------------------------------------------------------

    async def append(self, subject: str, data: bytes) -> None:
        """Store ``data`` without waiting for (or asking for) an ack: one core publish."""
        await self.nc.publish(subject, data)

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        expected_last: int | None = None,
        ttl_s: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> int:
        """Store ``data``; return its sequence.

        ``expected_last`` makes it a compare-and-set on the subject's last
        sequence (0: the subject has no message), raising
        :exc:`WrongLastSequence` when another writer got there first.
        ``ttl_s`` is a per-message TTL, rounded up to whole seconds.
        """
        hdrs: dict[str, str] = dict(headers or {})
        if expected_last is not None:
            hdrs[_EXPECTED_LAST] = str(expected_last)
        ttl = None if ttl_s is None else max(1, math.ceil(ttl_s))
        try:
            ack = await self.js.publish(
                subject, data, timeout=self.timeout, headers=hdrs or None, msg_ttl=ttl
            )
        except nats.js.errors.APIError as err:
            if err.err_code in _WRONG_LAST:
                m = _WRONG_LAST_RE.search(err.description or "")
                raise WrongLastSequence(int(m.group(1)) if m else None) from None
            raise
        return int(ack.seq)

    async def purge(self, subject: str) -> None:
        """Remove every message of ``subject`` from the state stream (no tombstone)."""
        await self.js.purge_stream(self.names.state_stream, subject=subject)

    async def count_subjects(self, subject: str) -> int:
        """How many subjects matching ``subject`` hold a message in the state stream."""
        info = await self.js.stream_info(self.names.state_stream, subjects_filter=subject)
        return len(info.state.subjects or {})

    # Reads -------------------------------------------------------------------

    async def last(self, stream: str, subject: str) -> Stored | None:
        """The last message of ``subject`` in ``stream``, or ``None``."""
        msg = await self.nc.request(
            f"$JS.API.DIRECT.GET.{stream}.{subject}", b"", timeout=self.timeout
        )
        hdrs = dict(msg.headers or {})
        status = hdrs.get("Status")
        if status == "404":
            return None
        if status:
            raise nats.js.errors.APIError(code=int(status), description=hdrs.get("Description"))
        return Stored(hdrs["Nats-Subject"], int(hdrs["Nats-Sequence"]), msg.data, hdrs)

    async def get(self, stream: str, seq: int) -> Stored | None:
        """The message at sequence ``seq`` of ``stream`` (any subject), or ``None``."""
        req = json.dumps({"seq": seq}).encode()
        msg = await self.nc.request(f"$JS.API.DIRECT.GET.{stream}", req, timeout=self.timeout)
        hdrs = dict(msg.headers or {})
        status = hdrs.get("Status")
        if status == "404":
            return None
        if status:
            raise nats.js.errors.APIError(code=int(status), description=hdrs.get("Description"))
        return Stored(hdrs["Nats-Subject"], int(hdrs["Nats-Sequence"]), msg.data, hdrs)

    async def scan(self, stream: str, subject: str, start: int = 1, limit: int = 0) -> list[Stored]:
        """Messages of ``subject`` (wildcards allowed) from sequence ``start`` on, in order.

        Pages by batches of direct get; ``limit`` (0: none) stops early.
        """
        out: list[Stored] = []
        seq = max(start, 1)
        while True:
            want = _BATCH if not limit else min(_BATCH, limit - len(out))
            page, pending = await self._batch(stream, subject, seq, want)
            out.extend(page)
            if not page or not pending or (limit and len(out) >= limit):
                return out
            seq = page[-1].seq + 1

    async def _batch(
        self, stream: str, subject: str, seq: int, batch: int
    ) -> tuple[list[Stored], int]:
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)
        req: dict[str, Any] = {"seq": seq, "next_by_subj": subject, "batch": batch}
        page: list[Stored] = []
        try:
            await self.nc.publish(
                f"$JS.API.DIRECT.GET.{stream}", json.dumps(req).encode(), reply=inbox
            )
            deadline = time.monotonic() + self.timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise nats.errors.TimeoutError
                msg = await sub.next_msg(timeout=left)
                hdrs = dict(msg.headers or {})
                status = hdrs.get("Status")
                if status == "204":  # end of batch
                    return page, int(hdrs.get("Nats-Num-Pending", "0"))
                if status == "404":
                    return page, 0
                if status:
                    raise nats.js.errors.APIError(
                        code=int(status), description=hdrs.get("Description")
                    )
                page.append(
                    Stored(hdrs["Nats-Subject"], int(hdrs["Nats-Sequence"]), msg.data, hdrs)
                )
        finally:
            await sub.unsubscribe()
