"""Apply a publish (from a service's answer or ``POST /v1/publish``) to the core.

Glue between :mod:`wsgate.routing.results` and :mod:`wsgate.core.fanout`,
kept outside both so neither imports the other.
"""

from __future__ import annotations

from wsgate.core.gateway import Gateway
from wsgate.protocol.envelope import NULL
from wsgate.routing.results import Publish
from wsgate.typing import ConnectionId

__all__ = ["deliver"]


def deliver(gateway: Gateway, publish: Publish) -> int:
    """Deliver ``publish`` to its target's local members; return how many got it.

    Only members of the target receive it: a channel's joined connections, a
    hub's connections, a user's tabs, or the one connection named.
    """
    action = publish.action
    exclude = None
    if publish.exclude is not None and publish.exclude.connection is not None:
        exclude = ConnectionId(publish.exclude.connection)
    payload = None if action.payload == NULL else action.payload
    to = publish.to
    return gateway.fanout.to_target(to.kind, to.value, action.type, payload, exclude, action.error)
