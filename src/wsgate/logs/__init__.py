"""Structured logs: the formats, their set-up, and the event lines (``docs/observability.md``).

:func:`configure` (called by ``wsgate serve``/``demo``, never by a node)
installs one stderr handler with :class:`JsonFormatter` or
:class:`TextFormatter`. :func:`event` writes one line on the
``wsgate.events`` logger; every lifecycle, upstream-failure and reload line
goes through it, with its fields as ``extra=`` attributes of the record.
No line is written per delivered action, and no field is ever a payload.
:class:`LineCap` caps the ``connected`` and ``closed`` lines per second
(``[log] lifecycle_lines_per_s``) and writes one ``suppressed`` line for the rest.
"""

from __future__ import annotations

from wsgate.logs.cap import SUPPRESSED, LineCap
from wsgate.logs.events import EVENTS, event
from wsgate.logs.format import JsonFormatter, TextFormatter, configure

__all__ = [
    "EVENTS", "SUPPRESSED", "JsonFormatter", "LineCap", "TextFormatter", "configure", "event",
]
