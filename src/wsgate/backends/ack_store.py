"""The cluster's record of acknowledged deliveries (:class:`AckStore`), and its opener.

A cluster's nodes share, per delivery id, one :class:`AckRecord`: the target
(a user or a connection), the offset its action carries, its state
(``pending`` → ``delivered`` → ``acked``; ``pending``/``delivered`` →
``expired``) and its expiry. The state machine itself is
:mod:`wsgate.core.acks`; :mod:`wsgate.cluster.acks` drives this store for it.
Opened by :func:`wsgate.backends.acks.open_acks`. Implementations:
``memory_acks.py`` (the nodes of one ``memory://<name>`` hub),
``redis_acks.py`` (one hash per id, Lua scripts), ``nats_acks.py`` (nats-py's
JetStream KeyValue, compare-and-set).

Bounds: every record is freed by the store ``ttl_s`` after its expiry, and a
finished one ``ttl_s`` after it finished (NATS: the bucket's age limit,
``2 × ttl_s`` after the record's last write at most). How many records are
created is bounded by each node (``[inbox] max_deliveries``).

Failures: every method raises :class:`~wsgate.exceptions.BackendUnavailable`
or :class:`~wsgate.exceptions.BackendError` (memory never raises).
"""

from __future__ import annotations

from typing import Final, Protocol

import msgspec

__all__ = ["FINISHED", "AckRecord", "AckStore"]

FINISHED: Final = ("acked", "expired")
"""The states a record never leaves."""


class AckRecord(msgspec.Struct, frozen=True, array_like=True):
    """One delivery as the cluster knows it (encoded as a JSON array where stored whole)."""

    target: str
    """A user id (``user``) or a connection id."""
    user: bool
    offset: int
    """The offset the action carries (0: no node has framed it yet)."""
    state: str
    """``pending``, ``delivered``, ``acked`` or ``expired``."""
    expires_at: float
    """Unix time after which an unfinished delivery is expired."""


class AckStore(Protocol):
    """Delivery records shared by every node; each method atomic per id."""

    async def record(self, id_: str, record: AckRecord, ttl_s: float) -> None:
        """Create ``id_`` as ``record`` when absent. When present and unfinished: a
        nonzero ``record.offset`` replaces the offset, and ``record.state ==
        "delivered"`` moves a pending one on. A finished record is never changed.
        A new record is freed ``ttl_s`` after ``record.expires_at``."""
        ...

    async def finish(self, id_: str, state: str, ttl_s: float) -> bool:
        """Set ``state`` (``acked`` or ``expired``) on an unfinished ``id_``; ``True``
        when this call finished it (``False``: finished already, or unknown). The
        record is freed ``ttl_s`` later."""
        ...

    async def get(self, ids: list[str]) -> dict[str, AckRecord]:
        """The records of those ``ids`` the store holds (one round trip)."""
        ...

    async def close(self) -> None:
        """Free what the store holds of its own (its connection); never raises."""
        ...
