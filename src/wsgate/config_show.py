"""The effective configuration as plain data, secrets masked (``wsgate check``).

A value is masked when its key names a secret (``keys``, ``secret``,
``*_secret``, ``secret_*``, ``password``, ``token``, ``private_key``; not ``*_file``,
which holds a path): a
string becomes ``"***"``, a list of strings a list of ``"***"`` (so the count
shows). A URL's password (``redis://user:pw@host``) is masked wherever it
appears. The rule is by key name, so a secret added to the config later is
masked without touching this module.
"""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec

from wsgate.config import Config

__all__ = ["MASK", "masked"]

MASK: Final = "***"
_SECRET_KEY: Final = re.compile(
    r"(?:^|_)(?:keys|secret|password|token|private_key)(?:$|_)|^secret", re.IGNORECASE
)
_URL_PASSWORD: Final = re.compile(r"^([a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@/\s]+@", re.IGNORECASE)


def masked(config: Config) -> dict[str, Any]:
    """``config`` as JSON-ready data, every secret masked."""
    data: dict[str, Any] = msgspec.to_builtins(config)
    return {key: _mask(key, value) for key, value in data.items()}


def _mask(key: str, value: Any) -> Any:
    secret = bool(_SECRET_KEY.search(key)) and not key.endswith("_file")  # a path is no secret
    if isinstance(value, dict):
        return {k: _mask(k, v) for k, v in value.items()}
    if isinstance(value, list):
        return [MASK if secret and isinstance(v, str) else _mask(key, v) for v in value]
    if isinstance(value, str):
        if secret and value:
            return MASK
        return _URL_PASSWORD.sub(rf"\g<1>{MASK}@", value)
    return value
