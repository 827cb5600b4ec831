"""gorilla/securecookie interop: real Go vectors, byte layout, maxAge, claims."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given
from hypothesis import strategies as st

from wsgate.auth.principal import Principal
from wsgate.auth.securecookie import DEFAULT_MAX_AGE_S, SecureCookieCodec
from wsgate.config import AuthConfig
from wsgate.exceptions import ConfigError, CookieExpired, CookieInvalid

# Vectors made by gorilla/securecookie in Go (2014), published in the tests of
# a third-party Python port. Hash key == block key (32 bytes: AES-256),
# cookie name "glowing-cookie". The first carries a gob-serialized Go string
# (0x22 = message length, 0x0c = gob type id of string, 0x00, 0x1f = length):
# only Go's encoding/gob writes that, so the vector is Go's own output.
GO_KEY = b"6vH34egsus5RXb68GeI4Cgj09TY78Sd1"
GO_NAME = "glowing-cookie"
GO_GOB = (
    "MTQxNDUxNDQ3MXxoMUJ6aER0RjA2cFFNZnFjT1U0eU1Kd3lPaVJBSGNPTnIxOUhwT1pmVFBZVG56RHkxeXQt"
    "VHN2eDl0Q2l5dUxfbGZkUnz2Kl9N5GD6yCn1WYP-D5XhpKbowfzqsdQzZMlkdKaWzg=="
)
GO_GOB_TIME = 1414514471
GO_RAW = (
    "MTQxNDU4NTAwNHxBS0xjb1NxMXBiWVNuY21zZnpVTUd5SFlHX01lenNzTEZJNkU3UDBtelVhbS1iZF93WEx6"
    "dVVlME5wdWktamM9fBCJmVuW8yTRpRrFEsTWDPgiMx47QauAN_SDXIbchbYd"
)
GO_RAW_TIME = 1414585004

HASH, BLOCK = os.urandom(32), os.urandom(32)
CAROL = Principal(sub="carol", sid="s9", org="acme", orgs=("acme",), roles=("admin",))


def go_codec(**kw: int) -> SecureCookieCodec:
    return SecureCookieCodec(GO_KEY, GO_KEY, **kw)


def test_go_vector_gob() -> None:
    payload = go_codec(max_age_s=0).decode_bytes(GO_NAME, GO_GOB)
    assert payload == b'"\x0c\x00\x1fsuper secret data in the cookie'


def test_go_vector_raw() -> None:
    payload = go_codec().decode_bytes(GO_NAME, GO_RAW, now=GO_RAW_TIME + 5)
    assert payload == b"super secret data in the cookie"


def test_go_vector_max_age() -> None:
    codec = go_codec()  # gorilla's default MaxAge: 30 days
    assert codec.decode_bytes(GO_NAME, GO_GOB, now=GO_GOB_TIME + DEFAULT_MAX_AGE_S)
    with pytest.raises(CookieExpired):
        codec.decode_bytes(GO_NAME, GO_GOB, now=GO_GOB_TIME + DEFAULT_MAX_AGE_S + 1)


def test_go_vector_min_age() -> None:
    codec = go_codec(max_age_s=0, min_age_s=100)
    with pytest.raises(CookieInvalid, match="too new"):
        codec.decode_bytes(GO_NAME, GO_GOB, now=GO_GOB_TIME + 99)
    assert codec.decode_bytes(GO_NAME, GO_GOB, now=GO_GOB_TIME + 100)


def test_go_vector_wrong_name_or_key() -> None:
    with pytest.raises(CookieInvalid):
        go_codec(max_age_s=0).decode_bytes("other", GO_GOB)
    with pytest.raises(CookieInvalid):
        SecureCookieCodec(b"x" * 32, GO_KEY, max_age_s=0).decode_bytes(GO_NAME, GO_GOB)


def test_go_vector_gob_claims_are_refused_not_crashed() -> None:
    with pytest.raises(CookieInvalid, match="bad claims"):
        go_codec(max_age_s=0).open(GO_NAME, GO_GOB)


def test_encode_layout_matches_gorilla_source() -> None:
    codec = SecureCookieCodec(HASH, BLOCK)
    value = codec.encode("wsgate_session", CAROL, now=1_700_000_000)
    # padded base64url: Go's base64.URLEncoding
    assert len(value) % 4 == 0
    outer = base64.urlsafe_b64decode(value)
    date, inner, mac = outer.split(b"|", 2)
    assert date == b"1700000000"
    assert mac == hmac.new(HASH, b"wsgate_session|" + date + b"|" + inner, hashlib.sha256).digest()
    encrypted = base64.urlsafe_b64decode(inner)
    iv, ct = encrypted[:16], encrypted[16:]
    dec = Cipher(algorithms.AES(BLOCK), modes.CTR(iv)).decryptor()
    plain = dec.update(ct) + dec.finalize()
    # json.Encoder.Encode appends a newline
    assert plain.endswith(b"}\n")
    assert plain.startswith(b'{"sub":"carol"')


def test_round_trip_and_hash_only() -> None:
    for codec in (SecureCookieCodec(HASH, BLOCK), SecureCookieCodec(HASH)):
        assert codec.open("n", codec.encode("n", CAROL)) == CAROL


def test_go_style_claims_with_nulls_and_extra_fields() -> None:
    codec = SecureCookieCodec(HASH, BLOCK)
    go_json = b'{"sub":"u1","org":"acme","orgs":null,"teams":null,"roles":["r"],"extra":1}\n'
    value = codec.encode_bytes("n", go_json)
    assert codec.open("n", value) == Principal(sub="u1", org="acme", roles=("r",))


def test_claims_exp_honoured() -> None:
    codec = SecureCookieCodec(HASH, BLOCK)
    p = Principal(sub="u", exp=1000)
    value = codec.encode("n", p, now=900)
    assert codec.open("n", value, now=1000).sub == "u"
    with pytest.raises(CookieExpired):
        codec.open("n", value, now=2000)


def test_tampering_is_invalid() -> None:
    codec = SecureCookieCodec(HASH, BLOCK)
    outer = bytearray(base64.urlsafe_b64decode(codec.encode("n", CAROL)))
    for i in range(len(outer)):
        forged = bytearray(outer)
        forged[i] ^= 0x04
        with pytest.raises(CookieInvalid):
            codec.open("n", base64.urlsafe_b64encode(bytes(forged)).decode())


@pytest.mark.parametrize(
    "value",
    [
        "",
        "!!!!",
        "YWJj",  # "abc": no pipes
        base64.urlsafe_b64encode(b"1|abc|" + bytes(32)).decode(),
        base64.urlsafe_b64encode(b"1|abc|" + bytes(32)).decode().rstrip("="),  # Go needs padding
        "A" * 5000,
        "é",
    ],
)
def test_malformed(value: str) -> None:
    with pytest.raises(CookieInvalid):
        SecureCookieCodec(HASH, BLOCK).open("n", value)


def test_bad_timestamp_with_valid_mac() -> None:
    codec = SecureCookieCodec(HASH)
    for date in (b"abc", b"1_000", b" 1", b"99999999999999999999"):
        signed = b"n|" + date + b"|" + base64.urlsafe_b64encode(b"{}")
        mac = hmac.new(HASH, signed, hashlib.sha256).digest()
        value = base64.urlsafe_b64encode(signed[2:] + b"|" + mac).decode()
        with pytest.raises(CookieInvalid, match="invalid timestamp"):
            codec.decode_bytes("n", value)


def test_short_ciphertext_with_valid_mac() -> None:
    codec = SecureCookieCodec(HASH, BLOCK)
    signed = b"n|1700000000|" + base64.urlsafe_b64encode(bytes(16))
    mac = hmac.new(HASH, signed, hashlib.sha256).digest()
    value = base64.urlsafe_b64encode(signed[2:] + b"|" + mac).decode()
    with pytest.raises(CookieInvalid, match="decrypted"):
        codec.decode_bytes("n", value, now=1700000000)


def test_from_config() -> None:
    assert SecureCookieCodec.from_config(AuthConfig()) is None
    h, b = base64.b64encode(HASH).decode(), base64.b64encode(BLOCK).decode()
    codec = SecureCookieCodec.from_config(
        AuthConfig(securecookie_hash_key=h, securecookie_block_key=b)
    )
    assert codec is not None
    assert SecureCookieCodec(HASH, BLOCK).open("n", codec.encode("n", CAROL)) == CAROL
    with pytest.raises(ConfigError, match=r"securecookie_block_key.*16, 24 or 32"):
        SecureCookieCodec.from_config(
            AuthConfig(securecookie_hash_key=h, securecookie_block_key="YWJj")
        )
    with pytest.raises(ConfigError, match=r"securecookie_hash_key.*base64"):
        SecureCookieCodec.from_config(AuthConfig(securecookie_hash_key="!!"))
    with pytest.raises(ConfigError, match=r"securecookie_hash_key.*required"):
        SecureCookieCodec.from_config(AuthConfig(securecookie_block_key=b))


@given(st.text(max_size=300))
def test_open_never_raises_anything_else(value: str) -> None:
    with pytest.raises(CookieInvalid):
        SecureCookieCodec(HASH, BLOCK).open("n", value)


def test_claims_iat_in_the_future_is_invalid() -> None:
    codec = SecureCookieCodec(HASH, BLOCK)
    value = codec.encode("n", Principal(sub="u", iat=10_000), now=1000)
    with pytest.raises(CookieInvalid, match="future"):
        codec.open("n", value, now=1000)
    assert codec.open("n", value, now=10_000 - 60).sub == "u"  # the skew allowance
