"""Channel address grammar: ``<hub>`` or ``<hub>:<view>``.

- ``hub``: 1–64 chars of ``[A-Za-z0-9_-]``: ``system``, ``public`` or an
  organization id.
- ``view``: 1–200 chars of ``[A-Za-z0-9_./@=+-]`` (a path-like application
  view such as ``orders/42`` or ``team/red/board``), no ``..`` segment.

Addresses are validated here, at the boundary, before they reach the core.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from wsgate.typing import ChannelAddress, HubId

__all__ = [
    "MAX_ADDRESS_LENGTH",
    "PUBLIC_HUB",
    "SYSTEM_HUB",
    "Address",
    "parse_address",
]

SYSTEM_HUB: Final = HubId("system")
PUBLIC_HUB: Final = HubId("public")
MAX_ADDRESS_LENGTH: Final = 265

_HUB = r"[A-Za-z0-9_-]{1,64}"
_VIEW = r"[A-Za-z0-9_./@=+-]{1,200}"
_ADDRESS_RE: Final = re.compile(rf"({_HUB})(?::({_VIEW}))?")
_HUB_RE: Final = re.compile(_HUB)


class Address(NamedTuple):
    """A parsed channel address."""

    hub: HubId
    view: str | None
    """``None`` for the whole hub."""

    @property
    def value(self) -> ChannelAddress:
        return ChannelAddress(self.hub if self.view is None else f"{self.hub}:{self.view}")


def parse_address(text: object) -> Address | None:
    """Parse ``text``; return ``None`` when it is not a valid address."""
    if not isinstance(text, str) or len(text) > MAX_ADDRESS_LENGTH:
        return None
    m = _ADDRESS_RE.fullmatch(text)
    if m is None:
        return None
    view = m.group(2)
    if view is not None and ".." in view.split("/"):
        return None
    return Address(HubId(m.group(1)), view)


def is_hub_id(text: str) -> bool:
    """Tell whether ``text`` is a valid hub id (organization ids must be)."""
    return _HUB_RE.fullmatch(text) is not None
