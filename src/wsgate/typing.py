"""Identifier types shared by every layer.

They are ``NewType``s over ``str``: free at run time, distinct to mypy, so a
user id is never passed where a connection id is expected.
"""

from __future__ import annotations

from typing import NewType

__all__ = ["ChannelAddress", "ConnectionId", "HubId", "NodeId", "UserId"]

NodeId = NewType("NodeId", str)
"""A gateway node's id; every connection id starts with it."""

ConnectionId = NewType("ConnectionId", str)
"""``<node>.<random>``: unique in the cluster, routable to its node."""

UserId = NewType("UserId", str)
"""The ``sub`` claim of a session."""

HubId = NewType("HubId", str)
"""``system``, ``public`` or an organization id."""

ChannelAddress = NewType("ChannelAddress", str)
"""``<hub>`` or ``<hub>:<view>``, see :mod:`wsgate.protocol.address`."""
