"""Procedure discovery: which service handles an action, and calling it.

- :class:`RouteTable` (``table.py``): action-type patterns to services, from
  the config and from self-registration, with expiry;
- :class:`Service` / :class:`Instance` (``instances.py``): round robin over
  healthy instances, passive health with back-off;
- :class:`HttpInvoker` (``http_invoker.py``): the signed POST and the mapping
  of its outcomes to results or ``UPSTREAM_*`` codes, over the lean pooled
  keep-alive HTTP/1.1 client of ``http1.py`` (pools, coalesced writes,
  pipelining), ``http1_conn.py`` (one connection) and ``http1_parse.py`` (its
  answer parser, no I/O);
- :class:`InvocationContext` (``context.py``), :class:`InvocationResult`,
  :class:`Publish`, :class:`Target` (``results.py``): the bodies exchanged;
- :func:`sign` / :func:`verify` (``signature.py``), :func:`ensure_traceparent`
  (``trace.py``).
"""

from __future__ import annotations

from wsgate.routing.context import InvocationContext
from wsgate.routing.http_invoker import HttpInvoker, InvokerStats
from wsgate.routing.instances import Instance, Service
from wsgate.routing.results import (
    InvocationResult,
    Publish,
    ResultAction,
    Target,
    decode_result,
)
from wsgate.routing.signature import sign, verify
from wsgate.routing.table import RouteTable
from wsgate.routing.trace import ensure_traceparent

__all__ = [
    "HttpInvoker",
    "Instance",
    "InvocationContext",
    "InvocationResult",
    "InvokerStats",
    "Publish",
    "ResultAction",
    "RouteTable",
    "Service",
    "Target",
    "decode_result",
    "ensure_traceparent",
    "sign",
    "verify",
]
