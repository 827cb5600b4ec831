"""The Sans-I/O core: Pool → Hub → Channel, presence, dispatch and fan-out.

It works against :mod:`wsgate.transport.base` (sinks) and
:mod:`wsgate.backends.base` (stores) and never touches a socket.
"""

from __future__ import annotations

from wsgate.core.connection import Connection
from wsgate.core.delivery import Delivery, TargetKind
from wsgate.core.gateway import Authorizer, Gateway
from wsgate.core.presence import PresenceBatcher

__all__ = ["Authorizer", "Connection", "Delivery", "Gateway", "PresenceBatcher", "TargetKind"]
