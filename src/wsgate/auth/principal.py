"""Who is on the other end of a connection: the claims of its session.

Three kinds, told apart by type, never by a claim a credential could carry:

- :class:`Principal` -- from a session cookie (``auth == "cookie"``), or
  :data:`ANONYMOUS` (``auth == "anonymous"``);
- :class:`TokenPrincipal` -- from a connection token, a JWT (``auth == "jwt"``);
- :class:`AwaitingToken` -- not yet anyone: the handshake carried a bearer
  token still to verify, or nothing while ``[auth.jwt]`` is on, so the
  connection waits in ``ADMITTING`` for ``@@wsgate/AUTH``. It is replaced
  before ``WELCOME`` and never reaches a service.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

__all__ = ["ANONYMOUS", "AuthMethod", "AwaitingToken", "Principal", "TokenPrincipal"]

AuthMethod = Literal["cookie", "jwt", "anonymous"]
"""What authenticated a connection (the ``auth`` field of the invocation context)."""


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

    @property
    def auth(self) -> AuthMethod:
        """``"cookie"``, or ``"anonymous"`` without a user (``"jwt"``: :class:`TokenPrincipal`)."""
        return "anonymous" if self.sub == "" else "cookie"

    def all_orgs(self) -> tuple[str, ...]:
        """``orgs`` with the active ``org`` included, without duplicates."""
        if self.org and self.org not in self.orgs:
            return (self.org, *self.orgs)
        return self.orgs


class TokenPrincipal(Principal, frozen=True):
    """The same claims, from a verified connection token (JWT).

    ``channel`` is set only for a channel token (the channel it grants); such
    a principal never becomes a connection's.
    """

    channel: str = ""

    @property
    def auth(self) -> AuthMethod:
        return "anonymous" if self.sub == "" else "jwt"


class AwaitingToken(Principal, frozen=True):
    """A connection not yet authenticated: ``token`` is the bearer token to verify,
    ``""`` while ``@@wsgate/AUTH`` is awaited. Always ``sub == ""``."""

    token: str = ""

    def __repr__(self) -> str:
        return f"AwaitingToken(token={'<set>' if self.token else '<none>'})"  # never the token


ANONYMOUS: Final = Principal(sub="")
"""The principal of a connection without a session (``public`` hub only)."""
