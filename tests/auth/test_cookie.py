"""AES-256-GCM session cookies: round trip, rotation, tampering, expiry, format."""

from __future__ import annotations

import base64
import os
import re

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsgate.auth.cookie import CLOCK_SKEW_S, CookieCodec, b64url_decode, b64url_encode
from wsgate.auth.keyring import KeyRing, key_id
from wsgate.auth.principal import Principal
from wsgate.config import AuthConfig
from wsgate.exceptions import CookieExpired, CookieInvalid

OLD, NEW = os.urandom(32), os.urandom(32)
BOB = Principal(
    sub="bob",
    sid="s1",
    name="Bob",
    org="acme",
    orgs=("acme", "globex"),
    teams=("red",),
    roles=("admin",),
)
# RFC 6265 §4.1.1 cookie-octet: %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E
COOKIE_OCTETS = re.compile(r"[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]+")


def codec(*keys: bytes, name: str = "wsgate_session", ttl_s: int = 3600) -> CookieCodec:
    return CookieCodec(KeyRing(keys), cookie_name=name, ttl_s=ttl_s)


def test_round_trip_sets_iat_and_exp() -> None:
    c = codec(NEW)
    value = c.seal(BOB, now=1_000_000)
    opened = c.open(value, now=1_000_010)
    assert opened == msgspec.structs.replace(BOB, iat=1_000_000, exp=1_003_600)


def test_seal_keeps_given_iat_and_exp() -> None:
    c = codec(NEW)
    p = msgspec.structs.replace(BOB, iat=5, exp=2_000_000_000)
    assert c.open(c.seal(p)) == p


def test_from_config_uses_name_and_ttl() -> None:
    auth = AuthConfig(cookie_name="sess", cookie_ttl_s=60, keys=[base64.b64encode(NEW).decode()])
    c = CookieCodec.from_config(auth, KeyRing.from_config(auth))
    assert c.open(c.seal(BOB, now=100), now=150).exp == 160


def test_value_is_cookie_octets_and_documented_layout() -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    value = codec(NEW).seal(BOB, now=1000)
    assert COOKIE_OCTETS.fullmatch(value)
    assert "=" not in value
    data = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    header, nonce, sealed = data[:5], data[5:17], data[17:]
    assert header == b"\x01" + key_id(NEW)
    plain = AESGCM(NEW).decrypt(nonce, sealed, b"wsgate-cookie|wsgate_session|" + header)
    assert msgspec.json.decode(plain) == {
        "sub": "bob",
        "sid": "s1",
        "name": "Bob",
        "org": "acme",
        "orgs": ["acme", "globex"],
        "teams": ["red"],
        "roles": ["admin"],
        "iat": 1000,
        "exp": 4600,
    }


def test_nonce_is_fresh() -> None:
    c = codec(NEW)
    assert c.seal(BOB, now=1) != c.seal(BOB, now=1)


def test_rotation() -> None:
    sealed = codec(OLD).seal(BOB)
    assert codec(NEW, OLD).open(sealed).sub == "bob"
    with pytest.raises(CookieInvalid):
        codec(NEW).open(sealed)
    # the ring's first key seals
    assert b64url_decode(codec(NEW, OLD).seal(BOB))[1:5] == key_id(NEW)


def test_other_cookie_name_refused() -> None:
    value = codec(NEW, name="a").seal(BOB)
    with pytest.raises(CookieInvalid):
        codec(NEW, name="b").open(value)


def test_tampered_byte_anywhere_is_invalid() -> None:
    c = codec(NEW)
    data = bytearray(b64url_decode(c.seal(BOB)))
    for i in range(len(data)):
        for bit in (0x01, 0x80):
            forged = bytearray(data)
            forged[i] ^= bit
            with pytest.raises(CookieInvalid):
                c.open(b64url_encode(bytes(forged)))


def test_tampered_character_anywhere_is_invalid() -> None:
    c = codec(NEW)
    value = c.seal(BOB)
    for i in range(len(value)):
        for repl in "A_":
            if value[i] == repl:
                continue
            with pytest.raises(CookieInvalid):
                c.open(value[:i] + repl + value[i + 1 :])


def test_truncated_and_extended_are_invalid() -> None:
    c = codec(NEW)
    value = c.seal(BOB)
    for cut in range(len(value)):
        with pytest.raises(CookieInvalid):
            c.open(value[:cut])
    for extra in ("A", "AA", "=", "==", " "):
        with pytest.raises(CookieInvalid):
            c.open(value + extra)


@pytest.mark.parametrize(
    "value",
    ["", "x", "!!!!", "é" * 10, "A" * 5000, b64url_encode(b"\x02" + bytes(40)), "\x00" * 8],
)
def test_malformed_is_invalid(value: str) -> None:
    with pytest.raises(CookieInvalid):
        codec(NEW).open(value)


def test_authentic_but_bad_claims_is_invalid() -> None:
    from wsgate.auth.cookie import _aad

    ring = KeyRing([NEW])
    key = ring.sealing
    header = b"\x01" + key.kid
    nonce = os.urandom(12)
    for plain in (b"not json", b'{"sub": 5}', b"[]"):
        sealed = key.aead.encrypt(nonce, plain, _aad(b"wsgate_session", header))
        with pytest.raises(CookieInvalid):
            codec(NEW).open(b64url_encode(header + nonce + sealed))


def test_expired_with_skew() -> None:
    c = codec(NEW, ttl_s=100)
    value = c.seal(BOB, now=1000)
    assert c.open(value, now=1100 + CLOCK_SKEW_S).sub == "bob"
    with pytest.raises(CookieExpired):
        c.open(value, now=1101 + CLOCK_SKEW_S)


def test_issued_in_the_future_is_invalid() -> None:
    c = codec(NEW)
    value = c.seal(BOB, now=10_000)
    assert c.open(value, now=10_000 - CLOCK_SKEW_S).sub == "bob"
    with pytest.raises(CookieInvalid):
        c.open(value, now=10_000 - CLOCK_SKEW_S - 1)


def test_expired_is_an_auth_error_subclass_not_invalid() -> None:
    c = codec(NEW, ttl_s=1)
    with pytest.raises(CookieExpired) as info:
        c.open(c.seal(BOB, now=0), now=10_000)
    assert not isinstance(info.value, CookieInvalid)


@given(
    sub=st.text(min_size=1, max_size=40),
    name=st.text(max_size=40),
    orgs=st.lists(st.text(max_size=20), max_size=5),
    roles=st.lists(st.text(max_size=20), max_size=5),
)
def test_round_trip_property(sub: str, name: str, orgs: list[str], roles: list[str]) -> None:
    c = codec(NEW)
    p = Principal(sub=sub, name=name, orgs=tuple(orgs), roles=tuple(roles), iat=1, exp=2**40)
    value = c.seal(p)
    assert COOKIE_OCTETS.fullmatch(value)
    assert c.open(value) == p


@given(st.text(max_size=300))
def test_open_never_raises_anything_else(value: str) -> None:
    with pytest.raises(CookieInvalid):
        codec(NEW).open(value)
