"""Pluggable backends: the Protocols in :mod:`.base`, implementations beside it.

``memory`` is the default, for one node. Implementations are chosen by the
``[broker] url`` scheme and imported lazily, so an optional dependency is
only needed when its backend is used.
"""

from __future__ import annotations

__all__: list[str] = []
