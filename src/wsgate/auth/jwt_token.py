"""Connection tokens: a JWT to a :class:`~wsgate.auth.principal.TokenPrincipal`.

:meth:`TokenVerifier.verify` is the one path for every token, whether it came
in ``Authorization: Bearer`` or in ``@@wsgate/AUTH``. In order:

1. the header, unverified: ``alg`` must be one of ``[auth.jwt] algorithms``
   (``none`` never is), ``kid`` (if any) picks the key;
2. the keys for exactly that algorithm (:mod:`wsgate.auth.jwt_keys`): HS256
   only ``secret``; the others the PEMs, then the JWKS -- fetched again
   (rate-limited) when it is stale or does not know the ``kid``;
3. PyJWT checks the signature (and only that: every claim is read here,
   under the names of ``[auth.jwt.claims]``);
4. ``aud`` must name ``audience`` when that is set, and be absent when it is
   not (RFC 7519 §4.1.3); ``iss`` must equal ``issuer`` when that is set; the
   claims are mapped to the principal; ``sub`` must be a non-empty string;
5. the times go through :func:`~wsgate.auth.claims.time_fault`, the rule
   cookies are judged by too (``exp`` required);
6. a revocation (:mod:`wsgate.auth.revocations`) covering the principal refuses it.

A verified token is remembered (bounded, forgotten when the JWKS changes), and
a remembered one is judged by steps 5 and 6 again on every use. Failures raise
:class:`~wsgate.exceptions.TokenInvalid` or :class:`~wsgate.exceptions.TokenExpired`
and are counted in :attr:`TokenVerifier.refusals`; messages never echo the token.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Final

import jwt

from wsgate.auth.claims import CLOCK_SKEW_S, EXPIRED, time_fault
from wsgate.auth.jwt_keys import JwksCache, StaticKeys
from wsgate.auth.principal import TokenPrincipal
from wsgate.auth.revocations import Revocations
from wsgate.config import JwtConfig
from wsgate.exceptions import TokenExpired, TokenInvalid

__all__ = ["MAX_TOKEN_LENGTH", "TokenVerifier", "bearer_token"]

MAX_TOKEN_LENGTH: Final = 8192
"""Longest token looked at."""
_MAX_VERIFIED: Final = 8192
"""Verified tokens remembered (oldest forgotten first)."""
_ONLY_SIGNATURE: Final[Any] = {
    # PyJWT checks the signature; every claim is checked here, under the
    # configured names, and the times by the one rule (auth.claims).
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
}


def bearer_token(value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value (RFC 6750 §2.1)."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    return token


def _time(claims: dict[str, Any], name: str) -> int:
    value = claims.get(name)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TokenInvalid(f"{name} is not a NumericDate")
    return int(value)


def _text(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TokenInvalid(f"{name} is not a string")
    return value


def _texts(claims: dict[str, Any], name: str) -> tuple[str, ...]:
    value = claims.get(name)
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise TokenInvalid(f"{name} is not a string or a list of strings")


class TokenVerifier:
    """Verifies connection tokens for one node (see the module docstring).

    Build it once; use it on the node's event loop.
    """

    def __init__(
        self,
        config: JwtConfig,
        *,
        skew_s: int = CLOCK_SKEW_S,
        jwks: JwksCache | None = None,
    ) -> None:
        """Raises :class:`~wsgate.exceptions.ConfigError` for a bad ``public_keys`` entry."""
        self.config = config
        self.skew_s = skew_s
        self.keys = StaticKeys(config)
        self.jwks = jwks
        self.refusals: Counter[str] = Counter()
        """Why tokens were refused: ``invalid``, ``expired``, ``unknown key``, ``revoked``."""
        self.revocations: Revocations | None = None
        """Set by the node once its store is open: a covered token is refused."""
        self._algorithms = frozenset(config.algorithms)
        self._verified: dict[str, TokenPrincipal] = {}
        """Token -> its principal; bounded by ``_MAX_VERIFIED``, cleared when the JWKS changes."""
        self._verified_for: object = None if jwks is None else jwks.version

    @classmethod
    def from_config(cls, config: JwtConfig, *, skew_s: int) -> TokenVerifier:
        return cls(config, skew_s=skew_s, jwks=JwksCache.from_config(config))

    async def aclose(self) -> None:
        """Stop the JWKS fetch in flight, if any (the node stops)."""
        if self.jwks is not None:
            await self.jwks.aclose()

    async def verify(
        self, token: str, *, now: float | None = None, channel: bool = False
    ) -> TokenPrincipal:
        """The principal of ``token``, or raise ``TokenInvalid``/``TokenExpired``.

        A connection token (``channel=False``) must not carry the ``channel``
        claim; a channel token (``channel=True``) must. Awaits only when the
        JWKS must be fetched (at most ``jwks_timeout_ms``).
        """
        try:
            principal = await self._verify(token, now)
            if bool(principal.channel) != channel:
                raise TokenInvalid("a channel token" if principal.channel else "no channel claim")
        except TokenExpired:
            self.refusals["expired"] += 1
            raise
        except TokenInvalid:
            self.refusals["invalid"] += 1
            raise
        if self.revocations is not None and self.revocations.covers(principal):
            self.refusals["revoked"] += 1
            raise TokenInvalid("revoked")
        return principal

    async def _verify(self, token: str, now: float | None) -> TokenPrincipal:
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise TokenInvalid("bad length")
        jwks = self.jwks
        if jwks is not None and jwks.version is not self._verified_for:
            self._verified.clear()
            self._verified_for = jwks.version
        cached = self._verified.get(token)
        if cached is not None:
            self._check_times(cached.iat, cached.exp, 0, now)
            return cached
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenInvalid("malformed") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise TokenInvalid("algorithm not accepted")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenInvalid("bad kid")
        keys = await self._keys(alg, kid)
        if not keys:
            self.refusals["unknown key"] += 1
            raise TokenInvalid("no key for this token")
        claims = self._decode(token, alg, keys)
        names = self.config.claims
        self._check_audience(claims)
        iat, exp, nbf = _time(claims, names.iat), _time(claims, names.exp), _time(claims, names.nbf)
        orgs = _texts(claims, names.orgs)
        org = _text(claims, names.org) or (orgs[0] if len(orgs) == 1 else "")
        principal = TokenPrincipal(
            sub=_text(claims, names.sub),
            sid=_text(claims, names.sid),
            name=_text(claims, names.name),
            org=org,
            orgs=orgs,
            teams=_texts(claims, names.teams),
            roles=_texts(claims, names.roles),
            iat=iat,
            exp=exp,
            channel=_text(claims, names.channel),
        )
        if not principal.sub:
            raise TokenInvalid("no sub")
        self._check_times(iat, exp, nbf, now)
        if len(self._verified) >= _MAX_VERIFIED:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = principal
        return principal

    def _check_audience(self, claims: dict[str, Any]) -> None:
        """``aud`` names us (or is absent when no ``audience`` is set); ``iss`` is the issuer."""
        config, names = self.config, self.config.claims
        audiences = _texts(claims, names.aud)
        if config.audience:
            if config.audience not in audiences:
                raise TokenInvalid("not for this audience")
        elif audiences:
            raise TokenInvalid("for an audience, and none is configured")
        if config.issuer and claims.get(names.iss) != config.issuer:
            raise TokenInvalid("not from this issuer")

    def _check_times(self, iat: int, exp: int, nbf: int, now: float | None) -> None:
        fault = time_fault(iat=iat, exp=exp, nbf=nbf, now=now, skew_s=self.skew_s)
        if fault == EXPIRED:
            raise TokenExpired(fault)
        if fault is not None:
            raise TokenInvalid(fault)

    async def _keys(self, alg: str, kid: str | None) -> list[Any]:
        keys = self.keys.keys_for(alg)
        jwks = self.jwks
        if alg == "HS256" or jwks is None:
            return keys
        found = jwks.lookup(alg, kid)
        if (not found or jwks.stale) and await jwks.refresh():
            found = jwks.lookup(alg, kid)
        return keys + found

    def _decode(self, token: str, alg: str, keys: list[Any]) -> dict[str, Any]:
        for key in keys:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token, key, algorithms=[alg], options=_ONLY_SIGNATURE
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError:
                raise TokenInvalid("claims refused") from None
            return claims
        raise TokenInvalid("bad signature")
