"""One rule per claim (issue 12, item 5): sealed cookies, gorilla cookies and JWTs
get the same verdict on ``iat``, ``exp`` and the clock skew, first time and from cache."""

from __future__ import annotations

import base64
import os
import time
from typing import Any

import pytest

import wsgate.auth.claims as claims_module
from wsgate.auth.claims import EXPIRED, ISSUED_IN_FUTURE, NO_EXPIRY, NOT_YET_VALID, time_fault
from wsgate.auth.cookie import CookieCodec
from wsgate.auth.handshake import Authenticator
from wsgate.auth.keyring import KeyRing
from wsgate.auth.principal import Principal
from wsgate.auth.securecookie import SecureCookieCodec
from wsgate.config import from_mapping
from wsgate.exceptions import AuthError

from .tokens import SECRET, hs256

KEY, HASH, BLOCK = os.urandom(32), os.urandom(32), os.urandom(32)
KINDS = ["sealed", "gorilla", "jwt"]


def test_time_fault_table() -> None:
    now = 1_000_000
    assert time_fault(iat=now, exp=now + 1, now=now, skew_s=60) is None
    assert time_fault(iat=0, exp=0, now=now, skew_s=60) == NO_EXPIRY
    assert time_fault(iat=0, exp=0, now=now, skew_s=60, require_exp=False) is None
    assert time_fault(iat=now + 61, exp=now + 99, now=now, skew_s=60) == ISSUED_IN_FUTURE
    assert time_fault(iat=now + 60, exp=now + 99, now=now, skew_s=60) is None
    assert time_fault(iat=0, exp=now + 99, nbf=now + 61, now=now, skew_s=60) == NOT_YET_VALID
    assert time_fault(iat=0, exp=now - 61, now=now, skew_s=60) == EXPIRED
    assert time_fault(iat=0, exp=now - 60, now=now, skew_s=60) is None
    # the order is fixed: a future iat on an expired credential is "issued in the future"
    assert time_fault(iat=now + 100, exp=now - 100, now=now, skew_s=0) == ISSUED_IN_FUTURE


class Credentials:
    """The three kinds behind one node's Authenticator, configured with ``auth``."""

    def __init__(self, **auth: Any) -> None:
        data = {"keys": [base64.b64encode(KEY).decode()],
                "securecookie_hash_key": base64.b64encode(HASH).decode(),
                "securecookie_block_key": base64.b64encode(BLOCK).decode(),
                "jwt": {"secret": SECRET}, **auth}
        config = from_mapping({"auth": data}, env={}).auth
        self.auth = Authenticator(config, KeyRing.from_config(config))
        self.sealed = CookieCodec(KeyRing.from_config(config))
        self.gorilla = SecureCookieCodec(HASH, BLOCK)

    def value(self, kind: str, iat: int, exp: int) -> str:
        """A credential of ``kind`` carrying ``iat``/``exp``."""
        if kind == "jwt":
            return hs256({"sub": "dan", "iat": iat, "exp": exp})
        p = Principal(sub="dan", org="acme", iat=iat, exp=exp)
        return self.sealed.seal(p) if kind == "sealed" else self.gorilla.encode("wsgate_session", p)

    async def check(self, kind: str, value: str) -> Principal | None:
        """The verdict of the node, as a connection would get it (``None``: refused)."""
        if kind == "jwt":
            assert self.auth.tokens is not None
            try:
                return await self.auth.tokens.verify(value)
            except AuthError:
                return None
        return self.auth({"Cookie": f"wsgate_session={value}"})

    async def open(self, kind: str, iat: int, exp: int) -> Principal | None:
        return await self.check(kind, self.value(kind, iat, exp))


@pytest.mark.parametrize("kind", KINDS)
async def test_a_future_iat_is_refused_first_time_and_from_cache(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    c, now = Credentials(), int(time.time())
    future = c.value(kind, now + 3600, now + 7200)
    assert [await c.check(kind, future) for _ in range(3)] == [None] * 3
    near = [await c.check(kind, c.value(kind, now + 30, now + 7200)) for _ in range(3)]
    assert all(p is not None and p.sub == "dan" for p in near)  # within the 60 s skew
    # opened (and remembered) on a clock an hour ahead; judged again on the true clock
    monkeypatch.setattr(claims_module.time, "time", lambda: now + 3600.0)
    assert await c.check(kind, future) is not None
    monkeypatch.setattr(claims_module.time, "time", lambda: float(now))
    assert [await c.check(kind, future) for _ in range(2)] == [None, None]


@pytest.mark.parametrize("kind", KINDS)
async def test_the_configured_skew_holds_for_every_kind(kind: str) -> None:
    """``auth.clock_skew_s`` is the one allowance: 5 s refuses what 60 s let in."""
    c, now = Credentials(clock_skew_s=5), int(time.time())
    assert [await c.open(kind, now + 30, now + 7200) for _ in range(2)] == [None, None]
    assert await c.open(kind, now - 60, now - 30) is None  # expired 30 s ago: past a 5 s skew
    assert await c.open(kind, now + 3, now + 7200) is not None


@pytest.mark.parametrize("kind", KINDS)
async def test_exp_is_judged_again_from_the_cache(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    c, now = Credentials(), int(time.time())
    value = c.value(kind, now, now + 10)
    assert await c.check(kind, value) is not None  # opened and remembered
    monkeypatch.setattr(claims_module.time, "time", lambda: now + 10 + 59.0)
    assert await c.check(kind, value) is not None  # from the cache, within the skew
    monkeypatch.setattr(claims_module.time, "time", lambda: now + 10 + 61.0)
    assert await c.check(kind, value) is None  # from the cache, past exp + skew
