"""Authenticator: Cookie header parsing, codecs in order, anonymous fallback."""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from wsgate.auth.cookie import CookieCodec
from wsgate.auth.handshake import Authenticator, cookie_values
from wsgate.auth.keyring import KeyRing
from wsgate.auth.principal import ANONYMOUS, Principal
from wsgate.auth.securecookie import SecureCookieCodec
from wsgate.config import AuthConfig

KEY = os.urandom(32)
HASH, BLOCK = os.urandom(32), os.urandom(32)
DAN = Principal(sub="dan", org="acme", orgs=("acme",))


def auth(**kw: object) -> AuthConfig:
    return AuthConfig(keys=[base64.b64encode(KEY).decode()], **kw)  # type: ignore[arg-type]


def make(**kw: object) -> tuple[Authenticator, CookieCodec]:
    config = auth(**kw)
    ring = KeyRing.from_config(config)
    return Authenticator(config, ring), CookieCodec.from_config(config, ring)


def test_cookie_values_parsing() -> None:
    header = 'a=1; wsgate_session="v1" ;b=2;wsgate_session = v2;noequals; wsgate_session='
    assert list(cookie_values(header, "wsgate_session")) == ["v1", "v2", ""]
    assert list(cookie_values("", "x")) == []


def test_no_cookie_refused_or_anonymous() -> None:
    a, _ = make()
    assert a({}) is None
    assert a({"Cookie": "other=1"}) is None
    assert a.refusals["missing"] == 2
    a, _ = make(allow_anonymous=True)
    assert a({}) is ANONYMOUS


def test_valid_cookie_any_header_case_and_container() -> None:
    a, codec = make()
    value = codec.seal(DAN)
    for headers in (
        {"Cookie": f"x=1; wsgate_session={value}"},
        {"cookie": f"wsgate_session={value}"},
        {"COOKIE": f'wsgate_session="{value}"'},
        CIMultiDict([("cookie", "x=1"), ("Cookie", f"wsgate_session={value}")]),
    ):
        p = a.authenticate(headers)
        assert p is not None and p.sub == "dan"


def test_bad_cookie_refused_or_anonymous() -> None:
    a, codec = make()
    value = codec.seal(DAN)
    assert a({"Cookie": f"wsgate_session={value[:-2]}"}) is None
    assert a.refusals["invalid"] == 1
    a, _ = make(allow_anonymous=True)
    assert a({"Cookie": "wsgate_session=garbage"}) is ANONYMOUS


def test_expired_cookie_counted() -> None:
    a, codec = make()
    value = codec.seal(Principal(sub="dan", iat=1, exp=2))
    assert a({"Cookie": f"wsgate_session={value}"}) is None
    assert a.refusals["expired"] == 1


def test_cookie_without_user_is_refused() -> None:
    a, codec = make()
    assert a({"Cookie": f"wsgate_session={codec.seal(Principal(sub=''))}"}) is None


def test_first_good_value_of_duplicates_wins() -> None:
    a, codec = make()
    value = codec.seal(DAN)
    p = a({"Cookie": f"wsgate_session=stale; wsgate_session={value}"})
    assert p is not None and p.sub == "dan"


def test_other_cookie_name() -> None:
    a, codec = make(cookie_name="sess")
    value = codec.seal(DAN)
    assert a({"Cookie": f"wsgate_session={value}"}) is None
    assert a({"Cookie": f"sess={value}"}) == codec.open(value)


def test_securecookie_fallback() -> None:
    a, _ = make(
        securecookie_hash_key=base64.b64encode(HASH).decode(),
        securecookie_block_key=base64.b64encode(BLOCK).decode(),
    )
    go_value = SecureCookieCodec(HASH, BLOCK).encode("wsgate_session", DAN)
    assert a({"Cookie": f"wsgate_session={go_value}"}) == DAN
    forged = SecureCookieCodec(os.urandom(32), BLOCK).encode("wsgate_session", DAN)
    assert a({"Cookie": f"wsgate_session={forged}"}) is None


def test_securecookie_not_configured_is_not_tried() -> None:
    a, _ = make()
    go_value = SecureCookieCodec(HASH, BLOCK).encode("wsgate_session", DAN)
    assert a({"Cookie": f"wsgate_session={go_value}"}) is None


def test_key_reload_takes_effect(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(base64.b64encode(KEY).decode() + "\n")
    config = AuthConfig(keys_file=str(path))
    ring = KeyRing.from_config(config)
    a = Authenticator(config, ring)
    new = os.urandom(32)
    value = CookieCodec(KeyRing([new])).seal(DAN)
    assert a({"Cookie": f"wsgate_session={value}"}) is None
    path.write_text(base64.b64encode(new).decode() + "\n")
    ring.reload()
    assert a({"Cookie": f"wsgate_session={value}"}) == CookieCodec(KeyRing([new])).open(value)


class Hostile(Mapping[str, str]):
    def __getitem__(self, key: str) -> str:
        raise RuntimeError("boom")

    def __iter__(self):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    def __len__(self) -> int:
        return 1


@pytest.mark.parametrize(
    "headers",
    [
        Hostile(),
        {"Cookie": b"wsgate_session=x"},
        {"Cookie": None},
        {"Cookie": "wsgate_session=" + "A" * 100_000},
        {"Cookie": ";;;===;\x00\xff"},
    ],
)
def test_hostile_headers_never_raise(headers: Mapping[str, str]) -> None:
    a, _ = make()
    assert a(headers) is None


@given(st.text(max_size=500))
def test_any_header_text_never_raises(text: str) -> None:
    a, _ = make(allow_anonymous=True, securecookie_hash_key=base64.b64encode(HASH).decode())
    assert a({"Cookie": text}) is ANONYMOUS


def test_opened_cookies_are_shared_but_rechecked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time as _time

    path = tmp_path / "keys"
    path.write_text(base64.b64encode(KEY).decode() + "\n")
    config = AuthConfig(keys_file=str(path))
    ring = KeyRing.from_config(config)
    a = Authenticator(config, ring)
    codec = CookieCodec(ring)
    value = codec.seal(DAN)
    first = a({"Cookie": f"wsgate_session={value}"})
    second = a({"Cookie": f"wsgate_session={value}"})
    assert first is not None and first is second  # one Principal for every tab
    # expiry is checked on every use, cached or not
    now = int(_time.time())
    short = codec.seal(Principal(sub="eve", org="acme", iat=now, exp=now + 60))
    assert a({"Cookie": f"wsgate_session={short}"}) is not None  # opened and cached
    import wsgate.auth.cookie as cookie_module

    monkeypatch.setattr(cookie_module.time, "time", lambda: now + 3600.0)
    assert a({"Cookie": f"wsgate_session={short}"}) is None
    monkeypatch.undo()
    # a key taken out of the ring stops its cookies at once, cache or not
    path.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    ring.reload()
    assert a({"Cookie": f"wsgate_session={value}"}) is None


def test_securecookie_from_the_future_is_refused_every_time() -> None:
    """One rule for a gorilla cookie's ``iat``, opened fresh or from the cache."""
    import time as _time

    a, _ = make(
        securecookie_hash_key=base64.b64encode(HASH).decode(),
        securecookie_block_key=base64.b64encode(BLOCK).decode(),
    )
    now = int(_time.time())
    future = Principal(sub="dan", org="acme", iat=now + 3600, exp=now + 7200)
    value = SecureCookieCodec(HASH, BLOCK).encode("wsgate_session", future)
    verdicts = [a({"Cookie": f"wsgate_session={value}"}) for _ in range(3)]
    assert verdicts == [None, None, None]
    assert a.refusals["invalid"] == 3
    # within the clock-skew allowance it opens, and keeps opening
    near = Principal(sub="dan", org="acme", iat=now + 30, exp=now + 7200)
    value = SecureCookieCodec(HASH, BLOCK).encode("wsgate_session", near)
    assert [a({"Cookie": f"wsgate_session={value}"}) for _ in range(2)] == [near, near]


def test_with_tokens_on_the_handshake_defers_to_the_token_admission() -> None:
    """[auth.jwt]: a cookie still wins; a bearer token or nothing waits; a bad cookie alone is refused."""
    from wsgate.auth.handshake import AWAITING_AUTH
    from wsgate.auth.principal import AwaitingToken
    from wsgate.config import JwtConfig

    a, codec = make(jwt=JwtConfig(secret="k" * 32))
    good = f"wsgate_session={codec.seal(DAN)}"
    got = a({"Cookie": good, "Authorization": "Bearer t.t.t"})
    assert got is not None and got.sub == "dan" and got.auth == "cookie"
    waiting = a(CIMultiDict([("authorization", "Bearer a.b.c")]))
    assert isinstance(waiting, AwaitingToken) and waiting.token == "a.b.c" and waiting.anonymous
    assert "a.b.c" not in repr(waiting)
    assert a({}) is AWAITING_AUTH
    assert a({"Authorization": "Basic x"}) is AWAITING_AUTH  # not a bearer: as if none
    assert a({"Cookie": "wsgate_session=forged"}) is None
    # only the forged cookie counts as a refusal: waiting for a token is not one
    assert dict(a.refusals) == {"invalid": 1}
