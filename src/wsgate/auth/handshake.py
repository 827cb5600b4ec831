"""Who is connecting: the session cookie or connection token of a WebSocket handshake.

The transport calls :meth:`Authenticator.authenticate` with the request
headers of every upgrade (and plain GET). It answers a
:class:`~wsgate.auth.principal.Principal` for a valid cookie;
with ``[auth.jwt]``, an :class:`~wsgate.auth.principal.AwaitingToken` for a
request with an ``Authorization: Bearer`` token (verified while the
connection is ``ADMITTING``, by :mod:`wsgate.auth.jwt_gate`) or with no
credential at all (it then waits for ``@@wsgate/AUTH``);
:data:`~wsgate.auth.principal.ANONYMOUS` when there is no usable credential
and anonymous access is on; or ``None`` when the request must be refused
(4401 for an upgrade, 302 to ``auth.sign_in_url`` for a GET). It never
raises on hostile input and never says *why* a cookie was refused -- the
reason is counted in :attr:`Authenticator.refusals` for metrics, not sent to
the peer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Final

from wsgate.auth.cookie import CookieCodec, check_times
from wsgate.auth.jwt_token import TokenVerifier, bearer_token
from wsgate.auth.keyring import KeyRing
from wsgate.auth.principal import ANONYMOUS, AwaitingToken, Principal
from wsgate.auth.revocations import Revocations
from wsgate.auth.securecookie import SecureCookieCodec
from wsgate.config import AuthConfig
from wsgate.exceptions import CookieExpired, CookieInvalid

__all__ = ["AWAITING_AUTH", "MAX_COOKIE_HEADER", "Authenticator", "cookie_values"]

MAX_COOKIE_HEADER: Final = 16384
"""Cookie header bytes looked at; the rest of a longer header is ignored."""

_MAX_CANDIDATES: Final = 4
_MAX_OPENED: Final = 8192
"""Opened cookie values remembered (oldest forgotten first)."""
"""Values of our cookie tried (a browser may send one per matching path)."""


AWAITING_AUTH: Final = AwaitingToken(sub="")
"""An upgrade with neither cookie nor bearer token while ``[auth.jwt]`` is on."""


def _cookie_headers(headers: Mapping[str, str]) -> list[str]:
    """Every ``Cookie`` header, looked up case-insensitively.

    HTTP/2 may split cookies over several headers (RFC 9113 §8.2.3); a
    multidict (aiohttp, picows) returns them all through ``getall``. Looked up
    with ``getattr``, not ``isinstance`` against a runtime-checkable Protocol,
    which cost about 10 % of a signed-in handshake (bench/storm.py profile).
    """
    getall = getattr(headers, "getall", None)
    if getall is not None:
        found = getall("Cookie", [])
        if found:
            return [str(v) for v in found]
    value = headers.get("Cookie") or headers.get("cookie")
    if value is not None:
        return [value]
    return [v for k, v in headers.items() if isinstance(k, str) and k.lower() == "cookie"]


def _authorization(headers: Mapping[str, str]) -> str | None:
    """The ``Authorization`` header, looked up case-insensitively (the first one)."""
    value = headers.get("Authorization") or headers.get("authorization")
    if value is not None:
        return value
    for k, v in headers.items():
        if isinstance(k, str) and k.lower() == "authorization":
            return v
    return None


def cookie_values(header: str, name: str) -> Iterator[str]:
    """Yield the values of cookie ``name`` in a ``Cookie`` header, in order.

    Follows RFC 6265 §5.4 leniently: pairs split on ``;``, whitespace trimmed,
    a value in double quotes unquoted; pairs without ``=`` skipped.
    """
    for pair in header[:MAX_COOKIE_HEADER].split(";"):
        key, sep, value = pair.partition("=")
        if not sep or key.strip() != name:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
            value = value[1:-1]
        yield value


class Authenticator:
    """Turns handshake headers into a principal (see the module docstring).

    Build it once per node; it is cheap to call (a header split, one base64
    decode and one AES-GCM open) and safe to call from any thread. Reloading
    the key ring takes effect on the next call.
    """

    def __init__(self, auth: AuthConfig, ring: KeyRing) -> None:
        """Raises :class:`~wsgate.exceptions.ConfigError` for bad securecookie keys."""
        self.cookie_name: str = auth.cookie_name
        self.allow_anonymous: bool = auth.allow_anonymous
        self.codec: CookieCodec = CookieCodec.from_config(auth, ring)
        """The AES-GCM codec, tried first."""
        self.securecookie: SecureCookieCodec | None = SecureCookieCodec.from_config(auth)
        """The gorilla/securecookie codec, tried second when configured."""
        self.tokens: TokenVerifier | None = None
        """Connection tokens (``[auth.jwt]``); ``None``: cookies only."""
        if auth.jwt is not None:
            self.tokens = TokenVerifier.from_config(auth.jwt, skew_s=auth.clock_skew_s)
        self.refusals: Counter[str] = Counter()
        """Why requests got no principal: ``missing``, ``invalid``, ``expired``,
        ``revoked`` (for metrics; counts may be approximate under threads)."""
        self.revocations: Revocations | None = None
        """Set by the node once its store is open: a covered cookie is refused."""
        self._ring = ring
        self._opened: dict[str, Principal] = {}
        """Cookie value → its principal, for values that opened under the
        current keys: tabs of one session share one ``Principal`` (memory per
        connection) and a reconnect storm skips the AES-GCM work. Bounded;
        cleared when the key ring changes; expiry is checked on every hit."""
        self._opened_for: object = None

    def __call__(self, headers: Mapping[str, str]) -> Principal | None:
        return self.authenticate(headers)

    def authenticate(self, headers: Mapping[str, str]) -> Principal | None:
        """The principal of a request with ``headers`` (a mapping or multidict).

        A valid session cookie gives its principal. Otherwise, with
        ``[auth.jwt]``: a bearer token gives an :class:`AwaitingToken` holding
        it, and a request with no cookie at all :data:`AWAITING_AUTH`. Otherwise
        :data:`ANONYMOUS` when ``auth.allow_anonymous``, else ``None``.
        Never raises, never verifies a token (that may need a JWKS fetch).
        """
        try:
            name = self.cookie_name
            values = [v for h in _cookie_headers(headers) for v in cookie_values(h, name)]
            authorization = _authorization(headers) if self.tokens is not None else None
        except Exception:  # a hostile headers object: treat as no credential
            values, authorization = [], None
        if values or self.tokens is None:  # no cookie is a refusal only without tokens
            principal = self.open_any(values[:_MAX_CANDIDATES])
            if principal is not None:
                return principal
        if self.tokens is not None:
            token = bearer_token(authorization)
            if token is not None:
                return AwaitingToken(sub="", token=token)
            if not values:
                return AWAITING_AUTH
        return ANONYMOUS if self.allow_anonymous else None

    def open_any(self, values: Iterable[str]) -> Principal | None:
        """The principal of the first of ``values`` that opens, else ``None``.

        Records the reason for the last refusal in :attr:`refusals`.
        """
        reason = "missing"
        for value in values:
            try:
                principal = self._open(value)
            except CookieExpired:
                reason = "expired"
                continue
            except CookieInvalid:
                if reason != "expired":
                    reason = "invalid"
                continue
            if principal.anonymous:  # a cookie must name a user
                reason = "invalid"
                continue
            if self.revocations is not None and self.revocations.covers(principal):
                reason = "revoked"
                continue
            return principal
        self.refusals[reason] += 1
        return None

    def _open(self, value: str) -> Principal:
        snapshot = self._ring.version
        if snapshot is not self._opened_for:
            self._opened.clear()
            self._opened_for = snapshot
        cached = self._opened.get(value)
        if cached is not None:
            # The rule both codecs applied when they opened it (only
            # principals with an ``exp`` are cached, so requiring one holds).
            check_times(cached, now=None, skew_s=self.codec.skew_s)
            return cached
        principal = self._open_uncached(value)
        if principal.exp > 0:  # only what check_times can re-check on a hit
            if len(self._opened) >= _MAX_OPENED:
                del self._opened[next(iter(self._opened))]
            self._opened[value] = principal
        return principal

    def _open_uncached(self, value: str) -> Principal:
        secure = self.securecookie
        if secure is None:
            return self.codec.open(value)
        try:
            return self.codec.open(value)
        except CookieInvalid:
            # An expired AES cookie is final; only a value that is not ours at
            # all may be a gorilla cookie.
            return secure.open(self.cookie_name, value)
