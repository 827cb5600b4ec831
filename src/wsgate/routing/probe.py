"""Is anything listening at a service URL? One bounded TCP connect, for registrations.

A self-registration names a URL the gateway has never called: until a call
fails, passive health (:mod:`wsgate.routing.instances`) would show it
healthy. :func:`reachable` opens and closes one TCP connection (no TLS, no
request) within ``timeout_s``; a refusal or a timeout marks the instance
down for its back-off, as a failed call would. A success proves only that
something listens, so it never marks an instance healthy.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

__all__ = ["reachable"]


async def reachable(url: str, timeout_s: float = 1.0) -> bool:
    """Whether a TCP connection to ``url``'s host and port opens within ``timeout_s``."""
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    if not parts.hostname:
        return False
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname, port), timeout_s
        )
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
