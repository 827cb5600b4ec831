"""Who is on the other end of a connection: the claims of its session."""

from __future__ import annotations

from typing import Final

import msgspec

__all__ = ["ANONYMOUS", "Principal"]


class Principal(msgspec.Struct, frozen=True, omit_defaults=True):
    """The claims of a session cookie (design §3), as sealed in it.

    ``sub`` is the user id, ``sid`` the session id, ``org`` the active
    organization, ``orgs``/``teams``/``roles`` what the user belongs to;
    ``iat``/``exp`` are Unix seconds. An anonymous principal has ``sub == ""``.
    """

    sub: str
    sid: str = ""
    name: str = ""
    org: str = ""
    orgs: tuple[str, ...] = ()
    teams: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    iat: int = 0
    exp: int = 0

    @property
    def anonymous(self) -> bool:
        return self.sub == ""

    def all_orgs(self) -> tuple[str, ...]:
        """``orgs`` with the active ``org`` included, without duplicates."""
        if self.org and self.org not in self.orgs:
            return (self.org, *self.orgs)
        return self.orgs


ANONYMOUS: Final = Principal(sub="")
"""The principal of a connection without a session (``public`` hub only)."""
