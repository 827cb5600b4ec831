"""The inbound budget of control frames (pings and pongs) of one connection.

picows parses control frames below the core, so they never reach the core's
per-message rate (``limits.default_rate``). The transport charges them to a
rate of its own with the same settings: GCRA (one timestamp per connection,
no timer). A control frame over the rate is *refused*: a ping gets no pong, a
pong is ignored; more than ``abuse_refusals`` refusals within
``abuse_window_s`` close the connection with 4429, as a message flood does
(docs/hardening.md).

Cost: nothing on the data path (text and binary frames are not charged); one
clock read and a few float operations per control frame.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ControlLimit"]


@dataclass(frozen=True, slots=True)
class ControlLimit:
    """How many control frames a connection may send.

    The node builds it from ``[limits]`` (``default_rate``, ``default_burst``,
    ``abuse_refusals``, ``abuse_window_s``); ``abuse_refusals == 0`` never
    closes (refused frames are still dropped).
    """

    interval: float
    """Seconds per control frame at the sustained rate."""
    tolerance: float
    """Seconds of burst: ``interval * (burst - 1)``."""
    abuse_refusals: int
    """Refusals within ``abuse_window_s`` past which the connection is closed 4429."""
    abuse_window_s: float
