from __future__ import annotations

import hashlib
import hmac

from wsgate.routing.signature import sign, verify

BODY = b'{"action":{"type":"orders/GET"},"context":{"connectionId":"n1.a"}}'


def test_sign_format_matches_the_documented_scheme() -> None:
    header = sign("s3cret", BODY, 1764130000)
    expected = hmac.new(b"s3cret", b"1764130000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1764130000,v1={expected}"


def test_verify_accepts_a_fresh_signature() -> None:
    assert verify("s3cret", sign("s3cret", BODY, 1000), BODY, now=1000)
    assert verify(b"s3cret", sign("s3cret", BODY, 1000), BODY, now=1299)


def test_verify_rejects_tampered_body_wrong_secret_and_stale_time() -> None:
    header = sign("s3cret", BODY, 1000)
    assert not verify("s3cret", header, BODY.replace(b"n1.a", b"n1.b"), now=1000)
    assert not verify("other", header, BODY, now=1000)
    assert not verify("s3cret", header, BODY, now=1301)
    assert not verify("s3cret", header, BODY, now=699)
    assert verify("s3cret", header, BODY, now=1301, tolerance_s=400)


def test_verify_rejects_malformed_headers() -> None:
    good = sign("s", BODY, 1000)
    digest = good.split("v1=")[1]
    for header in [
        None,
        "",
        "garbage",
        f"v1={digest}",  # no t
        "t=1000",  # no v1
        f"t=abc,v1={digest}",
        f"t=1000,t=1000,v1={digest}",
        f"t=-1000,v1={digest}",
        "t=1000," + ",".join(["v1=00"] * 2000),  # over-long
    ]:
        assert not verify("s", header, BODY, now=1000), header
    assert not verify("", sign("", BODY, 1000), BODY, now=1000)  # empty secrets never verify


def test_rotation_several_v1_entries_and_several_secrets() -> None:
    old = sign("old", BODY, 1000).split("v1=")[1]
    new = sign("new", BODY, 1000).split("v1=")[1]
    header = f"t=1000,v1={old},v1={new}"
    assert verify("new", header, BODY, now=1000)
    assert verify("old", header, BODY, now=1000)
    assert not verify("third", header, BODY, now=1000)
    assert verify(["third", "new"], sign("new", BODY, 1000), BODY, now=1000)
    # unknown schemes are ignored, not fatal
    assert verify("new", f"t=1000,v0=abc,v1={new}", BODY, now=1000)


def test_digest_is_hmac_sha256_for_every_key_length_and_second() -> None:
    # The HMAC is computed from two pre-keyed sha256 states (signature._Keyed), with the
    # "<t>." prefix cached per second: it must give hmac's bytes for keys shorter than,
    # as long as and longer than SHA-256's 64-byte block, str or bytes, whatever t comes.
    for n in (0, 1, 12, 63, 64, 65, 130):
        for key in ("k" * n, bytes(range(n))):
            raw = key.encode() if isinstance(key, str) else key
            for t in (1000, 1000, 1001, 999, 1000):
                for body in (b"", BODY, BODY * 20):
                    expected = hmac.new(raw, b"%d." % t + body, hashlib.sha256).hexdigest()
                    assert sign(key, body, t) == f"t={t},v1={expected}"
