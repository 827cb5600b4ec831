"""The session-cookie key ring: the first key seals, every key opens.

Keys are 32 random bytes (AES-256), written as base64 (standard or URL-safe
alphabet, padding optional). They come from, in this order:

1. ``auth.keys`` in the config file, or the ``WSGATE_AUTH_KEYS`` environment
   variable (a JSON list or a comma-separated string), which replaces the
   file's ``auth.keys`` through :mod:`wsgate.config`'s override mechanism;
2. ``auth.keys_file``: one base64 key per line, blank lines and ``#`` comments
   ignored -- the form a secrets manager such as a Vault agent template writes.

The ring is an immutable snapshot swapped in one assignment, so a
:meth:`KeyRing.reload` racing with :meth:`KeyRing.opening` on another thread
sees the old keys or the new ones, never a mix. A reload that fails keeps the
old keys.

Rotation without logging anyone out: put the new key first and keep the old
one after it until every cookie sealed with it has expired (``cookie_ttl_s``),
then drop it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from wsgate.config import AuthConfig
from wsgate.exceptions import KeyRingError

__all__ = ["KEY_ID_SIZE", "KEY_SIZE", "KeyRing", "SessionKey", "key_id", "new_key", "parse_key"]

KEY_SIZE: Final = 32
"""Bytes in a session key (AES-256)."""

KEY_ID_SIZE: Final = 4
"""Bytes of a key id: the first bytes of the key's SHA-256."""

log = logging.getLogger("wsgate.auth")


def new_key() -> str:
    """Return a fresh random key as standard base64 (44 characters)."""
    return base64.b64encode(secrets.token_bytes(KEY_SIZE)).decode("ascii")


def key_id(key: bytes) -> bytes:
    """The public id of ``key``: the first :data:`KEY_ID_SIZE` bytes of its SHA-256.

    It lets :meth:`KeyRing.opening` pick the key without trial decryption and
    reveals nothing useful about the key.
    """
    return hashlib.sha256(key).digest()[:KEY_ID_SIZE]


def parse_key(text: str, where: str) -> bytes:
    """Decode one base64 key; raise :class:`KeyRingError` naming ``where``.

    ``where`` names the key's origin (``auth.keys[1]``, ``keys.txt line 3``);
    the message never contains the key itself.
    """
    raw = text.strip()
    # Accept both alphabets and missing padding: keys are pasted from many tools.
    normalized = raw.replace("-", "+").replace("_", "/")
    normalized += "=" * (-len(normalized) % 4)
    try:
        key = base64.b64decode(normalized, validate=True)
    except (binascii.Error, ValueError):
        raise KeyRingError(f"{where}: not valid base64") from None
    if len(key) != KEY_SIZE:
        raise KeyRingError(
            f"{where}: a key must be {KEY_SIZE} bytes (base64 of 32 random bytes, "
            f"see `wsgate keys new`), got {len(key)} bytes"
        )
    return key


@dataclass(frozen=True, slots=True)
class SessionKey:
    """One key of the ring, with its id and a ready AES-GCM instance."""

    kid: bytes
    """:func:`key_id` of the key."""
    aead: AESGCM
    """AES-256-GCM bound to the key (built once, reused by every seal/open)."""
    origin: str
    """Where the key came from (``auth.keys[0]``, ``/run/keys line 2``), for messages."""


@dataclass(frozen=True, slots=True)
class _Snapshot:
    keys: tuple[SessionKey, ...]
    by_id: dict[bytes, tuple[SessionKey, ...]]


def _snapshot(keys: Sequence[SessionKey]) -> _Snapshot:
    by_id: dict[bytes, tuple[SessionKey, ...]] = {}
    for key in keys:
        # Two keys with one id (2**-32 odds, or a key listed twice) both stay
        # reachable: opening tries each.
        by_id[key.kid] = (*by_id.get(key.kid, ()), key)
    return _Snapshot(tuple(keys), by_id)


def _make(raw: bytes, origin: str) -> SessionKey:
    return SessionKey(kid=key_id(raw), aead=AESGCM(raw), origin=origin)


def _read_keys_file(path: str) -> list[SessionKey]:
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise KeyRingError(f"auth.keys_file: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise KeyRingError(f"auth.keys_file: {path} is not UTF-8 text") from None
    keys: list[SessionKey] = []
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if text:
            where = f"auth.keys_file {path} line {number}"
            keys.append(_make(parse_key(text, where), where))
    if not keys:
        raise KeyRingError(f"auth.keys_file: {path} holds no key")
    return keys


class KeyRing:
    """An ordered set of 32-byte keys: :attr:`sealing` seals, every key opens.

    Build it with :meth:`from_config` (or directly from raw keys in tests).
    The node calls :meth:`reload` (or :meth:`try_reload`) on SIGHUP to re-read
    ``auth.keys_file``. An empty ring is allowed (a gateway that only reads
    gorilla/securecookie cookies has no AES keys): it opens nothing and
    :attr:`sealing` raises :class:`KeyRingError`.
    """

    def __init__(
        self,
        keys: Iterable[bytes] = (),
        *,
        config_keys: Sequence[str] = (),
        keys_file: str = "",
    ) -> None:
        """Build a ring from raw ``keys``, then base64 ``config_keys``, then ``keys_file``.

        Raises :class:`KeyRingError` naming the first bad key, or when
        ``keys_file`` cannot be read or holds no key.
        """
        fixed: list[SessionKey] = []
        for i, raw in enumerate(keys):
            if len(raw) != KEY_SIZE:
                raise KeyRingError(f"key {i}: a key must be {KEY_SIZE} bytes, got {len(raw)}")
            fixed.append(_make(bytes(raw), f"key {i}"))
        for i, text in enumerate(config_keys):
            where = f"auth.keys[{i}]"
            fixed.append(_make(parse_key(text, where), where))
        self._fixed: tuple[SessionKey, ...] = tuple(fixed)
        self.keys_file: str = keys_file
        """The file :meth:`reload` re-reads; empty for none."""
        loaded = _read_keys_file(keys_file) if keys_file else []
        self._snap: _Snapshot = _snapshot([*self._fixed, *loaded])

    @classmethod
    def from_config(cls, auth: AuthConfig) -> KeyRing:
        """Build the ring from ``auth.keys`` (``WSGATE_AUTH_KEYS``) and ``auth.keys_file``.

        Raises :class:`KeyRingError` naming the bad key, or when no AES key is
        configured and no gorilla/securecookie keys either (nothing could ever
        open a cookie, which is a configuration mistake, not a policy).
        """
        ring = cls(config_keys=auth.keys, keys_file=auth.keys_file)
        if not ring and not auth.securecookie_hash_key:
            raise KeyRingError(
                "no session key: set auth.keys (or WSGATE_AUTH_KEYS) or auth.keys_file; "
                "`wsgate keys new` prints one"
            )
        return ring

    def reload(self) -> None:
        """Re-read :attr:`keys_file` and swap the new keys in atomically.

        On failure (unreadable file, bad key, empty file) raise
        :class:`KeyRingError` and keep the current keys. Without a keys file
        this does nothing.
        """
        if not self.keys_file:
            return
        loaded = _read_keys_file(self.keys_file)
        self._snap = _snapshot([*self._fixed, *loaded])

    def try_reload(self) -> bool:
        """:meth:`reload`, logging a failure on ``wsgate.auth`` instead of raising.

        Meant for a SIGHUP handler. Returns whether the new keys are in use.
        """
        try:
            self.reload()
        except KeyRingError as exc:
            log.error("key reload failed, keeping the %d current keys: %s", len(self), exc)
            return False
        log.info("reloaded session keys: %d keys", len(self))
        return True

    @property
    def sealing(self) -> SessionKey:
        """The key new cookies are sealed with (the first one).

        Raises :class:`KeyRingError` when the ring is empty.
        """
        keys = self._snap.keys
        if not keys:
            raise KeyRingError("the key ring is empty: no key to seal with")
        return keys[0]

    def opening(self, kid: bytes) -> tuple[SessionKey, ...]:
        """The keys whose id is ``kid`` (usually one; empty when unknown)."""
        return self._snap.by_id.get(kid, ())

    @property
    def version(self) -> object:
        """Changes (by identity) whenever the keys change: caches compare it."""
        return self._snap

    @property
    def key_ids(self) -> tuple[bytes, ...]:
        """Ids of the keys in ring order (for logs and tests; never the keys)."""
        return tuple(key.kid for key in self._snap.keys)

    def __len__(self) -> int:
        return len(self._snap.keys)

    def __repr__(self) -> str:
        ids = ", ".join(kid.hex() for kid in self.key_ids)
        return f"KeyRing([{ids}], keys_file={self.keys_file!r})"
