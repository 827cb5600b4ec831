"""Exceptions raised by wsgate.

Every exception wsgate defines derives from :class:`WsgateError`::

    WsgateError
     ├── ConfigError          bad or unknown configuration key (names the key)
     ├── AuthError            a session cookie or connection token that cannot be trusted
     │    ├── CookieInvalid   tampered, malformed or sealed by an unknown key
     │    ├── CookieExpired   authentic but past its ``exp``
     │    ├── TokenInvalid    a JWT badly signed, malformed, wrong aud/iss, not yet valid
     │    └── TokenExpired    a JWT authentic but past its ``exp``
     ├── KeyRingError         no usable key, or a key of the wrong size
     ├── HttpError            a failed call of the service HTTP client (routing.http1)
     │    ├── ConnectFailed   no connection (refused, DNS, TLS, bad URL): nothing sent
     │    ├── ResponseTimeout no complete answer before the deadline
     │    ├── Dropped         closed mid-answer: the request may have been processed
     │    ├── Unanswered      closed before the server processed it: may be sent again
     │    └── ProtocolError   the answer is not valid HTTP/1.1
     ├── BackendError         a cluster backend call failed (the driver's error is __cause__)
     │    └── BackendUnavailable  the server cannot be reached or answered late
     ├── PublishError         the internal API refused an SDK call or was unreachable
     └── Refused              raised by an SDK handler to refuse an action (HTTP 403)

Errors that concern a client's action are *not* exceptions: the protocol layer
returns them as values (:class:`wsgate.protocol.codes.ErrorCode`) and the core
turns them into ``@@wsgate/ERROR`` actions, so a bad action never unwinds the
I/O layer.

A backend call that fails raises :class:`BackendError` at the backend
boundary, never its driver's error (``OSError``, ``TimeoutError``,
``redis.exceptions.RedisError``, ``nats.errors.Error``), which it chains as
``__cause__``: :class:`BackendUnavailable` when the server cannot be reached
or answers late (the call may succeed later), plain :class:`BackendError`
when it answered with an error. :mod:`wsgate.backends.base` says which call
raises what. The cluster code that must fail open catches
:class:`BackendError`, logs the traceback and counts the failure.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "BackendError",
    "BackendUnavailable",
    "ConfigError",
    "ConnectFailed",
    "CookieExpired",
    "CookieInvalid",
    "Dropped",
    "HttpError",
    "KeyRingError",
    "ProtocolError",
    "PublishError",
    "Refused",
    "ResponseTimeout",
    "TokenExpired",
    "TokenInvalid",
    "Unanswered",
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
    """A session cookie or connection token cannot be used."""


class CookieInvalid(AuthError):
    """The cookie is malformed, tampered with, or sealed by an unknown key."""


class CookieExpired(AuthError):
    """The cookie is authentic but expired."""


class TokenInvalid(AuthError):
    """The connection token is malformed, badly signed, for another audience or issuer,
    not yet valid, or names a key that is not known."""


class TokenExpired(AuthError):
    """The connection token is authentic but its ``exp`` has passed."""


class KeyRingError(WsgateError):
    """The key ring is empty or holds a key that is not 32 bytes."""


class HttpError(WsgateError):
    """A failed exchange of the service HTTP client (see the subclasses)."""


class ConnectFailed(HttpError):
    """No connection: refused, DNS, TLS handshake, bad URL. Nothing was sent."""


class ResponseTimeout(HttpError):
    """No complete answer before the deadline."""


class Dropped(HttpError):
    """The connection closed before the answer was complete."""


class ProtocolError(HttpError):
    """The answer is not valid HTTP/1.1."""


class Unanswered(HttpError):
    """Closed before the server processed the request: it may be sent again."""


class BackendError(WsgateError):
    """A cluster backend call failed; the driver's error is ``__cause__``.

    The message names the call (``RedisPresence.members``) and the driver's error.
    """


class BackendUnavailable(BackendError):
    """The backend's server could not be reached, or did not answer in time.

    Raised by a call made during an outage (after the driver's own bounded
    retry or timeout) and by opening a backend whose server does not answer.
    """


class PublishError(WsgateError):
    """The internal API refused a call or could not be reached."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"internal API: {status or 'unreachable'}: {message}")
        self.status = status
        """HTTP status, or 0 when no answer came."""


class Refused(WsgateError):
    """Raise in an SDK handler to refuse the action (HTTP 403: the client gets ``FORBIDDEN``).

    In a ``@@wsgate/CONNECT`` handler it refuses the connection (close 4403).
    """
