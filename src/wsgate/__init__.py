"""wsgate: a WebSocket API gateway.

Browsers hold one WebSocket each and exchange Redux-style actions
(``{type, payload, meta}``) with the gateway; the gateway keeps them in a
Pool of Hubs and Channels, relays what they share and routes the rest to
services. See ``docs/design.md``.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
