"""Keys and tokens for the JWT tests: every algorithm, and the forgeries.

Tokens are signed by PyJWT (the library the gateway verifies with) except the
forgeries, which PyJWT refuses to make: those are assembled by hand here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SECRET = "s" * 16 + "-hs256-test-secret-0123456789"  # >= 32 bytes


@dataclass
class KeyPair:
    alg: str
    private: Any
    kid: str

    @property
    def public_pem(self) -> str:
        return self.private.public_key().public_bytes(  # type: ignore[no-any-return]
            Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
        ).decode()

    def jwk(self) -> dict[str, Any]:
        """The public key as a JWK with ``kid`` and ``alg``."""
        algo = jwt.get_algorithm_by_name(self.alg)
        data: dict[str, Any] = json.loads(algo.to_jwk(self.private.public_key()))
        data.update(kid=self.kid, alg=self.alg, use="sig")
        return data

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        return jwt.encode(claims, self.private, algorithm=self.alg, headers={"kid": self.kid, **header})


def rsa_pair(kid: str = "rsa-1") -> KeyPair:
    return KeyPair("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048), kid)


def ec_pair(kid: str = "ec-1") -> KeyPair:
    return KeyPair("ES256", ec.generate_private_key(ec.SECP256R1()), kid)


def ed_pair(kid: str = "ed-1") -> KeyPair:
    return KeyPair("EdDSA", ed25519.Ed25519PrivateKey.generate(), kid)


def claims(sub: str = "dan", **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": sub, "iat": now, "exp": now + 600, **extra}


def hs256(payload: dict[str, Any], secret: str | bytes = SECRET, **header: Any) -> str:
    return jwt.encode(payload, secret, algorithm="HS256", headers=header or None)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(payload: dict[str, Any]) -> str:
    """``alg: none`` with an empty signature (RFC 7519 §6.1)."""
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(payload).encode())}."


def hmac_with(key: bytes, payload: dict[str, Any], kid: str | None = None) -> str:
    """An HS256 token whose HMAC key is ``key`` -- e.g. an RSA public key's PEM (the confusion)."""
    head: dict[str, Any] = {"alg": "HS256", "typ": "JWT"}
    if kid is not None:
        head["kid"] = kid
    signing = f"{_b64(json.dumps(head).encode())}.{_b64(json.dumps(payload).encode())}"
    mac = hmac.new(key, signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{_b64(mac)}"


def tampered(token: str) -> str:
    """The same token with its payload's ``sub`` changed and the signature kept."""
    head, body, sig = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    data["sub"] = "mallory"
    return f"{head}.{_b64(json.dumps(data).encode())}.{sig}"
