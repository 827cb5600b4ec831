"""Apply a publish (from a service's answer or ``POST /v1/publish``) to the core.

Glue between :mod:`wsgate.routing.results` and :mod:`wsgate.core.fanout`,
kept outside both so neither imports the other. :func:`to_delivery` is the
one conversion from a :class:`~wsgate.routing.results.Publish` to a
:class:`~wsgate.core.delivery.Delivery`; every publish (the services' answers,
the connect hook's, the internal API's) goes through :func:`deliver`.
"""

from __future__ import annotations

from wsgate.core.delivery import Delivery, TargetKind
from wsgate.core.gateway import Gateway
from wsgate.protocol.envelope import NULL
from wsgate.routing.results import Publish
from wsgate.typing import ConnectionId

__all__ = ["deliver", "to_delivery"]


def to_delivery(publish: Publish, ack: str | None = None) -> Delivery:
    """``publish`` as one Delivery: the target's kind (the public API's name,
    :attr:`Target.kind <wsgate.routing.results.Target.kind>`) and value, the
    action (a ``null`` payload as ``None``), the excluded connection, the delivery
    id ``ack`` of an acknowledged one; no origin."""
    action = publish.action
    exclude = None
    if publish.exclude is not None and publish.exclude.connection is not None:
        exclude = ConnectionId(publish.exclude.connection)
    payload = None if action.payload == NULL else action.payload
    to = publish.to
    return Delivery(
        TargetKind(to.kind), to.value, action.type, payload, action.error, None, exclude, ack
    )


def deliver(gateway: Gateway, publish: Publish, ack: str | None = None) -> int:
    """Deliver ``publish`` to its target's local members; return how many got it.

    Only members of the target receive it: a channel's joined connections, a
    hub's connections, a user's tabs, or the one connection named. ``ack``: the
    delivery id :meth:`Acks.reserve <wsgate.core.acks.Acks.reserve>` gave a
    ``publish.ack`` (without one, an ``ack: true`` publish is delivered unacknowledged).
    """
    delivered = gateway.fanout.send(to_delivery(publish, ack))
    acks = gateway.acks
    if ack is not None and acks is not None and acks.state(ack) is None:
        acks.undeliverable(ack)  # no such connection here
    return delivered
