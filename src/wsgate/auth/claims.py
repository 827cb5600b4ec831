"""The one time rule every credential is judged by (issue 12, item 5).

A sealed cookie, a gorilla cookie and a JWT each carry ``iat``/``exp`` (a JWT
may add ``nbf``). :func:`time_fault` decides, for all three, on the first open
and again on every hit of a cache, whether those times hold at ``now``
within ``skew_s`` seconds of clock skew:

- ``exp`` missing (``<= 0``) while required -> :data:`NO_EXPIRY`;
- ``iat`` more than ``skew_s`` in the future -> :data:`ISSUED_IN_FUTURE`;
- ``nbf`` more than ``skew_s`` in the future -> :data:`NOT_YET_VALID`;
- ``exp`` more than ``skew_s`` in the past -> :data:`EXPIRED`;

checked in that order, so one credential always gets the same verdict. The
codecs map a fault to their own exception (:func:`~wsgate.auth.cookie.check_times`
for cookies, :mod:`wsgate.auth.jwt_token` for tokens); nothing here raises.
"""

from __future__ import annotations

import time
from typing import Final, Literal

__all__ = [
    "CLOCK_SKEW_S",
    "EXPIRED",
    "ISSUED_IN_FUTURE",
    "NOT_YET_VALID",
    "NO_EXPIRY",
    "TimeFault",
    "time_fault",
]

CLOCK_SKEW_S: Final = 60
"""Default seconds of clock skew allowed on either side (``auth.clock_skew_s``)."""

TimeFault = Literal["no expiry", "issued in the future", "not yet valid", "expired"]
"""Why a credential's times do not hold; ``None`` from :func:`time_fault` when they do."""

NO_EXPIRY: Final[TimeFault] = "no expiry"
ISSUED_IN_FUTURE: Final[TimeFault] = "issued in the future"
NOT_YET_VALID: Final[TimeFault] = "not yet valid"
EXPIRED: Final[TimeFault] = "expired"


def time_fault(
    *,
    iat: int,
    exp: int,
    nbf: int = 0,
    now: float | None,
    skew_s: int,
    require_exp: bool = True,
) -> TimeFault | None:
    """The fault of a credential's times at ``now`` (``time.time()`` when ``None``), or ``None``.

    ``0`` means "absent" for every time; an absent ``iat``/``nbf`` never
    faults, an absent ``exp`` faults only when ``require_exp``. Pure: the same
    arguments always give the same answer.
    """
    t = time.time() if now is None else now
    if require_exp and exp <= 0:
        return NO_EXPIRY
    if iat > t + skew_s:
        return ISSUED_IN_FUTURE
    if nbf > t + skew_s:
        return NOT_YET_VALID
    if exp > 0 and exp + skew_s < t:
        return EXPIRED
    return None
