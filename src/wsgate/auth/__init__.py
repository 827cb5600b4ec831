"""Authentication and authorization: session cookies, connection tokens, key ring, policy.

- :class:`KeyRing` -- 32-byte keys; the first seals, all open (rotation).
- :class:`CookieCodec` -- AES-256-GCM session cookies carrying a :class:`Principal`.
- :class:`SecureCookieCodec` -- cookies issued by Go's gorilla/securecookie.
- :class:`Authenticator` -- handshake headers to a principal (or none).
- :class:`TokenVerifier` -- connection tokens (JWT) to a :class:`TokenPrincipal`,
  keys from the config or a JWKS (:class:`JwksCache`).
- :class:`TokenAdmission` -- the ``ADMITTING`` wait for ``@@wsgate/AUTH``.
- :func:`time_fault` -- the one rule for ``iat``/``nbf``/``exp`` of every credential.
- :class:`ChannelPolicy` -- who may join which channel, and the hubs joined on connect.

See ``docs/auth.md``.
"""

from __future__ import annotations

from wsgate.auth.claims import time_fault
from wsgate.auth.cookie import CookieCodec
from wsgate.auth.handshake import Authenticator
from wsgate.auth.jwt_gate import TokenAdmission
from wsgate.auth.jwt_keys import JwksCache
from wsgate.auth.jwt_token import TokenVerifier
from wsgate.auth.keyring import KeyRing, new_key
from wsgate.auth.policy import ChannelPolicy
from wsgate.auth.principal import ANONYMOUS, AwaitingToken, Principal, TokenPrincipal
from wsgate.auth.securecookie import SecureCookieCodec

__all__ = [
    "ANONYMOUS",
    "Authenticator",
    "AwaitingToken",
    "ChannelPolicy",
    "CookieCodec",
    "JwksCache",
    "KeyRing",
    "Principal",
    "SecureCookieCodec",
    "TokenAdmission",
    "TokenPrincipal",
    "TokenVerifier",
    "new_key",
    "time_fault",
]
