"""Apply a publish (from a service's answer or ``POST /v1/publish``) to the core.

Glue between :mod:`wsgate.routing.results` and :mod:`wsgate.core.fanout`,
kept outside both so neither imports the other. :func:`to_delivery` is the
one conversion from a target and an action to a
:class:`~wsgate.core.delivery.Delivery`; every publish (the services' answers,
the connect hook's) goes through :func:`deliver`, the internal API's batch
(:class:`~wsgate.routing.results.PublishBatch`, one action or many) through
:func:`deliver_batch`, which sends one Delivery per action.

A batch's deliveries are handed to the fan-out in one synchronous call, so
within one event-loop iteration: each member's frames go out in one socket
write (the transport's outbound buffer, docs/transport.md), not one per action.
"""

from __future__ import annotations

from wsgate.core.delivery import Delivery, TargetKind
from wsgate.core.gateway import Gateway
from wsgate.protocol.envelope import NULL
from wsgate.routing.results import Publish, PublishBatch, ResultAction, Target
from wsgate.typing import ConnectionId

__all__ = ["deliver", "deliver_batch", "to_delivery"]


def to_delivery(
    to: Target, action: ResultAction, exclude: Target | None = None, ack: str | None = None
) -> Delivery:
    """``action`` for ``to`` as one Delivery: the target's kind (the public API's name,
    :attr:`Target.kind <wsgate.routing.results.Target.kind>`) and value, the
    action (a ``null`` payload as ``None``), the excluded connection, the delivery
    id ``ack`` of an acknowledged one; no origin."""
    skip = None
    if exclude is not None and exclude.connection is not None:
        skip = ConnectionId(exclude.connection)
    payload = None if action.payload == NULL else action.payload
    return Delivery(
        TargetKind(to.kind), to.value, action.type, payload, action.error, None, skip, ack
    )


def deliver_batch(gateway: Gateway, batch: PublishBatch, ack: str | None = None) -> int:
    """Deliver each action of ``batch`` in order, as :func:`deliver`; return the total.
    ``ack`` (a batch of one action only, :class:`PublishBatch` checks): as :func:`deliver`."""
    send = gateway.fanout.send
    to, exclude = batch.to, batch.exclude
    delivered = sum(send(to_delivery(to, action, exclude, ack)) for action in batch.batch)
    _settle(gateway, to, ack)
    return delivered


def _settle(gateway: Gateway, to: Target, ack: str | None) -> None:
    """Tell the acknowledged deliveries that ``ack`` went out (framed here or not)."""
    acks = gateway.acks
    if ack is not None and acks is not None:
        acks.published(ack, to.kind == "user", to.value)


def deliver(gateway: Gateway, publish: Publish, ack: str | None = None) -> int:
    """Deliver ``publish`` to its target's local members; return how many got it.

    Only members of the target receive it: a channel's joined connections, a
    hub's connections, a user's tabs, or the one connection named. ``ack``: the
    delivery id :meth:`Acks.reserve <wsgate.core.acks.Acks.reserve>` gave a
    ``publish.ack`` (without one, an ``ack: true`` publish is delivered unacknowledged).
    """
    delivered = gateway.fanout.send(to_delivery(publish.to, publish.action, publish.exclude, ack))
    _settle(gateway, publish.to, ack)
    return delivered
