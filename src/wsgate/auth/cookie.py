"""Session cookies sealed with AES-256-GCM under a :class:`~wsgate.auth.keyring.KeyRing`.

Format (version 1), the cookie value being unpadded base64url (RFC 4648 §5)
of::

    0x01 | key id (4 bytes) | nonce (12 random bytes) | ciphertext | tag (16 bytes)

- the key id is the first 4 bytes of SHA-256 of the sealing key, so opening
  picks the key without trial decryption;
- the plaintext is the :class:`~wsgate.auth.principal.Principal` as msgspec
  JSON (``{"sub": ..., "exp": ...}``, default fields left out);
- the associated data is ``b"wsgate-cookie|" + cookie name + b"|" + the
  5 header bytes``, so a value cannot be replayed under another cookie name
  and the header cannot be altered.

The base64url alphabet (``A-Z a-z 0-9 - _``) is a subset of RFC 6265's
cookie-octets, so values need no quoting. Decoding is canonical: any change to
any character of a value makes :meth:`CookieCodec.open` fail.
"""

from __future__ import annotations

import base64
import secrets
import time
from typing import Final

import msgspec
from cryptography.exceptions import InvalidTag

from wsgate.auth.claims import CLOCK_SKEW_S, EXPIRED, time_fault
from wsgate.auth.keyring import KEY_ID_SIZE, KeyRing
from wsgate.auth.principal import Principal
from wsgate.config import AuthConfig
from wsgate.exceptions import CookieExpired, CookieInvalid

__all__ = [
    "CLOCK_SKEW_S",
    "MAX_COOKIE_LENGTH",
    "VERSION",
    "CookieCodec",
    "b64url_decode",
    "b64url_encode",
    "check_times",
]

VERSION: Final = 1
"""The format version byte this module writes and reads."""

NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16
HEADER_SIZE: Final = 1 + KEY_ID_SIZE

MAX_COOKIE_LENGTH: Final = 4096
"""Longest value :meth:`CookieCodec.open` looks at (browsers cap cookies near 4 KiB)."""

_ENCODER: Final = msgspec.json.Encoder()
_DECODER: Final = msgspec.json.Decoder(Principal)


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url of ``data``."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strictly decode unpadded base64url; raise ``ValueError`` on anything else.

    Only the canonical encoding is accepted (no padding, no stray characters,
    zero trailing bits), so two different strings never decode to the same
    bytes.
    """
    if len(text) % 4 == 1:
        raise ValueError("impossible base64 length")
    raw = text.encode("ascii")  # UnicodeEncodeError is a ValueError
    data = base64.b64decode(raw + b"=" * (-len(raw) % 4), altchars=b"-_", validate=True)
    if base64.urlsafe_b64encode(data).rstrip(b"=") != raw:
        raise ValueError("non-canonical base64")
    return data


def _aad(name: bytes, header: bytes) -> bytes:
    return b"wsgate-cookie|" + name + b"|" + header


class CookieCodec:
    """Seals and opens session cookies with a key ring.

    Thread-safe and cheap: no per-call allocation beyond the result; the ring
    may be reloaded concurrently.
    """

    def __init__(
        self,
        ring: KeyRing,
        *,
        cookie_name: str = "wsgate_session",
        ttl_s: int = 86400,
        skew_s: int = CLOCK_SKEW_S,
    ) -> None:
        self.ring = ring
        """The keys; :meth:`seal` uses its first, :meth:`open` any."""
        self.cookie_name = cookie_name
        """Bound into every value as associated data."""
        self.ttl_s = ttl_s
        """Lifetime given by :meth:`seal` to a principal without ``exp``."""
        self.skew_s = skew_s
        """Clock skew allowance of :meth:`open`."""
        self._name = cookie_name.encode("utf-8")

    @classmethod
    def from_config(cls, auth: AuthConfig, ring: KeyRing) -> CookieCodec:
        """A codec for ``auth.cookie_name`` that seals for ``auth.cookie_ttl_s``."""
        return cls(
            ring, cookie_name=auth.cookie_name, ttl_s=auth.cookie_ttl_s, skew_s=auth.clock_skew_s
        )

    def seal(self, principal: Principal, *, now: float | None = None) -> str:
        """Return the cookie value carrying ``principal``.

        ``iat`` is set to ``now`` when 0, and ``exp`` to ``iat + ttl_s`` when 0.
        Raises :class:`~wsgate.exceptions.KeyRingError` when the ring is empty.
        """
        key = self.ring.sealing
        if principal.iat == 0 or principal.exp == 0:
            iat = principal.iat or int(time.time() if now is None else now)
            exp = principal.exp or iat + self.ttl_s
            principal = msgspec.structs.replace(principal, iat=iat, exp=exp)
        header = bytes((VERSION,)) + key.kid
        nonce = secrets.token_bytes(NONCE_SIZE)
        sealed = key.aead.encrypt(nonce, _ENCODER.encode(principal), _aad(self._name, header))
        return b64url_encode(header + nonce + sealed)

    def open(self, value: str, *, now: float | None = None) -> Principal:
        """Return the principal sealed in ``value``.

        Raises :class:`~wsgate.exceptions.CookieInvalid` when ``value`` is
        malformed, tampered with, sealed under another cookie name or by a key
        not in the ring, or carries no ``exp``; raises
        :class:`~wsgate.exceptions.CookieExpired` when it is authentic but
        ``exp`` lies more than ``skew_s`` in the past. Never raises anything
        else, and messages never echo the value.
        """
        if not value or len(value) > MAX_COOKIE_LENGTH:
            raise CookieInvalid("bad length")
        try:
            data = b64url_decode(value)
        except ValueError:
            raise CookieInvalid("not base64url") from None
        if len(data) < HEADER_SIZE + NONCE_SIZE + TAG_SIZE or data[0] != VERSION:
            raise CookieInvalid("unknown format")
        header = data[:HEADER_SIZE]
        keys = self.ring.opening(data[1:HEADER_SIZE])
        if not keys:
            raise CookieInvalid("unknown key")
        nonce = data[HEADER_SIZE : HEADER_SIZE + NONCE_SIZE]
        sealed = data[HEADER_SIZE + NONCE_SIZE :]
        aad = _aad(self._name, header)
        for key in keys:
            try:
                plain = key.aead.decrypt(nonce, sealed, aad)
                break
            except InvalidTag:
                continue
        else:
            raise CookieInvalid("not authentic")
        try:
            principal = _DECODER.decode(plain)
        except msgspec.DecodeError:
            # Authentic but unreadable: sealed by an incompatible issuer.
            raise CookieInvalid("bad claims") from None
        check_times(principal, now=now, skew_s=self.skew_s)
        return principal


def check_times(
    principal: Principal, *, now: float | None, skew_s: int, require_exp: bool = True
) -> None:
    """Raise unless ``principal`` is valid at ``now`` (± ``skew_s``), by the one time rule.

    :func:`~wsgate.auth.claims.time_fault` decides; this maps its verdict to
    the cookie exceptions. Both codecs apply it when they open a value, and
    the :class:`~wsgate.auth.handshake.Authenticator` applies it again to a
    cached principal, so a cookie gets the same verdict on every connection.

    :class:`~wsgate.exceptions.CookieExpired` for an ``exp`` more than
    ``skew_s`` in the past; :class:`~wsgate.exceptions.CookieInvalid` for
    any other fault (a missing ``exp`` when ``require_exp`` -- a gorilla
    cookie may rely on its signed timestamp instead -- or an ``iat`` more
    than ``skew_s`` in the future).
    """
    fault = time_fault(
        iat=principal.iat, exp=principal.exp, now=now, skew_s=skew_s, require_exp=require_exp
    )
    if fault is None:
        return
    if fault == EXPIRED:
        raise CookieExpired(fault)
    raise CookieInvalid(fault)
