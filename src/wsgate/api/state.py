"""What the internal API's handlers reach: the core, the route table, readiness."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from wsgate.auth.revocations import Revocations
from wsgate.cluster.bus import ClusterBus
from wsgate.core.gateway import Gateway
from wsgate.routing.table import RouteTable
from wsgate.tracing import Tracer

__all__ = ["BEARER_OK", "STATE", "ApiState", "bus_for", "json_error", "remote_bus"]


@dataclass
class ApiState:
    gateway: Gateway
    routes: RouteTable
    ready: bool = True
    """``False`` while the node drains: ``/readyz`` answers 503."""
    aws_secrets: dict[str, str] = field(default_factory=dict)
    """Access key id → secret for the ``@connections`` paths."""
    aws_region: str = "us-east-1"
    """``[api.aws] region``: the region ``@connections`` signatures must name."""
    bus: ClusterBus | None = None
    """In a cluster: reaches connections on other nodes."""
    revocations: Revocations | None = None
    """``POST /v1/revocations`` records here (``None``: answered 503)."""
    tracer: Tracer | None = None
    """Spans of ``POST /v1/publish`` (``None``: tracing off)."""


STATE: web.AppKey[ApiState] = web.AppKey("wsgate_state", ApiState)

BEARER_OK: web.RequestKey[bool] = web.RequestKey("wsgate_bearer_ok", bool)
"""Request key the authorize middleware sets (to ``True``) for a valid bearer key:
``@connections`` then needs no SigV4 signature."""


def json_error(status: int, message: str) -> web.Response:
    """An error answer: ``{"error": message}`` with ``status``."""
    return web.json_response({"error": message}, status=status)


def remote_bus(request: web.Request) -> ClusterBus | None:
    """The cluster bus when the connection ``{id}`` in the path lives on another node."""
    return bus_for(request.app[STATE], request.match_info["id"])


def bus_for(state: ApiState, cid: str) -> ClusterBus | None:
    """The cluster bus when connection ``cid`` lives on another node (its id's prefix)."""
    node = cid.partition(".")[0]
    if state.bus is None or node == state.gateway.node_id:
        return None
    return state.bus
