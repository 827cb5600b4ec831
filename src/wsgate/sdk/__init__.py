"""Helpers for services behind wsgate.

- :class:`Service`, :class:`Reply`, :data:`Context`: write an HTTP action
  service (``service.py``);
- :class:`Publisher`: push actions, manage connections and self-register
  through the internal API (``publisher.py``);
- :func:`verify_signature`: check ``X-Wsgate-Signature`` yourself.
"""

from __future__ import annotations

from wsgate.routing.signature import verify as verify_signature
from wsgate.sdk.publisher import Publisher, PublishError
from wsgate.sdk.service import Context, Handler, Refused, Reply, Service

__all__ = [
    "Context",
    "Handler",
    "PublishError",
    "Publisher",
    "Refused",
    "Reply",
    "Service",
    "verify_signature",
]
