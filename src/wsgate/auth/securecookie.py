"""Read (and write) cookies in the format of Go's gorilla/securecookie.

This lets a Go sign-in service issue the session cookie with::

    s := securecookie.New(hashKey, blockKey)   // the same keys as auth.securecookie_*
    s.SetSerializer(securecookie.JSONEncoder{})
    value, err := s.Encode("wsgate_session", claims)

Format, from ``securecookie.go`` (``Encode``/``Decode``), ``b64`` being
base64url *with* padding (Go's ``base64.URLEncoding``)::

    payload = JSON(claims) + "\\n"                      # json.Encoder.Encode
    payload = iv(16 random bytes) + AES-CTR(block_key, iv, payload)   # when a block key is set
    mac     = HMAC-SHA256(hash_key, name + "|" + date + "|" + b64(payload))
    value   = b64(date + "|" + b64(payload) + "|" + mac)

``date`` is decimal Unix seconds at encoding time. Decoding checks, in
gorilla's order: length (``max_length``), outer base64, MAC (constant-time),
timestamp (older than ``max_age_s`` -- gorilla's ``MaxAge``, default 30 days
-- is expired; newer than ``min_age_s`` is refused), inner base64, decryption,
then the JSON claims. The claims' own ``iat`` and ``exp`` are then checked by
the same rule as AES-GCM cookies (:func:`~wsgate.auth.cookie.check_times`,
``exp`` optional here).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from typing import Final

import msgspec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from wsgate.auth.claims import CLOCK_SKEW_S
from wsgate.auth.cookie import check_times
from wsgate.auth.principal import Principal
from wsgate.config import AuthConfig
from wsgate.exceptions import ConfigError, CookieExpired, CookieInvalid

__all__ = ["DEFAULT_MAX_AGE_S", "DEFAULT_MAX_LENGTH", "SecureCookieCodec"]

DEFAULT_MAX_AGE_S: Final = 86400 * 30
"""gorilla's default ``MaxAge``."""

DEFAULT_MAX_LENGTH: Final = 4096
"""gorilla's default ``MaxLength``."""

_BLOCK: Final = 16  # AES block size: the IV length gorilla prepends
_MAC_SIZE: Final = 32
_B64URL_PADDED: Final = re.compile(
    rb"(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2}==|[A-Za-z0-9_-]{3}=)?"
)
_INT64: Final = re.compile(rb"[+-]?[0-9]{1,19}")  # what strconv.ParseInt(s, 10, 64) takes


def _b64encode(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data)


def _b64decode(data: bytes) -> bytes:
    """Go's ``base64.URLEncoding.Decode``: URL alphabet, padding required."""
    if _B64URL_PADDED.fullmatch(data) is None:
        raise CookieInvalid("not base64url")
    try:
        return base64.urlsafe_b64decode(data)
    except (binascii.Error, ValueError):
        raise CookieInvalid("not base64url") from None


class _GoClaims(msgspec.Struct):
    """The claims as a Go ``encoding/json`` encoder may write them (nil slices as null)."""

    sub: str
    sid: str = ""
    name: str = ""
    org: str = ""
    orgs: tuple[str, ...] | None = None
    teams: tuple[str, ...] | None = None
    roles: tuple[str, ...] | None = None
    iat: int = 0
    exp: int = 0


_CLAIMS: Final = msgspec.json.Decoder(_GoClaims)
_ENCODER: Final = msgspec.json.Encoder()


def _key(text: str, key: str) -> bytes:
    try:
        return base64.b64decode(
            text.strip().replace("-", "+").replace("_", "/") + "=" * (-len(text.strip()) % 4),
            validate=True,
        )
    except (binascii.Error, ValueError):
        raise ConfigError(key, "not valid base64") from None


class SecureCookieCodec:
    """A gorilla/securecookie codec (HMAC-SHA256, AES-CTR, JSON serializer).

    Thread-safe; holds no per-call state.
    """

    def __init__(
        self,
        hash_key: bytes,
        block_key: bytes | None = None,
        *,
        max_age_s: int = DEFAULT_MAX_AGE_S,
        min_age_s: int = 0,
        max_length: int = DEFAULT_MAX_LENGTH,
        skew_s: int = CLOCK_SKEW_S,
    ) -> None:
        """``hash_key`` must be non-empty; ``block_key`` (16, 24 or 32 bytes)
        selects AES-128/192/256, ``None`` disables encryption (as in gorilla).
        ``max_age_s``/``min_age_s``/``max_length`` of 0 disable that check.

        Raises ``ValueError`` for an empty hash key or a bad block-key size.
        """
        if not hash_key:
            raise ValueError("securecookie hash key is empty")
        if block_key is not None and len(block_key) not in (16, 24, 32):
            raise ValueError(
                f"securecookie block key must be 16, 24 or 32 bytes, got {len(block_key)}"
            )
        self._hash_key = bytes(hash_key)
        self._algorithm = None if block_key is None else algorithms.AES(bytes(block_key))
        self.max_age_s = max_age_s
        self.min_age_s = min_age_s
        self.max_length = max_length
        self.skew_s = skew_s

    @classmethod
    def from_config(cls, auth: AuthConfig) -> SecureCookieCodec | None:
        """The codec for ``auth.securecookie_hash_key``/``_block_key``; ``None`` if unset.

        Raises :class:`~wsgate.exceptions.ConfigError` naming the bad key.
        """
        if not auth.securecookie_hash_key:
            if auth.securecookie_block_key:
                raise ConfigError(
                    "auth.securecookie_hash_key", "required with auth.securecookie_block_key"
                )
            return None
        hash_key = _key(auth.securecookie_hash_key, "auth.securecookie_hash_key")
        block_key = None
        if auth.securecookie_block_key:
            block_key = _key(auth.securecookie_block_key, "auth.securecookie_block_key")
        try:
            return cls(hash_key, block_key, skew_s=auth.clock_skew_s)
        except ValueError as exc:
            which = "hash" if not hash_key else "block"
            raise ConfigError(f"auth.securecookie_{which}_key", str(exc)) from None

    # -- the byte layer: exactly gorilla's Encode/Decode ----------------------

    def _mac(self, message: bytes) -> bytes:
        return hmac.new(self._hash_key, message, hashlib.sha256).digest()

    def _ctr(self, iv: bytes, data: bytes) -> bytes:
        assert self._algorithm is not None
        ctx = Cipher(self._algorithm, modes.CTR(iv)).encryptor()  # CTR: same both ways
        return ctx.update(data) + ctx.finalize()

    def encode_bytes(self, name: str, payload: bytes, *, now: float | None = None) -> str:
        """gorilla's ``Encode`` after serialization: the cookie value for ``payload``.

        Raises ``ValueError`` when the value would pass ``max_length``.
        """
        if self._algorithm is not None:
            iv = secrets.token_bytes(_BLOCK)
            payload = iv + self._ctr(iv, payload)
        date = str(int(time.time() if now is None else now)).encode("ascii")
        signed = name.encode("utf-8") + b"|" + date + b"|" + _b64encode(payload)
        mac = self._mac(signed)
        value = _b64encode(signed[len(name.encode("utf-8")) + 1 :] + b"|" + mac).decode("ascii")
        if self.max_length and len(value) > self.max_length:
            raise ValueError("the value is too long")
        return value

    def decode_bytes(self, name: str, value: str, *, now: float | None = None) -> bytes:
        """gorilla's ``Decode`` before deserialization: the payload in ``value``.

        Raises :class:`~wsgate.exceptions.CookieExpired` for a timestamp older
        than ``max_age_s``, :class:`~wsgate.exceptions.CookieInvalid` for
        anything else wrong.
        """
        if self.max_length and len(value) > self.max_length:
            raise CookieInvalid("the value is too long")
        try:
            raw = value.encode("ascii")
        except UnicodeEncodeError:
            raise CookieInvalid("not base64url") from None
        data = _b64decode(raw)
        parts = data.split(b"|", 2)
        if len(parts) != 3:
            raise CookieInvalid("the value is not valid")
        date, encoded, mac = parts
        signed = name.encode("utf-8") + b"|" + date + b"|" + encoded
        if len(mac) != _MAC_SIZE or not hmac.compare_digest(mac, self._mac(signed)):
            raise CookieInvalid("the value is not valid")
        if _INT64.fullmatch(date) is None or not -(2**63) <= int(date) < 2**63:
            raise CookieInvalid("invalid timestamp")
        t1 = int(date)
        t2 = int(time.time() if now is None else now)
        if self.min_age_s and t1 > t2 - self.min_age_s:
            raise CookieInvalid("timestamp is too new")
        if self.max_age_s and t1 < t2 - self.max_age_s:
            raise CookieExpired("expired timestamp")
        payload = _b64decode(encoded)
        if self._algorithm is not None:
            if len(payload) <= _BLOCK:
                raise CookieInvalid("the value could not be decrypted")
            payload = self._ctr(payload[:_BLOCK], payload[_BLOCK:])
        return payload

    # -- the claims layer -----------------------------------------------------

    def encode(self, name: str, principal: Principal, *, now: float | None = None) -> str:
        """Encode ``principal`` as gorilla with ``JSONEncoder`` would (JSON plus newline)."""
        return self.encode_bytes(name, _ENCODER.encode(principal) + b"\n", now=now)

    def open(self, name: str, value: str, *, now: float | None = None) -> Principal:
        """Decode the principal in ``value``, a cookie named ``name``.

        Raises :class:`~wsgate.exceptions.CookieExpired` when gorilla's
        timestamp is older than ``max_age_s`` or the claims' ``exp`` (if any)
        lies more than ``skew_s`` in the past; :class:`~wsgate.exceptions.CookieInvalid`
        for a claims ``iat`` more than ``skew_s`` in the future, and anything
        else. The claim times go through :func:`~wsgate.auth.cookie.check_times`,
        the rule the AES-GCM codec and the handshake cache apply too. Never
        raises anything else.
        """
        payload = self.decode_bytes(name, value, now=now)
        try:
            claims = _CLAIMS.decode(payload)
        except msgspec.DecodeError:
            raise CookieInvalid("bad claims") from None
        principal = Principal(
            sub=claims.sub,
            sid=claims.sid,
            name=claims.name,
            org=claims.org,
            orgs=claims.orgs or (),
            teams=claims.teams or (),
            roles=claims.roles or (),
            iat=claims.iat,
            exp=claims.exp,
        )
        check_times(principal, now=now, skew_s=self.skew_s, require_exp=False)
        return principal
