"""The node's revocation cache: what it covers, and how it is bounded and freed."""

from __future__ import annotations

from wsgate.auth.principal import Principal, TokenPrincipal
from wsgate.auth.revocations import Revocations, sid_key, user_key
from wsgate.backends.memory_revocations import MemoryRevocations


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_sid_covers_every_credential_of_that_session_and_no_other() -> None:
    cache = Revocations(MemoryRevocations(), ttl_s=60)
    await cache.revoke(sid_key("s-1"), 0)
    assert cache.covers(Principal(sub="ann", sid="s-1", iat=2_000_000_000))
    assert cache.covers(TokenPrincipal(sub="bob", sid="s-1"))
    assert not cache.covers(Principal(sub="ann", sid="s-2"))
    assert not cache.covers(Principal(sub=""))  # anonymous: nothing to revoke


async def test_a_user_not_before_covers_what_was_issued_before_it() -> None:
    cache = Revocations(MemoryRevocations(), ttl_s=60)
    await cache.revoke(user_key("ann"), 1000.5)
    assert cache.covers(Principal(sub="ann", iat=1000))  # issued in the second it was made
    assert cache.covers(Principal(sub="ann"))  # no iat: covered
    assert not cache.covers(Principal(sub="ann", iat=1001))  # a later sign-in
    assert not cache.covers(Principal(sub="bob", iat=10))


async def test_refresh_merges_news_only_and_entries_expire_with_their_ttl() -> None:
    clock = Clock()
    store = MemoryRevocations(now=clock)
    mine, theirs = Revocations(store, ttl_s=60, now=clock), Revocations(store, ttl_s=60, now=clock)
    await theirs.revoke(user_key("ann"), 500)
    assert await mine.refresh() == [user_key("ann")]
    assert await mine.refresh() == []  # known already
    await theirs.revoke(user_key("ann"), 700)  # a later not-before is news
    assert await mine.refresh() == [user_key("ann")]
    clock.now += 61
    assert await mine.refresh() == [] and len(mine) == 0 and await store.all() == {}


async def test_past_max_entries_the_soonest_to_expire_is_forgotten_first() -> None:
    clock = Clock()
    cache = Revocations(MemoryRevocations(now=clock), ttl_s=60, max_entries=3, now=clock)
    for i in range(5):
        clock.now += 1
        cache.record(sid_key(f"s{i}"), 0)
    assert len(cache) == 3
    assert not cache.covers(Principal(sub="a", sid="s0"))
    assert all(cache.covers(Principal(sub="a", sid=f"s{i}")) for i in (2, 3, 4))
