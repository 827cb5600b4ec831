"""TokenVerifier: every algorithm, the claim mapping, and each forgery refused."""

from __future__ import annotations

import time
from typing import Any

import pytest

from wsgate.auth.jwt_token import TokenVerifier, bearer_token
from wsgate.auth.principal import TokenPrincipal
from wsgate.config import JwtConfig, from_mapping
from wsgate.exceptions import ConfigError, TokenExpired, TokenInvalid

from .tokens import (
    SECRET,
    KeyPair,
    claims,
    ec_pair,
    ed_pair,
    hmac_with,
    hs256,
    rsa_pair,
    tampered,
    unsigned,
)

RSA, EC, ED = rsa_pair(), ec_pair(), ed_pair()


def verifier(**kw: Any) -> TokenVerifier:
    data: dict[str, Any] = {"secret": SECRET, "public_keys": [RSA.public_pem, EC.public_pem, ED.public_pem]}
    data.update(kw)
    config = from_mapping({"auth": {"jwt": data}}, env={}).auth.jwt
    assert config is not None
    return TokenVerifier(config, skew_s=60)


@pytest.mark.parametrize("pair", [RSA, EC, ED], ids=lambda p: p.alg)
async def test_each_asymmetric_algorithm_verifies(pair: KeyPair) -> None:
    p = await verifier().verify(pair.sign(claims("dan", name="Dan", sid="s1", roles=["staff"])))
    assert isinstance(p, TokenPrincipal) and p.auth == "jwt"
    assert (p.sub, p.name, p.sid, p.roles) == ("dan", "Dan", "s1", ("staff",))


async def test_hs256_verifies_with_the_secret() -> None:
    p = await verifier().verify(hs256(claims("erin")))
    assert p.sub == "erin" and p.auth == "jwt"


async def test_claims_map_to_the_principal_through_configured_names() -> None:
    v = verifier(claims={"sub": "uid", "orgs": "tenant", "teams": "groups", "roles": "scope", "sid": "session"})
    token = hs256(claims("x", uid="u7", tenant="acme", groups=["red", "blue"], scope="admin", session="s9"))
    p = await v.verify(token)
    assert (p.sub, p.org, p.orgs, p.teams, p.roles, p.sid) == ("u7", "acme", ("acme",), ("red", "blue"), ("admin",), "s9")
    # a list of organizations and an active one
    p = await verifier().verify(hs256(claims("dan", org="beta", orgs=["acme", "beta"])))
    assert (p.org, p.orgs, p.all_orgs()) == ("beta", ("acme", "beta"), ("acme", "beta"))


@pytest.mark.parametrize(
    "bad",
    [
        {"orgs": [1, 2]},
        {"roles": {"a": 1}},
        {"sub": 7},
        {"exp": "soon"},
        {"iat": True},
    ],
)
async def test_claims_of_the_wrong_type_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(TokenInvalid):
        await verifier().verify(hs256({**claims("dan"), **bad}))


async def test_audience_and_issuer_are_checked_when_set() -> None:
    v = verifier(audience="wsgate", issuer="https://id.test")
    good = claims("dan", aud=["other", "wsgate"], iss="https://id.test")
    assert (await v.verify(RSA.sign(good))).sub == "dan"
    for bad in (claims("dan", aud="other", iss="https://id.test"), claims("dan", aud="wsgate", iss="https://evil.test"),
                claims("dan", iss="https://id.test"), claims("dan", aud="wsgate")):
        with pytest.raises(TokenInvalid):
            await v.verify(RSA.sign(bad))


async def test_a_token_for_some_audience_is_refused_when_none_is_configured() -> None:
    """RFC 7519 §4.1.3: a recipient that is not named in a present ``aud`` must refuse."""
    with pytest.raises(TokenInvalid):
        await verifier().verify(hs256(claims("dan", aud="billing")))
    assert (await verifier().verify(hs256(claims("dan")))).sub == "dan"


async def test_registered_claims_under_configured_names() -> None:
    names = {"exp": "expires", "iat": "issued", "nbf": "from", "aud": "for", "iss": "by"}
    v = verifier(audience="wsgate", issuer="idp", claims=names)
    now = int(time.time())
    good = {"sub": "dan", "issued": now, "expires": now + 60, "from": now, "for": ["wsgate"], "by": "idp"}
    assert (await v.verify(ED.sign(good))).exp == now + 60
    for bad in ({"expires": now - 3600}, {"from": now + 3600}, {"issued": now + 3600}, {"for": "other"},
                {"by": "evil"}, {"expires": None}):
        with pytest.raises((TokenInvalid, TokenExpired)):
            await v.verify(ED.sign({k: w for k, w in {**good, **bad}.items() if w is not None}))
            pytest.fail(str(bad))


async def test_expired_and_not_yet_valid_within_and_past_the_skew() -> None:
    v, now = verifier(), int(time.time())
    assert (await v.verify(EC.sign({"sub": "a", "exp": now - 30}))).sub == "a"  # within 60 s skew
    with pytest.raises(TokenExpired):
        await v.verify(EC.sign({"sub": "a", "exp": now - 61}))
    with pytest.raises(TokenInvalid, match="not yet valid"):
        await v.verify(EC.sign({"sub": "a", "nbf": now + 120, "exp": now + 600}))
    with pytest.raises(TokenInvalid, match="issued in the future"):
        await v.verify(EC.sign({"sub": "a", "iat": now + 120, "exp": now + 600}))
    with pytest.raises(TokenInvalid, match="no expiry"):
        await v.verify(EC.sign({"sub": "a"}))
    assert v.refusals["expired"] == 1 and v.refusals["invalid"] == 3


async def test_forgeries_are_refused() -> None:
    v = verifier()
    forgeries = {
        "alg none": unsigned(claims("dan")),
        "bad signature": tampered(RSA.sign(claims("dan"))),
        "signed by another key": rsa_pair().sign(claims("dan")),
        "HS256 with the wrong secret": hs256(claims("dan"), secret="x" * 40),
        "HS/RS confusion": hmac_with(RSA.public_pem.encode(), claims("dan"), kid=RSA.kid),
        "ES256 header on an RS256 signature": tampered_alg(RSA.sign(claims("dan")), "ES256"),
        "not a JWT": "not.a.jwt",
        "empty": "",
        "no sub": hs256({"exp": int(time.time()) + 60}),
        "too long": hs256(claims("dan", pad="x" * 9000)),
    }
    for name, token in forgeries.items():
        with pytest.raises(TokenInvalid):
            await v.verify(token)
            pytest.fail(name)


def tampered_alg(token: str, alg: str) -> str:
    import base64
    import json
    head, body, sig = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    data["alg"] = alg
    new = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{new}.{body}.{sig}"


async def test_hs_rs_confusion_refused_even_without_a_secret() -> None:
    """Only public keys configured: an HS256 token has no key at all, whatever it is signed with."""
    v = verifier(secret="")
    with pytest.raises(TokenInvalid):
        await v.verify(hmac_with(RSA.public_pem.encode(), claims("dan")))


async def test_an_algorithm_not_listed_is_refused() -> None:
    v = verifier(algorithms=["RS256"], secret="", public_keys=[RSA.public_pem])
    assert (await v.verify(RSA.sign(claims("dan")))).sub == "dan"
    for token in (EC.sign(claims("dan")), hs256(claims("dan"))):
        with pytest.raises(TokenInvalid, match="algorithm"):
            await v.verify(token)


async def test_a_remembered_token_is_judged_by_the_time_rule_again() -> None:
    v, now = verifier(), time.time()
    token = ED.sign({"sub": "dan", "iat": int(now), "exp": int(now) + 10})
    assert (await v.verify(token, now=now)).sub == "dan"  # verified and remembered
    assert (await v.verify(token, now=now + 60)).sub == "dan"  # from memory, within the skew
    with pytest.raises(TokenExpired):
        await v.verify(token, now=now + 71)  # from memory, past exp + skew


def test_bearer_header_parsing() -> None:
    assert bearer_token("Bearer abc.def.ghi") == "abc.def.ghi"
    assert bearer_token("bearer   abc ") == "abc"
    for value in (None, "", "Basic abc", "Bearer", "Bearer ", "Bearer " + "x" * 9000):
        assert bearer_token(value) is None


def test_config_refuses_bad_jwt_settings() -> None:
    for table, key in (
        ({}, "auth.jwt"),
        ({"secret": "short"}, "auth.jwt.secret"),
        ({"jwks_url": "file:///etc/passwd"}, "auth.jwt.jwks_url"),
        ({"secret": SECRET, "algorithms": ["none"]}, "auth.jwt.algorithms"),
    ):
        with pytest.raises(ConfigError) as err:
            from_mapping({"auth": {"jwt": table}}, env={})
        assert err.value.key.startswith(key), (table, err.value.key)
    config = from_mapping({"auth": {"jwt": {"public_keys": ["not a pem"]}}}, env={}).auth.jwt
    assert isinstance(config, JwtConfig)
    with pytest.raises(ConfigError) as err:
        TokenVerifier(config)
    assert err.value.key == "auth.jwt.public_keys.0"
