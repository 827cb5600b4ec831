"""What every invoker does with a call's outcome: passive health, and failures logged once.

An instance that fails in a way that says it is down (refused, a timeout, a
5xx of a proxy, ``UNAVAILABLE``) is taken out for its back-off and logged
once; it coming back is logged once. Other failures are logged once per
service and error code until the service next answers, so a broken service
writes a line per kind of failure, not one per call. The callers count their
own statistics; the client only ever gets the :class:`ErrorCode`.

Bounded: at most :data:`MAX_LATCHED` services are remembered; past it the
memory is dropped whole (services come and go with discovery), which at worst
logs a failure again.
"""

from __future__ import annotations

import logging
from typing import Final

from wsgate.protocol.codes import ErrorCode
from wsgate.routing.instances import Instance, Service

__all__ = ["MAX_LATCHED", "Outcomes"]

MAX_LATCHED: Final = 1024
"""Services whose logged failure codes are remembered."""


class Outcomes:
    """Health and failure logging for one invoker; ``what`` names an instance in lines."""

    __slots__ = ("_latched", "_log", "_what")

    def __init__(self, log: logging.Logger, what: str) -> None:
        self._log = log
        self._what = what
        self._latched: dict[str, set[ErrorCode]] = {}
        """Failure codes already logged per service, cleared by its next answer."""

    def answered(self, service: Service, inst: Instance) -> None:
        """``inst`` answered: it is alive, and its service's failures may be logged again."""
        if inst.failures and service.mark_ok(inst):
            self._log.info("service %s: %s %s is back", service.name, self._what, inst.url)
        if self._latched:
            self._latched.pop(service.name, None)

    def failed(
        self,
        service: Service,
        inst: Instance | None,
        code: ErrorCode,
        reason: str,
        *,
        down: bool = False,
    ) -> ErrorCode:
        """Log ``code`` (see the module docstring); take ``inst`` out when ``down``. Returns it."""
        if down and inst is not None and service.mark_failed(inst):
            self._log.warning(
                "service %s: %s %s down for %.0fs after %s: %s",
                service.name,
                self._what,
                inst.url,
                inst.down_until - service.pool.clock(),
                code,
                reason,
            )
            return code
        latched = self._latched
        if len(latched) >= MAX_LATCHED and service.name not in latched:
            latched.clear()
        seen = latched.setdefault(service.name, set())
        if code not in seen:
            seen.add(code)
            where = inst.url if inst is not None else "-"
            self._log.warning("service %s (%s): %s: %s", service.name, where, code, reason)
        return code
