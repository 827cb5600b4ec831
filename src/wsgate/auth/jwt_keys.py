"""Verification keys for connection tokens: the configured ones and a JWKS.

- :class:`StaticKeys` -- ``[auth.jwt] secret`` (HS256 only) and
  ``public_keys`` (PEM; RS256 for RSA, ES256 for P-256, EdDSA for Ed25519).
- :class:`JwksCache` -- an issuer's JWKS, fetched with aiohttp, parsed by
  PyJWT (:class:`jwt.PyJWKSet`), cached for ``jwks_cache_s`` and fetched again
  on an unknown ``kid`` -- but at most once per ``jwks_min_interval_ms``, and
  never twice at once (concurrent askers share the one fetch in flight), so
  a flood of tokens naming unknown ``kid``s costs the issuer one request per
  interval.

A key is only ever offered for the algorithm of its own type: an HS256
token is checked against ``secret`` and nothing else, so a public key can
never serve as an HMAC secret (the HS/RS confusion).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Final

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

from wsgate.config import JwtConfig
from wsgate.exceptions import ConfigError

__all__ = ["MAX_JWKS_BYTES", "MAX_JWKS_KEYS", "JwksCache", "StaticKeys", "algorithm_of"]

MAX_JWKS_BYTES: Final = 1 << 20
"""A JWKS document longer than this is refused (the keys kept are the old ones)."""
MAX_JWKS_KEYS: Final = 64
"""Keys of one JWKS kept; the rest are ignored."""

_log: Final = logging.getLogger("wsgate.auth")


def algorithm_of(key: object) -> str | None:
    """The one JWS algorithm a public key verifies: RS256, ES256 (P-256), EdDSA; else ``None``."""
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    return None


class StaticKeys:
    """The keys written in the config, checked once at start-up."""

    def __init__(self, config: JwtConfig) -> None:
        """Raises :class:`~wsgate.exceptions.ConfigError` naming a PEM that does not load
        or is of a type no accepted algorithm uses."""
        self.secret: bytes = config.secret.encode("utf-8")
        self._public: dict[str, list[Any]] = {}
        for i, pem in enumerate(config.public_keys):
            where = f"auth.jwt.public_keys.{i}"
            try:
                key = load_pem_public_key(pem.encode("utf-8"))
            except (ValueError, TypeError):
                raise ConfigError(where, "not a PEM public key") from None
            alg = algorithm_of(key)
            if alg is None or alg not in config.algorithms:
                raise ConfigError(
                    where, "not an RSA, P-256 or Ed25519 key of an accepted algorithm"
                )
            self._public.setdefault(alg, []).append(key)

    def keys_for(self, alg: str) -> list[Any]:
        """Keys that may verify a token of ``alg``: ``[secret]`` for HS256, else the PEMs."""
        if alg == "HS256":
            return [self.secret] if self.secret else []
        return list(self._public.get(alg, ()))


class JwksCache:
    """One issuer's key set (see the module docstring). Use on one event loop.

    Call order: :meth:`lookup` (sync, the current keys); when it finds none,
    or :attr:`stale`, ``await`` :meth:`refresh` and look up again.
    """

    def __init__(
        self,
        url: str,
        *,
        cache_s: float,
        min_interval_s: float,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.cache_s = cache_s
        self.min_interval_s = min_interval_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._keys: dict[str | None, list[tuple[str, Any]]] = {}
        """kid (``None``: a key without one) -> (algorithm, key); at most MAX_JWKS_KEYS."""
        self._fetched_at: float | None = None
        """When the keys were last fetched (successfully)."""
        self._tried_at: float | None = None
        """When a fetch last started, successful or not: the rate limit's clock."""
        self._inflight: asyncio.Task[None] | None = None
        """The fetch running now, shared by every asker; ``None`` between fetches."""
        self.fetches = 0
        """Fetches started (for metrics and tests)."""
        self.version: object = object()
        """Replaced whenever the key set changes: caches of verified tokens key on it."""

    @classmethod
    def from_config(cls, config: JwtConfig) -> JwksCache | None:
        if not config.jwks_url:
            return None
        return cls(
            config.jwks_url,
            cache_s=config.jwks_cache_s,
            min_interval_s=config.jwks_min_interval_ms / 1000,
            timeout_s=config.jwks_timeout_ms / 1000,
        )

    @property
    def stale(self) -> bool:
        """Never fetched, or fetched longer than ``cache_s`` ago."""
        return self._fetched_at is None or self._clock() - self._fetched_at > self.cache_s

    def lookup(self, alg: str, kid: str | None) -> list[Any]:
        """Keys for ``alg``: the key named ``kid``, or every key without a kid when
        the token names none."""
        return [key for a, key in self._keys.get(kid, ()) if a == alg]

    async def refresh(self) -> bool:
        """Fetch the key set unless a fetch started within ``min_interval_s``.

        Returns ``True`` when a fetch ran (a new one, or the one already in
        flight, which it joins), ``False`` when the rate limit said no. The
        fetch is a task of its own: an asker that is cancelled (its client
        left) does not cancel it for the others. A failed fetch (network,
        status, size, JSON, no usable key) keeps the old keys, is logged, and
        counts against the rate limit. Never raises but ``CancelledError``.
        """
        if self._inflight is None:
            now = self._clock()
            if self._tried_at is not None and now - self._tried_at < self.min_interval_s:
                return False
            self._tried_at = now
            self.fetches += 1
            task = asyncio.get_running_loop().create_task(self._fetch())
            task.add_done_callback(self._fetched)
            self._inflight = task
        await asyncio.shield(self._inflight)
        return True

    async def aclose(self) -> None:
        """End a fetch in flight (the node stops); later :meth:`refresh` calls fetch anew."""
        task = self._inflight
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _fetched(self, task: asyncio.Task[None]) -> None:
        self._inflight = None
        if not task.cancelled() and task.exception() is not None:
            _log.error("jwks %s: fetch failed", self.url, exc_info=task.exception())

    async def _fetch(self) -> None:
        try:
            timeout = aiohttp.ClientTimeout(total=self.timeout_s)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(self.url, allow_redirects=False) as resp,
            ):
                if resp.status != 200:
                    _log.warning("jwks %s: HTTP %d; keeping the old keys", self.url, resp.status)
                    return
                body = await resp.content.read(MAX_JWKS_BYTES + 1)
            if len(body) > MAX_JWKS_BYTES:
                _log.warning("jwks %s: larger than %d bytes; ignored", self.url, MAX_JWKS_BYTES)
                return
            keyset = jwt.PyJWKSet.from_json(body.decode("utf-8"))
        except (aiohttp.ClientError, TimeoutError, OSError, UnicodeDecodeError) as exc:
            _log.warning("jwks %s: %s; keeping the old keys", self.url, exc or type(exc).__name__)
            return
        except jwt.PyJWTError as exc:
            _log.warning("jwks %s: unusable (%s); keeping the old keys", self.url, exc)
            return
        keys: dict[str | None, list[tuple[str, Any]]] = {}
        for jwk in keyset.keys[:MAX_JWKS_KEYS]:
            alg = jwk.algorithm_name
            if alg != algorithm_of(jwk.key):  # a JWK's "alg" must fit its key type
                continue
            keys.setdefault(jwk.key_id, []).append((alg, jwk.key))
        self._fetched_at = self._clock()
        if _fingerprint(keys) != _fingerprint(self._keys):
            self.version = object()
        self._keys = keys


def _fingerprint(
    keys: dict[str | None, list[tuple[str, Any]]],
) -> set[tuple[str | None, str, bytes]]:
    """What a key set verifies: equal for two fetches of the same keys."""
    return {
        (kid, alg, key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
        for kid, pairs in keys.items()
        for alg, key in pairs
    }
