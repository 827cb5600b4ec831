"""The internal HTTP API (design §5): never on the public listener."""

from __future__ import annotations

from wsgate.api.app import build_app
from wsgate.api.state import ApiState

__all__ = ["ApiState", "build_app"]
