"""Composition root: config in, a running node out.

:class:`Node` builds the backends, the core, the transport, the internal
API, (for any broker but the bare ``memory://``) the cluster bus and (when
``[discovery.nats] url`` or a ``nats://`` broker names a NATS server) the NATS
services' connection, invoker and discovery from a
:class:`~wsgate.config.Config`, starts them, and drains them. The command
line (:mod:`wsgate.cli`) runs a node until a signal; tests start a
:class:`Node` in-process on port 0. This module installs no signal handler,
prints nothing and never imports the CLI.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import secrets
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from aiohttp import web

from wsgate.api.app import build_app
from wsgate.api.state import ApiState
from wsgate.api.tap import Taps
from wsgate.auth.channel_tokens import ChannelTokens
from wsgate.auth.handshake import Authenticator
from wsgate.auth.jwt_gate import TokenAdmission
from wsgate.auth.keyring import KeyRing
from wsgate.auth.policy import ChannelPolicy
from wsgate.auth.revocations import Revocations
from wsgate.auth.sessions import SessionLifetime
from wsgate.backends import open_backend
from wsgate.backends.acks import open_acks
from wsgate.backends.memory import MemoryHistory, MemoryRateLimits
from wsgate.backends.revocations import open_revocations
from wsgate.cluster.acks import SharedAcks
from wsgate.cluster.bus import ClusterBus
from wsgate.config import Config, nats_services_url, parse_listen
from wsgate.core.acks import AckSettings
from wsgate.core.gateway import Admission, Attached, Gateway, Observer
from wsgate.core.limits import Limiter, parse_rate
from wsgate.core.namespaces import Namespaces
from wsgate.core.presence import PresenceBatcher
from wsgate.exceptions import BackendError, ConfigError
from wsgate.lifecycle import LifecycleLog
from wsgate.logs import event
from wsgate.logs.recent import RecentErrors
from wsgate.protocol.codes import CloseCode
from wsgate.routing.grpc_discovery import GrpcDiscovery
from wsgate.routing.grpc_invoker import GrpcInvoker, GrpcTarget
from wsgate.routing.http_invoker import HttpInvoker
from wsgate.routing.instances import Transport
from wsgate.routing.invoker import Invoker
from wsgate.routing.table import RouteTable
from wsgate.tracing import Tracer, from_config
from wsgate.transport.base import HttpResponse
from wsgate.transport.control import ControlLimit
from wsgate.transport.server import Listener, build_ssl_context, start_listener
from wsgate.typing import NodeId
from wsgate.upstream import Upstream

if TYPE_CHECKING:  # nats-py and grpcio are optional extras: imported only when used
    from nats.aio.client import Client as NatsClient

    from wsgate.api.grpc_server import GrpcApi
    from wsgate.metrics import NodeMetrics
    from wsgate.routing.nats_discovery import NatsDiscovery

__all__ = ["Node", "PlainGet", "api_keys"]

log = logging.getLogger("wsgate.node")

RECENT_ERRORS = 100
"""Entries of a node's recent-errors ring (``GET /v1/admin/errors``)."""

PlainGet = Callable[[str, Mapping[str, str]], HttpResponse | None]
"""Answers plain HTTP GETs on the public listener (the demo's pages)."""


async def _close_each(*steps: Callable[[], Awaitable[None]]) -> None:
    """Await every step, even after one raised; then raise the first error."""
    first: BaseException | None = None
    for step in steps:
        try:
            await step()
        except BaseException as exc:  # re-raised below, after the others ran
            if first is None:
                first = exc
    if first is not None:
        raise first


def _cannot_listen(key: str, listen: str, exc: OSError) -> ConfigError:
    """A bind failure as one line naming the key and address (no traceback at start-up)."""
    if exc.errno == errno.EADDRINUSE:
        reason = "address in use (another node or program has it; set another port)"
    else:
        reason = exc.strerror or str(exc)
    return ConfigError(key, f"cannot listen on {listen}: {reason}")


def _control_limit(config: Config) -> ControlLimit | None:
    """Pings and pongs get the inbound message rate (``limits.default_rate``)."""
    limits = config.limits
    rate = parse_rate(limits.default_rate, limits.default_burst)
    if rate is None:
        return None
    return ControlLimit(rate.interval, rate.tolerance, limits.abuse_refusals, limits.abuse_window_s)


def api_keys(config: Config) -> list[str]:
    """The internal API's keys: ``api.keys`` and the lines of ``api.keys_file``.

    Raises :class:`~wsgate.exceptions.ConfigError` (``api.keys_file``) when the
    file cannot be read.
    """
    keys = [k for k in config.api.keys if k]
    if config.api.keys_file:
        try:
            with open(config.api.keys_file, encoding="utf-8") as f:
                keys += [line.strip() for line in f if line.strip() and not line.startswith("#")]
        except OSError as exc:
            raise ConfigError("api.keys_file", f"cannot read: {exc.strerror}") from None
    return keys


def _ssl_context(config: Config) -> ssl.SSLContext | None:
    server = config.server
    if not server.tls_cert:
        return None
    try:
        return build_ssl_context(server.tls_cert, server.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("server.tls_cert", f"cannot load certificate: {exc}") from None


def _grpc_targets(config: Config) -> list[GrpcTarget]:
    """The ``[[grpc]]`` targets, their ``ca_file`` read now.

    Raises :class:`~wsgate.exceptions.ConfigError` (``grpc.<i>.ca_file``) when
    a file cannot be read.
    """
    targets = []
    for i, t in enumerate(config.grpc):
        roots = None
        if t.ca_file:
            try:
                with open(t.ca_file, "rb") as f:
                    roots = f.read()
            except OSError as exc:
                raise ConfigError(f"grpc.{i}.ca_file", f"cannot read: {exc.strerror}") from None
        targets.append(GrpcTarget(t.target, t.tls, roots, t.max_message_bytes))
    return targets


class Node:
    """One gateway node. Call :meth:`start`, later :meth:`stop`."""

    def __init__(
        self, config: Config, *, plain_get: PlainGet | None = None, tracer: Tracer | None = None
    ) -> None:
        """``tracer`` replaces the one ``[tracing]`` would make (tests: an in-memory exporter)."""
        self.config = config
        self.tracer = tracer if tracer is not None else from_config(config.tracing)
        """Spans of routed calls and API publishes; ``None`` when tracing is off."""
        self.lifecycle = LifecycleLog(config.log.lifecycle_lines_per_s)
        """Writes the connection lifecycle lines (an observer, and the gateway's ``closes``)."""
        self.metrics: NodeMetrics | None = None
        """Prometheus ``/metrics`` (``[metrics] enabled``); ``None`` when off."""
        if config.metrics.enabled:
            from wsgate.metrics import NodeMetrics  # prometheus-client: only when on

            self.metrics = NodeMetrics()
        self.node_id = NodeId(config.server.node_id or f"n{secrets.token_hex(3)}")
        self.clustered = config.broker.url != "memory://"
        """Any broker but the bare ``memory://`` runs the cluster bus."""
        self.bus: ClusterBus | None = None
        self.shared_acks: SharedAcks | None = None
        """The cluster's ledger of acknowledged deliveries (:mod:`wsgate.cluster.acks`)."""
        self.keyring = KeyRing.from_config(config.auth)
        self.authenticate = Authenticator(config.auth, self.keyring)
        self.policy = ChannelPolicy(config.channels, config.auth.allow_anonymous)
        self._plain_get = plain_get
        self._ssl = _ssl_context(config)
        self._api_keys = api_keys(config)
        self.routes = RouteTable.from_config(
            config,
            registered_secret=config.routing.registered_secret,
            registered_timeout_ms=config.routing.registered_timeout_ms,
            registered_pipeline=config.routing.registered_pipeline,
        )
        self.invoker = HttpInvoker()
        self.grpc_invoker: GrpcInvoker | None = None
        """Calls to the ``[[grpc]]`` targets (``None`` without any)."""
        self.grpc_discovery: GrpcDiscovery | None = None
        if config.grpc:
            self.grpc_invoker = GrpcInvoker(_grpc_targets(config))
            self.grpc_discovery = GrpcDiscovery(self.routes, self.grpc_invoker, config.grpc)
        self.gateway: Gateway | None = None
        self.upstream: Upstream | None = None
        self.listener: Listener | None = None
        self.api: ApiState | None = None
        self._api_runner: web.AppRunner | None = None
        self._api_port = 0
        self.grpc_api: GrpcApi | None = None
        """The gRPC API (``[api] grpc_listen``; ``None`` when off or stopped)."""
        self._grpc_api_port = 0
        self._sweeper: asyncio.Task[None] | None = None
        self.revocations: Revocations | None = None
        """The cluster's revocations, cached (open once :meth:`start` ran)."""
        self._revocation_poll: asyncio.Task[None] | None = None
        self.recent_errors = RecentErrors(RECENT_ERRORS)
        """The last warnings and errors of the ``wsgate`` loggers while this node runs
        (``GET /v1/admin/errors``); added to the logger on start, removed on stop."""
        # NATS services: the connection, its invoker and discovery (docs/routing.md, "NATS").
        self.nats_url = nats_services_url(config)
        """The NATS services' connection URL; ``None``: no NATS invoker, no discovery."""
        self._nats: NatsClient | None = None
        self.nats_invoker: Invoker | None = None
        self.discovery: NatsDiscovery | None = None

    @property
    def api_port(self) -> int:
        return self._api_port

    @property
    def grpc_api_port(self) -> int:
        """The gRPC API's bound port; 0 when ``[api] grpc_listen`` is unset."""
        return self._grpc_api_port

    @property
    def api_url(self) -> str:
        host, _ = parse_listen("api.listen", self.config.api.listen)
        return f"http://{host}:{self._api_port}"

    @property
    def port(self) -> int:
        assert self.listener is not None, "start() first"
        return self.listener.port

    @property
    def url(self) -> str:
        scheme = "wss" if self._ssl else "ws"
        host, _ = parse_listen("server.listen", self.config.server.listen)
        return f"{scheme}://{host}:{self.port}{self.config.server.path}"

    async def start(self) -> None:
        """Build the core on the running loop and start listening.

        When it raises, the NATS services' connection and the acknowledgement
        store's it opened are closed.
        """
        logging.getLogger("wsgate").addHandler(self.recent_errors)
        try:
            await self._start()
        except BaseException:
            logging.getLogger("wsgate").removeHandler(self.recent_errors)
            try:
                await self._close_nats_services()
            finally:
                await self._close_acks()
            raise

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        config = self.config
        presence = PresenceBatcher(
            loop, batch_ms=config.presence.batch_ms, large_batch_ms=config.presence.large_batch_ms
        )
        namespaces = Namespaces(config.namespaces, config.history, config.presence)
        invokers: dict[Transport, Invoker] = {}
        if self.grpc_invoker is not None:
            invokers["grpc"] = self.grpc_invoker
        if self.nats_url is not None:
            invokers["nats"] = await self._open_nats_services(self.nats_url)
        self.upstream = Upstream(
            self.routes,
            self.invoker,
            invokers=invokers,
            max_in_flight=config.routing.max_in_flight,
            max_in_flight_per_user=config.routing.max_in_flight_per_user,
            authorize_ttl_s=config.routing.authorize_cache_s,
            max_streams=config.routing.max_streams,
            max_streams_per_user=config.routing.max_streams_per_user,
            tracer=self.tracer,
            observe_call=None if self.metrics is None else self.metrics.observe_call,
        )
        box = config.inbox
        bus = await self._open_cluster() if self.clustered else None
        await self._open_revocations()
        admission: Admission = self.upstream if bus is None else bus.admission
        tokens = self.authenticate.tokens
        self.tokens: TokenAdmission | None = None
        if tokens is not None:
            # Outermost: a token connection is known before any hook or cap sees it.
            self.tokens = admission = TokenAdmission(
                tokens,
                inner=admission,
                first_message_ms=config.auth.first_message_ms,
                allow_anonymous=config.auth.allow_anonymous,
                sign_in_url=config.auth.sign_in_url,
            )
        attached: list[Attached] = [self.upstream] if bus is None else [self.upstream, bus]
        if self.tokens is not None:
            attached.append(self.tokens)
        self.sessions = SessionLifetime(
            loop,
            tokens,
            warning_s=config.auth.expiry_warning_s,
            skew_s=config.auth.clock_skew_s,
            sign_in_url=config.auth.sign_in_url,
            refresh_url=config.auth.refresh_url,
        )
        self.channel_tokens = ChannelTokens(
            self.policy, tokens, loop, skew_s=config.auth.clock_skew_s
        )
        attached += [self.sessions, self.channel_tokens]
        observers: list[Observer] = [self.upstream] if bus is None else [self.upstream, bus]
        observers += [self.sessions, self.channel_tokens, self.lifecycle]
        self._history = MemoryHistory(
            config.history.size,
            config.history.ttl_s,
            max_channels=config.history.max_channels,
            limits=namespaces.history_of,
        )
        self._inbox = (
            MemoryHistory(box.max_messages, box.ttl_s, max_channels=box.max_users)
            if box.enabled
            else None
        )
        # Every collaborator is given to the gateway here; the order of
        # observers and gates is the order they are told and asked in.
        self.gateway = Gateway(
            node_id=self.node_id,
            policy=self.policy,
            scheduler=loop,
            history=self._history,
            inbox=self._inbox,
            acks=None if not box.ack_timeout_ms else AckSettings(
                box.ack_timeout_ms / 1000, box.ack_ttl_s, box.max_deliveries
            ),
            acked=self.upstream.delivered,
            ledger=self.shared_acks,
            relays=[rule.match for rule in config.relays],
            presence=presence,
            namespaces=namespaces,
            limiter=Limiter(config.limits, config.rate_limits, MemoryRateLimits(), loop.time),
            upstream=self.upstream,
            observers=observers,
            closes=self.lifecycle,
            gates=[self.upstream] if bus is None else [self.upstream, bus],
            admission=admission,
            intercept=self.tokens,
            grants=self.channel_tokens,
            bus=bus,
            shared=None if bus is None else bus.limits,
            attached=attached,
            max_depth=config.limits.max_json_depth,
            heartbeat_ms=config.server.heartbeat_ms,
            max_channels=config.server.max_channels_per_connection,
        )
        if self.shared_acks is not None:
            self.shared_acks.start()
        if bus is not None:
            self.bus = bus
            await bus.start()
        if self.metrics is not None:
            from wsgate.metrics import Parts

            self.metrics.watch(
                Parts(self.gateway, self.lifecycle, self._history, lambda: self.listener, bus)
            )
        await self._start_api()
        if config.api.grpc_listen:
            await self._start_grpc_api()
        if self.grpc_discovery is not None:
            await self.grpc_discovery.start()
        self._sweeper = loop.create_task(self._sweep())
        if self.clustered:
            self._revocation_poll = loop.create_task(self._poll_revocations())
        try:
            self.listener = await start_listener(
                handler=self.gateway,
                config=config.server,
                authenticate=self.authenticate,
                sign_in_url=config.auth.sign_in_url,
                plain_get=self._plain_get,
                ssl_context=self._ssl,
                control=_control_limit(config),
            )
        except OSError as exc:
            raise _cannot_listen("server.listen", config.server.listen, exc) from None
        # A channel's (a hub's) deliveries of one iteration go out as one write per member.
        flusher = self.listener.flusher
        self.gateway.fanout.channel_send = flusher.publish
        self.gateway.fanout.hub_send = flusher.publish_hub
        self.gateway.pool.settle = flusher.settle

    async def _open_nats_services(self, url: str) -> Invoker:
        """Connect to NATS services; start discovery (``[discovery.nats] discover``).

        Raises :class:`~wsgate.exceptions.ConfigError` (``discovery.nats.url``)
        when the server cannot be reached within the connect timeout.
        """
        from nats.errors import Error as NatsError

        from wsgate.backends.nats import connect_nats
        from wsgate.routing.nats_discovery import NatsDiscovery
        from wsgate.routing.nats_invoker import NatsInvoker

        settings = self.config.discovery.nats
        try:
            nc = await connect_nats(url, name=f"wsgate {self.node_id} services")
        except (OSError, NatsError) as exc:
            key = "discovery.nats.url" if settings.url else "broker.url"
            reason = str(exc) or type(exc).__name__
            raise ConfigError(key, f"cannot connect to {url}: {reason}") from None
        self._nats = nc
        invoker = NatsInvoker(nc, max_response_bytes=settings.max_response_bytes)
        self.nats_invoker = invoker
        if settings.discover:
            self.discovery = NatsDiscovery(
                nc,
                self.routes,
                interval_s=settings.interval_s,
                window_s=settings.window_ms / 1000,
                timeout_ms=settings.timeout_ms,
                max_concurrency=settings.max_concurrency,
                max_services=settings.max_services,
                max_endpoints=settings.max_endpoints,
                max_actions=settings.max_actions,
                max_info_bytes=settings.max_info_bytes,
            )
            self.discovery.start()
        return invoker

    async def _close_nats_services(self) -> None:
        """Stop discovery, end the NATS calls in flight, close the connection (every step)."""
        try:
            if self.discovery is not None:
                discovery, self.discovery = self.discovery, None
                await discovery.aclose()
        finally:
            try:
                if self.nats_invoker is not None:
                    invoker, self.nats_invoker = self.nats_invoker, None
                    await invoker.aclose()
            finally:
                if self._nats is not None:
                    from wsgate.backends.nats import close_client

                    nc, self._nats = self._nats, None
                    await close_client(nc)

    async def _open_cluster(self) -> ClusterBus:
        """Connect the backend and build the bus (started once the gateway has it)."""
        config = self.config
        try:
            backend = await open_backend(
                config.broker.url,
                prefix=config.broker.prefix,
                node=self.node_id,
                history_size=config.history.size,
                history_ttl_s=config.history.ttl_s,
                history_max_channels=config.history.max_channels,
                inbox_size=config.inbox.max_messages,
                inbox_ttl_s=config.inbox.ttl_s,
                inbox_max_users=config.inbox.max_users,
            )
        except BackendError as exc:
            raise ConfigError("broker.url", f"cannot connect: {exc}") from None
        if config.inbox.ack_timeout_ms:
            try:
                self.shared_acks = await self._open_acks()
            except BaseException:
                await backend.close()
                raise
        return ClusterBus(
            backend,
            self.routes,
            node_id=self.node_id,
            admission=self.upstream,
            presence_ttl_s=config.broker.presence_ttl_s,
            max_connections_per_user=config.limits.max_connections_per_user,
            inbox=config.inbox.enabled,
            acks=self.shared_acks,
        )

    async def _open_acks(self) -> SharedAcks:
        """Open the cluster's store of acknowledged deliveries (a connection of its own)."""
        config = self.config
        try:
            store = await open_acks(
                config.broker.url, prefix=config.broker.prefix, ttl_s=config.inbox.ack_ttl_s
            )
        except Exception as exc:
            raise ConfigError(
                "broker.url", f"cannot open the acknowledgement store: {exc}"
            ) from None
        return SharedAcks(store, ttl_s=config.inbox.ack_ttl_s)

    async def _open_revocations(self) -> None:
        """Open the revocation store and give its cache to the cookie and token checks."""
        config = self.config
        try:
            store = await open_revocations(
                config.broker.url, prefix=config.broker.prefix, ttl_s=config.auth.revocation_ttl_s
            )
        except (OSError, ConnectionError) as exc:
            raise ConfigError("broker.url", f"cannot open the revocation store: {exc}") from None
        self.revocations = Revocations(store, ttl_s=config.auth.revocation_ttl_s)
        self.authenticate.revocations = self.revocations
        if self.authenticate.tokens is not None:
            self.authenticate.tokens.revocations = self.revocations
        try:
            await self.revocations.refresh()  # what the cluster holds, before the first upgrade
        except Exception as exc:  # the store's driver error: the poll retries
            log.warning("revocations: first read failed: %r", exc)

    async def _poll_revocations(self) -> None:
        """Every ``auth.revocation_poll_ms``: merge the cluster's revocations, and close
        (4403) the connections here that news covers. A failed read is logged and retried."""
        assert self.revocations is not None and self.gateway is not None
        every_s = self.config.auth.revocation_poll_ms / 1000
        while True:
            await asyncio.sleep(every_s)
            try:
                news = await self.revocations.refresh()
            except Exception as exc:  # the store's driver error: keep the cache, try again
                log.warning("revocations: read failed: %r", exc)
                continue
            if news:
                self.revocations.enforce(self.gateway.pool.connections.values())

    async def _start_api(self) -> None:
        assert self.gateway is not None
        aws = {c.access_key_id: c.secret_access_key for c in self.config.api.aws.credentials}
        self.api = ApiState(
            self.gateway,
            self.routes,
            aws_secrets=aws,
            aws_region=self.config.api.aws.region,
            bus=self.bus,
            revocations=self.revocations,
            tracer=self.tracer,
        )
        if not self._api_keys:
            log.warning("no [api] keys: the internal API refuses every /v1 request")
        tap = self.config.tap
        remote = None if self.bus is None else self.bus.taps
        taps = Taps(self.gateway.taps, tap.redact, tap.queue, tap.max_taps, remote)
        app = build_app(
            self.api,
            self._api_keys,
            self.config.admin.keys,
            taps,
            errors=self.recent_errors,
            metrics=None if self.metrics is None else self._render_metrics,
            metrics_need_key=self.config.metrics.require_key,
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        host, port = parse_listen("api.listen", self.config.api.listen)
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise _cannot_listen("api.listen", self.config.api.listen, exc) from None
        self._api_port = int(runner.addresses[0][1])
        self._api_runner = runner

    def _render_metrics(self) -> tuple[bytes, str]:
        """One scrape of :attr:`metrics` (body, content type)."""
        from wsgate.metrics import CONTENT_TYPE

        assert self.metrics is not None
        return self.metrics.render(), CONTENT_TYPE

    async def _start_grpc_api(self) -> None:
        """Serve ``wsgate.v1.Gateway`` on ``[api] grpc_listen`` over the HTTP API's state."""
        from wsgate.api.grpc_server import GrpcApi  # the grpc extra, only when asked for

        assert self.api is not None
        listen = self.config.api.grpc_listen
        host, port = parse_listen("api.grpc_listen", listen)
        api = GrpcApi(self.api, self._api_keys, host, port, self.config.admin.keys)
        try:
            await api.start()
        except OSError as exc:
            raise _cannot_listen("api.grpc_listen", listen, exc) from None
        self.grpc_api = api
        self._grpc_api_port = api.port

    async def _sweep(self) -> None:
        """Drop expired self-registrations, channel histories and inboxes, every 5 s at
        most (every ``history.ttl_s / 2`` or ``inbox.ttl_s / 2`` when shorter, so a quiet
        node frees them about when they expire)."""
        ttl_s = self.config.history.ttl_s
        if self._inbox is not None:
            ttl_s = min(ttl_s, self.config.inbox.ttl_s)
        every_s = min(5.0, max(ttl_s / 2, 0.05))
        while True:
            await asyncio.sleep(every_s)
            self.routes.sweep()
            self._history.sweep(budget=4096)
            if self._inbox is not None:
                self._inbox.sweep(budget=4096)

    def reload_keys(self) -> None:
        """SIGHUP: re-read the key files; keep the old keys when that fails.

        Goes through :meth:`KeyRing.try_reload`, which logs the lines
        docs/auth.md documents on ``wsgate.auth``, then writes the
        ``keys_reloaded`` event line (``ok``, ``keys`` now in use).
        """
        ok = self.keyring.try_reload()
        level = logging.INFO if ok else logging.ERROR
        event("keys_reloaded", level, ok=ok, keys=len(self.keyring))

    async def stop(
        self, code: int = CloseCode.SERVICE_RESTART, deadline_s: float | None = None
    ) -> None:
        """Drain: not ready, stop accepting, let calls finish, close connections.

        ``/readyz`` answers 503 at once; in-flight service calls get up to
        ``deadline_s`` to finish (their answers still reach their clients);
        then every connection is closed with ``code``. Last, every socket is
        closed: the HTTP invoker's, then NATS discovery is stopped (its task
        awaited), the NATS calls still in flight ended and the NATS connection
        closed, then the bus and the internal API.
        """
        if deadline_s is None:
            deadline_s = self.config.server.drain_timeout_ms / 1000
        if self.api is not None:
            self.api.ready = False
        if self.listener is not None:
            await self.listener.close()
        if self.upstream is not None:
            cut = await self.upstream.drain(deadline_s)
            if cut:
                log.warning("drain: %d service calls cut off at the deadline", cut)
        if self.listener is not None:
            await self.listener.drain(code, "draining: reconnect")
            self.listener = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._revocation_poll is not None:
            self._revocation_poll.cancel()
            self._revocation_poll = None
        if self.authenticate.tokens is not None:
            await self.authenticate.tokens.aclose()
        if self.gateway is not None:
            self.sessions.wheel.close()
            self.channel_tokens.wheel.close()
            if self.gateway.acks is not None:
                self.gateway.acks.close()
        # Each of these owns sockets: one failing must not leave the others open.
        try:
            await _close_each(
                self.invoker.aclose,
                self._close_grpc_routing,
                self._close_nats_services,
                self._close_bus,
                self._close_grpc_api,
                self._close_api_runner,
                self._close_revocations,
                self._close_acks,
                self._close_tracer,
            )
        finally:
            logging.getLogger("wsgate").removeHandler(self.recent_errors)

    async def _close_acks(self) -> None:
        if self.shared_acks is not None:
            shared, self.shared_acks = self.shared_acks, None
            await shared.close()

    async def _close_revocations(self) -> None:
        if self.revocations is not None:
            await self.revocations.store.close()

    async def _close_grpc_routing(self) -> None:
        if self.grpc_discovery is not None:
            await self.grpc_discovery.aclose()
        if self.grpc_invoker is not None:
            await self.grpc_invoker.aclose()

    async def _close_bus(self) -> None:
        if self.bus is not None:
            bus, self.bus = self.bus, None
            await bus.close()

    async def _close_grpc_api(self) -> None:
        if self.grpc_api is not None:
            grpc_api, self.grpc_api = self.grpc_api, None
            await grpc_api.stop(grace_s=1.0)

    async def _close_tracer(self) -> None:
        if self.tracer is not None:  # a last export: off the loop
            await asyncio.to_thread(self.tracer.shutdown)

    async def _close_api_runner(self) -> None:
        if self._api_runner is not None:
            runner, self._api_runner = self._api_runner, None
            await runner.cleanup()
