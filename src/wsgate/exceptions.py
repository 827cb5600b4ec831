"""Exceptions raised by wsgate.

Every exception derives from :class:`WsgateError`::

    WsgateError
     ├── ConfigError          bad or unknown configuration key (names the key)
     ├── AuthError            a session cookie that cannot be trusted
     │    ├── CookieInvalid   tampered, malformed or sealed by an unknown key
     │    └── CookieExpired   authentic but past its ``exp``
     └── KeyRingError         no usable key, or a key of the wrong size

Errors that concern a client's action are *not* exceptions: the protocol layer
returns them as values (:class:`wsgate.protocol.codes.ErrorCode`) and the core
turns them into ``@@wsgate/ERROR`` actions, so a bad action never unwinds the
I/O layer.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "ConfigError",
    "CookieExpired",
    "CookieInvalid",
    "KeyRingError",
    "WsgateError",
]


class WsgateError(Exception):
    """Root of every wsgate exception."""


class ConfigError(WsgateError):
    """A configuration value is unknown or invalid.

    The message always names the offending key (``server.listen``) so that a
    failed start-up says what to fix.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config {key}: {message}")
        self.key = key
        """Dotted path of the offending key."""


class AuthError(WsgateError):
    """A session cookie cannot be used."""


class CookieInvalid(AuthError):
    """The cookie is malformed, tampered with, or sealed by an unknown key."""


class CookieExpired(AuthError):
    """The cookie is authentic but expired."""


class KeyRingError(WsgateError):
    """The key ring is empty or holds a key that is not 32 bytes."""
