"""Authentication and authorization: session cookies, key ring, channel policy.

- :class:`KeyRing` -- 32-byte keys; the first seals, all open (rotation).
- :class:`CookieCodec` -- AES-256-GCM session cookies carrying a :class:`Principal`.
- :class:`SecureCookieCodec` -- cookies issued by Go's gorilla/securecookie.
- :class:`Authenticator` -- handshake headers to a principal (or none).
- :class:`ChannelPolicy` -- who may join which channel, and the hubs joined on connect.

See ``docs/auth.md``.
"""

from __future__ import annotations

from wsgate.auth.cookie import CookieCodec
from wsgate.auth.handshake import Authenticator
from wsgate.auth.keyring import KeyRing, new_key
from wsgate.auth.policy import ChannelPolicy
from wsgate.auth.principal import ANONYMOUS, Principal
from wsgate.auth.securecookie import SecureCookieCodec

__all__ = [
    "ANONYMOUS",
    "Authenticator",
    "ChannelPolicy",
    "CookieCodec",
    "KeyRing",
    "Principal",
    "SecureCookieCodec",
    "new_key",
]
