"""KeyRing: sources, sizes, reload on SIGHUP, failures that keep the old keys."""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path

import pytest

from wsgate.auth.cookie import CookieCodec
from wsgate.auth.keyring import KEY_SIZE, KeyRing, key_id, new_key, parse_key
from wsgate.auth.principal import Principal
from wsgate.config import AuthConfig, from_mapping
from wsgate.exceptions import CookieInvalid, KeyRingError

ALICE = Principal(sub="alice", org="acme", orgs=("acme",))


def test_new_key_is_base64_of_32_random_bytes() -> None:
    a, b = new_key(), new_key()
    assert len(base64.b64decode(a, validate=True)) == KEY_SIZE
    assert a != b


def test_parse_key_accepts_url_alphabet_and_missing_padding() -> None:
    raw = bytes(range(250, 256)) * 5 + b"\xfb\xff"
    assert len(raw) == 32
    url = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert parse_key(url, "k") == raw
    assert parse_key(base64.b64encode(raw).decode(), "k") == raw


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_bad_key_size_names_the_key(size: int) -> None:
    bad = base64.b64encode(os.urandom(size)).decode()
    with pytest.raises(KeyRingError, match=r"auth\.keys\[1\].*32 bytes") as info:
        KeyRing.from_config(AuthConfig(keys=[new_key(), bad]))
    assert bad not in str(info.value) or size == 0  # never echo key material


def test_bad_base64_names_the_key() -> None:
    with pytest.raises(KeyRingError, match=r"auth\.keys\[0\]: not valid base64"):
        KeyRing.from_config(AuthConfig(keys=["not base64!!"]))


def test_no_key_at_all_is_a_configuration_error() -> None:
    with pytest.raises(KeyRingError, match="no session key"):
        KeyRing.from_config(AuthConfig())


def test_empty_ring_allowed_with_securecookie_but_cannot_seal() -> None:
    ring = KeyRing.from_config(AuthConfig(securecookie_hash_key=new_key()))
    assert len(ring) == 0
    with pytest.raises(KeyRingError, match="empty"):
        _ = ring.sealing


def test_env_var_reaches_auth_keys() -> None:
    k1, k2 = new_key(), new_key()
    config = from_mapping({}, env={"WSGATE_AUTH_KEYS": f"{k1},{k2}"})
    ring = KeyRing.from_config(config.auth)
    assert ring.key_ids == (key_id(base64.b64decode(k1)), key_id(base64.b64decode(k2)))


def test_first_key_seals_config_keys_before_file_keys(tmp_path: Path) -> None:
    k_cfg, k_file = new_key(), new_key()
    path = tmp_path / "keys"
    path.write_text(f"{k_file}\n")
    ring = KeyRing.from_config(AuthConfig(keys=[k_cfg], keys_file=str(path)))
    assert len(ring) == 2
    assert ring.sealing.kid == key_id(base64.b64decode(k_cfg))


def test_keys_file_comments_and_blank_lines(tmp_path: Path) -> None:
    k1, k2 = new_key(), new_key()
    path = tmp_path / "keys"
    path.write_text(f"# written by vault agent\n\n{k1}   # current\n  {k2}\n")
    ring = KeyRing.from_config(AuthConfig(keys_file=str(path)))
    assert ring.key_ids == (key_id(base64.b64decode(k1)), key_id(base64.b64decode(k2)))


def test_keys_file_bad_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"{new_key()}\n# c\n{base64.b64encode(b'short').decode()}\n")
    with pytest.raises(KeyRingError, match=r"keys line 3: a key must be 32 bytes"):
        KeyRing.from_config(AuthConfig(keys_file=str(path)))


def test_keys_file_missing_or_empty(tmp_path: Path) -> None:
    with pytest.raises(KeyRingError, match="cannot read"):
        KeyRing.from_config(AuthConfig(keys_file=str(tmp_path / "nope")))
    path = tmp_path / "keys"
    path.write_text("# nothing yet\n")
    with pytest.raises(KeyRingError, match="holds no key"):
        KeyRing.from_config(AuthConfig(keys_file=str(path)))


def test_reload_rotates_without_logging_anyone_out(tmp_path: Path) -> None:
    old, new = new_key(), new_key()
    path = tmp_path / "keys"
    path.write_text(f"{old}\n")
    ring = KeyRing.from_config(AuthConfig(keys_file=str(path)))
    codec = CookieCodec(ring)
    sealed_old = codec.seal(ALICE)

    path.write_text(f"{new}\n{old}\n")  # step 1 of a rotation: new key first
    ring.reload()
    assert ring.sealing.kid == key_id(base64.b64decode(new))
    sealed_new = codec.seal(ALICE)
    assert sealed_new[:8] != sealed_old[:8]  # another key id in the header
    assert codec.open(sealed_old).sub == "alice"
    assert codec.open(sealed_new).sub == "alice"

    path.write_text(f"{new}\n")  # step 2, after cookie_ttl_s: old key dropped
    ring.reload()
    assert codec.open(sealed_new).sub == "alice"
    with pytest.raises(CookieInvalid):
        codec.open(sealed_old)


def test_failed_reload_keeps_old_keys(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key = new_key()
    path = tmp_path / "keys"
    path.write_text(f"{key}\n")
    ring = KeyRing.from_config(AuthConfig(keys_file=str(path)))
    sealed = CookieCodec(ring).seal(ALICE)
    before = ring.key_ids

    path.write_text("garbage!\n")
    with pytest.raises(KeyRingError, match="line 1: not valid base64"):
        ring.reload()
    assert ring.key_ids == before
    assert CookieCodec(ring).open(sealed).sub == "alice"

    path.unlink()
    with caplog.at_level(logging.ERROR, logger="wsgate.auth"):
        assert ring.try_reload() is False
    assert "keeping the 1 current keys" in caplog.text
    assert ring.key_ids == before

    path.write_text(f"{new_key()}\n")
    assert ring.try_reload() is True
    assert ring.key_ids != before


def test_reload_without_file_is_a_no_op() -> None:
    ring = KeyRing.from_config(AuthConfig(keys=[new_key()]))
    before = ring.key_ids
    ring.reload()
    assert ring.key_ids == before


def test_raw_keys_and_repr_hide_material() -> None:
    raw = os.urandom(32)
    ring = KeyRing([raw])
    assert raw.hex() not in repr(ring)
    assert key_id(raw).hex() in repr(ring)
    with pytest.raises(KeyRingError, match="key 0"):
        KeyRing([b"short"])
