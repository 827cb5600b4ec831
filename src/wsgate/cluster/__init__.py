"""Many nodes as one gateway: the bus between the core and a cluster backend.

:class:`~wsgate.cluster.bus.ClusterBus` plugs into the core as its fan-out
bus, a lifecycle observer and a join gate, and into a
:class:`~wsgate.backends.base.Backend` (Redis, NATS, or in-process memory).
See ``docs/cluster.md``.
"""

from __future__ import annotations

from wsgate.cluster.bus import ClusterBus

__all__ = ["ClusterBus"]
