"""JwksCache against a real aiohttp JWKS server: fetched once, refreshed on an unknown
kid, rotated while clients connect, and rate-limited against a flood of bad kids."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from wsgate.auth.jwt_keys import JwksCache
from wsgate.auth.jwt_token import TokenVerifier
from wsgate.config import JwtConfig
from wsgate.exceptions import TokenInvalid

from .jwks_server import jwks_server
from .tokens import claims, ec_pair, ed_pair, rsa_pair

RSA_A, RSA_B, EC, ED = rsa_pair("a"), rsa_pair("b"), ec_pair("e"), ed_pair("d")


class Clock:
    """Monotonic time the test moves (the rate limit's and the cache's clock)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def verifier(url: str, clock: Clock, *, cache_s: float = 300, min_interval_s: float = 10) -> TokenVerifier:
    jwks = JwksCache(url, cache_s=cache_s, min_interval_s=min_interval_s, timeout_s=2, clock=clock)
    return TokenVerifier(JwtConfig(jwks_url=url), jwks=jwks)


async def test_every_algorithm_from_one_fetch_then_from_the_cache() -> None:
    async with jwks_server([RSA_A, EC, ED]) as server:
        v = verifier(server.url, Clock())
        for pair in (RSA_A, EC, ED, RSA_A, EC, ED):
            assert (await v.verify(pair.sign(claims(pair.kid)))).sub == pair.kid
        assert server.hits == 1


async def test_rotation_while_clients_connect_fetches_the_new_kid_once() -> None:
    async with jwks_server([RSA_A]) as server:
        clock = Clock()
        v = verifier(server.url, clock)
        assert (await v.verify(RSA_A.sign(claims("early")))).sub == "early"
        assert server.hits == 1
        # The issuer rotates: B joins. Fifty clients with B tokens arrive at once,
        # while the issuer is slow, beside clients still on A.
        server.pairs = [RSA_A, RSA_B]
        server.gate = asyncio.Event()
        clock.t += 11  # past the rate limit's interval
        tasks = [asyncio.create_task(v.verify(RSA_B.sign(claims(f"b{i}")))) for i in range(50)]
        old = [await v.verify(RSA_A.sign(claims(f"a{i}"))) for i in range(5)]  # no fetch needed
        assert [p.sub for p in old] == [f"a{i}" for i in range(5)]
        server.gate.set()
        done = await asyncio.wait_for(asyncio.gather(*tasks), 5)
        assert sorted(p.sub for p in done) == sorted(f"b{i}" for i in range(50))
        assert server.hits == 2 and v.jwks is not None and v.jwks.fetches == 2
        # A is retired: its tokens, even ones verified before, stop at the next fetch.
        server.pairs = [RSA_B]
        clock.t += 301  # the cached set is stale: the next token refreshes it
        with pytest.raises(TokenInvalid):
            await v.verify(RSA_A.sign(claims("a0")))
        assert server.hits == 3


async def test_a_flood_of_unknown_kids_makes_one_fetch_per_interval() -> None:
    async with jwks_server([RSA_A]) as server:
        clock = Clock()
        v = verifier(server.url, clock, min_interval_s=10)
        assert (await v.verify(RSA_A.sign(claims("x")))).sub == "x"
        # 300 tokens with random kids, signed by a key the issuer never published,
        # spread over 60 s of the rate limit's clock: at most one fetch per 10 s.
        stranger = rsa_pair()
        for i in range(300):
            clock.t = 1000.0 + i * 0.2
            stranger.kid = secrets.token_hex(8)
            with pytest.raises(TokenInvalid):
                await v.verify(stranger.sign(claims("mallory")))
        assert 2 <= server.hits <= 1 + 6 + 1
        assert v.refusals["unknown key"] == 300
        # the real kid still verifies, from the cache
        hits = server.hits
        assert (await v.verify(RSA_A.sign(claims("y")))).sub == "y"
        assert server.hits == hits


async def test_an_issuer_down_keeps_the_old_keys_and_is_not_hammered() -> None:
    async with jwks_server([RSA_A]) as server:
        clock = Clock()
        v = verifier(server.url, clock, cache_s=5, min_interval_s=10)
        assert (await v.verify(RSA_A.sign(claims("x")))).sub == "x"
        server.status = 500
        clock.t += 11  # stale and past the interval: one refresh is tried, and fails
        for i in range(20):
            assert (await v.verify(RSA_A.sign(claims(f"u{i}")))).sub == f"u{i}"
        assert server.hits == 2
        with pytest.raises(TokenInvalid):
            await v.verify(RSA_B.sign(claims("b")))  # unknown kid, within the interval: no fetch
        assert server.hits == 2


async def test_an_unreachable_issuer_refuses_tokens_without_raising_anything_else() -> None:
    from ..helpers import free_port

    v = verifier(f"http://127.0.0.1:{free_port()}/jwks", Clock())
    with pytest.raises(TokenInvalid):
        await v.verify(RSA_A.sign(claims("x")))
    assert v.jwks is not None and v.jwks.fetches == 1
