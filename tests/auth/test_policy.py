"""ChannelPolicy: built-in hub rules, team views, [[channels]] rules, hubs_for."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsgate.auth.policy import ChannelPolicy, compile_glob
from wsgate.auth.principal import ANONYMOUS, Principal
from wsgate.config import ChannelRule
from wsgate.protocol.address import Address, parse_address

ALICE = Principal(sub="alice", org="acme", orgs=("acme", "globex"), teams=("red",))
MALLORY = Principal(sub="mallory", org="initech", orgs=("initech",), roles=("admin",))
ADMIN = Principal(sub="ada", org="acme", roles=("admin",))


def addr(text: str) -> Address:
    a = parse_address(text)
    assert a is not None, text
    return a


def policy(*rules: ChannelRule, anonymous: bool = False) -> ChannelPolicy:
    return ChannelPolicy(list(rules), allow_anonymous=anonymous)


@pytest.mark.parametrize(
    ("principal", "address", "allowed"),
    [
        (ALICE, "public", True),
        (ALICE, "public:lobby", True),
        (ALICE, "system", True),
        (ALICE, "system:announcements", True),
        (ALICE, "acme", True),  # the active org
        (ALICE, "acme:orders/42", True),
        (ALICE, "globex:orders/1", True),  # another org of hers
        (ALICE, "initech:orders/1", False),  # org isolation
        (ALICE, "initech", False),
        (MALLORY, "acme:orders/42", False),
        (MALLORY, "acme", False),
        (ADMIN, "acme:x", True),  # org only, orgs empty: all_orgs() includes org
    ],
)
def test_builtin_hub_rules(principal: Principal, address: str, allowed: bool) -> None:
    assert policy().allows(principal, addr(address)) is allowed


def test_anonymous() -> None:
    closed, open_ = policy(), policy(anonymous=True)
    assert not closed.allows(ANONYMOUS, addr("public:lobby"))
    assert open_.allows(ANONYMOUS, addr("public:lobby"))
    assert open_.allows(ANONYMOUS, addr("public"))
    for other in ("system", "system:x", "acme", "acme:orders/1", "public:team/red"):
        assert not open_.allows(ANONYMOUS, addr(other)), other
    assert open_.hubs_for(ANONYMOUS) == ["public"]
    assert closed.hubs_for(ANONYMOUS) == []


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("acme:team/red", True),
        ("acme:team/red/board", True),
        ("acme:team/red/board/7", True),
        ("acme:team/blue", False),
        ("acme:team/blue/board", False),
        ("acme:team/redder", False),  # not a prefix match on the id
        ("acme:team/", False),
        ("acme:team", True),  # not a team view
        ("acme:teams/blue", True),
        ("initech:team/red", False),  # team member, but not of the org
        ("public:team/blue", False),  # team views are team-only in every hub
        ("system:team/red", True),
    ],
)
def test_team_views(address: str, allowed: bool) -> None:
    assert policy().allows(ALICE, addr(address)) is allowed


def test_role_rule() -> None:
    p = policy(ChannelRule(match="*:admin/*", roles=["admin", "owner"]))
    assert p.allows(ADMIN, addr("acme:admin/users"))
    assert not p.allows(ALICE, addr("acme:admin/users"))
    assert p.allows(ALICE, addr("acme:orders/admin"))  # glob does not match
    assert not p.allows(MALLORY, addr("acme:admin/users"))  # role, but wrong org


def test_every_matching_rule_must_hold_and_each_list() -> None:
    p = policy(
        ChannelRule(match="acme:ops/*", roles=["admin"]),
        ChannelRule(match="*:ops/secret*", teams=["red"]),
        ChannelRule(match="*", orgs=["acme", "globex"]),
    )
    red_admin = Principal(sub="r", org="acme", teams=("red",), roles=("admin",))
    assert p.allows(red_admin, addr("acme:ops/secret/1"))
    assert not p.allows(ADMIN, addr("acme:ops/secret/1"))  # not in team red
    assert p.allows(ADMIN, addr("acme:ops/other"))
    assert not p.allows(ALICE, addr("acme:ops/other"))  # no admin role
    # the "*" rule applies to system and public too
    assert not p.allows(MALLORY, addr("public:lobby"))


def test_rule_with_several_lists() -> None:
    p = policy(ChannelRule(match="acme:board", roles=["pm"], teams=["red"]))
    assert not p.allows(ALICE, addr("acme:board"))  # team yes, role no
    assert p.allows(
        Principal(sub="x", org="acme", teams=("red",), roles=("pm",)), addr("acme:board")
    )


def test_rules_never_grant() -> None:
    p = policy(ChannelRule(match="initech:*", roles=["admin"]))
    assert not p.allows(ADMIN, addr("initech:x"))


def test_glob() -> None:
    g = compile_glob("*:admin/*")
    assert g.fullmatch("acme:admin/x/y")
    assert g.fullmatch("a:b:admin/")
    assert not g.fullmatch("acme:admin")
    assert compile_glob("a.c").fullmatch("a.c") and not compile_glob("a.c").fullmatch("abc")
    assert compile_glob("*").fullmatch("")


def test_hubs_for() -> None:
    assert policy().hubs_for(ALICE) == ["system", "acme", "globex", "public"]
    odd = Principal(sub="o", org="bad org!", orgs=("public", "system", "acme", "acme"))
    assert policy().hubs_for(odd) == ["system", "acme", "public"]
    # consistent with allows(): a rule closing a hub removes it
    p = policy(ChannelRule(match="globex", roles=["admin"]))
    assert p.hubs_for(ALICE) == ["system", "acme", "public"]


ORG = st.from_regex(r"[A-Za-z0-9_-]{1,8}", fullmatch=True).filter(
    lambda s: s not in ("system", "public")
)
VIEW = st.from_regex(r"[A-Za-z0-9_./@=+-]{1,30}", fullmatch=True)
NAMES = st.lists(st.from_regex(r"[a-z]{1,5}", fullmatch=True), max_size=4)


@st.composite
def principals(draw: st.DrawFn) -> Principal:
    orgs = draw(st.lists(ORG, max_size=4))
    return Principal(
        sub=draw(st.sampled_from(["", "u1", "u2"])),
        org=draw(st.one_of(st.just(""), ORG)),
        orgs=tuple(orgs),
        teams=tuple(draw(NAMES)),
        roles=tuple(draw(NAMES)),
    )


RULES = st.lists(
    st.builds(
        ChannelRule,
        match=st.sampled_from(["*", "*:*", "*:team/*", "x*", "*/a*"]),
        roles=NAMES,
        teams=NAMES,
        orgs=st.lists(ORG, max_size=3),
    ),
    max_size=3,
)


@given(
    principal=principals(),
    hub=ORG,
    view=st.one_of(st.none(), VIEW),
    rules=RULES,
    anonymous=st.booleans(),
)
def test_no_principal_outside_org_ever_reaches_its_hub(
    principal: Principal, hub: str, view: str | None, rules: list[ChannelRule], anonymous: bool
) -> None:
    address = parse_address(hub if view is None else f"{hub}:{view}")
    if address is None:  # e.g. a ".." segment
        return
    p = policy(*rules, anonymous=anonymous)
    if hub not in principal.all_orgs() or principal.anonymous:
        assert not p.allows(principal, address)
        assert hub not in p.hubs_for(principal)
    for joined in p.hubs_for(principal):
        assert p.allows(principal, Address(joined, None))


def test_hubs_for_is_cached_by_what_decides_it() -> None:
    # One policy, principals that differ only in what a rule reads: each gets its own answer.
    p = policy(
        ChannelRule(match="globex", roles=["admin"]),
        ChannelRule(match="acme", teams=["red"]),
        anonymous=True,
    )
    admin_red = Principal(sub="a", org="acme", orgs=("globex",), teams=("red",), roles=("admin",))
    plain = Principal(sub="b", org="acme", orgs=("globex",))
    assert p.hubs_for(admin_red) == ["system", "acme", "globex", "public"]
    assert p.hubs_for(plain) == ["system", "public"]
    assert p.hubs_for(Principal(sub="c", org="acme", orgs=("globex",), roles=("admin",))) == [
        "system", "globex", "public"
    ]
    assert p.hubs_for(ANONYMOUS) == ["public"]
    assert p.hubs_for(Principal(sub="d", org="globex", roles=("admin",))) == [
        "system", "globex", "public"
    ]
    # a cached list is a copy: changing it changes no later answer
    p.hubs_for(admin_red).clear()
    assert p.hubs_for(admin_red) == ["system", "acme", "globex", "public"]


@given(people=st.lists(principals(), min_size=1, max_size=6), rules=RULES, anonymous=st.booleans())
def test_hubs_for_from_a_warm_cache_is_what_a_cold_policy_says(
    people: list[Principal], rules: list[ChannelRule], anonymous: bool
) -> None:
    warm = policy(*rules, anonymous=anonymous)
    for principal in people + people:  # the second pass reads what the first cached
        cold = policy(*rules, anonymous=anonymous)
        assert warm.hubs_for(principal) == cold.hubs_for(principal)
        for hub in warm.hubs_for(principal):
            assert warm.allows(principal, Address(hub, None))
