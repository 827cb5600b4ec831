"""One line per event on the ``wsgate.events`` logger, its fields as record attributes.

Field names (docs/observability.md): ``event`` always; ``connection``,
``user``, ``org``, ``remote`` and ``request_id`` where they apply, then what
the event adds (``code``, ``reason``, ``service``, ``outcome``, ...). A field
whose value is ``None`` or ``""`` is left out. Values are ids, codes and
counts, never a payload: callers pass nothing a client or service wrote
beyond its type and ids.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Final

__all__ = ["EVENTS", "event"]

EVENTS: Final = "wsgate.events"
"""The logger of every event line."""

_log: Final = logging.getLogger(EVENTS)


def event(
    name: str,
    level: int = logging.INFO,
    who: Mapping[str, object] | None = None,
    **fields: object,
) -> None:
    """Write the event ``name`` (also its message) with ``who`` (the identifying fields, as
    :func:`wsgate.lifecycle.fields` gives them) then ``fields``; cheap when ``level`` is off."""
    if not _log.isEnabledFor(level):
        return
    extra: dict[str, object] = {"event": name}
    for part in (who or {}, fields):
        for key, value in part.items():
            if value is not None and value != "":
                extra[key] = value
    _log.log(level, name, extra=extra)
