"""Configuration: TOML, every key overridable by ``WSGATE_<SECTION>_<KEY>``.

:func:`load` reads a file (or nothing: every key has a safe default), applies
environment overrides and validates the whole in one msgspec pass. An unknown
key or a bad value raises :class:`~wsgate.exceptions.ConfigError` naming the
key, so start-up stops with a message that says what to fix.

Environment overrides address scalar and list keys of the ``[server]``,
``[api]``, ``[auth]``, ``[broker]``, ``[presence]``, ``[history]``,
``[routing]``, ``[limits]``, ``[log]``, ``[tracing]`` and ``[metrics]`` sections:
``WSGATE_SERVER_LISTEN=0.0.0.0:8080``.
A list takes JSON (``["a","b"]``) or a comma-separated string; a bool takes
``true``/``false``/``1``/``0``; a number its decimal text. Tables of tables
(``[services.x]``, ``[api.aws]``, ``[[routes]]``) come from the file only.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from wsgate.exceptions import ConfigError

__all__ = [
    "AdminConfig",
    "ApiConfig",
    "AuthConfig",
    "AwsCredential",
    "BrokerConfig",
    "ChannelRule",
    "Config",
    "DiscoveryConfig",
    "GrpcAlias",
    "GrpcConfig",
    "HistoryConfig",
    "InboxConfig",
    "JwtClaimNames",
    "JwtConfig",
    "LimitsConfig",
    "LogConfig",
    "MetricsConfig",
    "NamespaceRule",
    "NatsDiscoveryConfig",
    "PresenceConfig",
    "RateLimitRule",
    "RelayRule",
    "RouteRule",
    "RoutingConfig",
    "ServerConfig",
    "ServiceConfig",
    "TapConfig",
    "TapRedact",
    "TracingConfig",
    "is_nats_subject",
    "load",
    "nats_services_url",
    "parse_listen",
]

Positive = Annotated[int, msgspec.Meta(gt=0)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Pipeline = Annotated[int, msgspec.Meta(ge=1, le=64)]
Pattern = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class ServerConfig(_Section):
    """``[server]``: the public WebSocket listener."""

    listen: str = "127.0.0.1:8080"
    path: str = "/ws"
    allowed_origins: list[str] = msgspec.field(default_factory=lambda: ["http://localhost:8080"])
    """Origins allowed at the handshake; ``*`` allows any; a request without
    ``Origin`` (not a browser) is allowed."""
    tls_cert: str = ""
    tls_key: str = ""
    node_id: str = ""
    """This node's id (prefix of its connection ids); random when empty."""
    max_message_bytes: Positive = 65536
    """A message past this closes the connection with 1009."""
    heartbeat_ms: Positive = 25000
    """Idle time before the server pings; advertised in WELCOME."""
    heartbeat_timeout_ms: Positive = 10000
    """No pong within this after a ping closes with 4408."""
    handshake_timeout_ms: Positive = 5000
    outbound_high_water_bytes: Positive = 1 << 20
    """Outbound bytes queued for one connection past which it is closed with 4000."""
    read_buffer_bytes: Positive = 2048
    """Initial read buffer per connection; grows for larger frames."""
    drain_timeout_ms: NonNegative = 10000
    """On SIGTERM, how long in-flight service calls may take before connections close (1012)."""
    max_channels_per_connection: Positive = 64
    """Views one connection may have joined at once (``TOO_LARGE`` past it)."""
    compression: bool = False
    """Negotiate permessage-deflate (RFC 7692) with clients that offer it."""


class AwsCredential(_Section):
    access_key_id: str
    secret_access_key: str


class AwsConfig(_Section):
    credentials: list[AwsCredential] = msgspec.field(default_factory=list)
    region: str = "us-east-1"


class ApiConfig(_Section):
    """``[api]``: the internal API, never public."""

    listen: str = "127.0.0.1:8081"
    grpc_listen: str = ""
    """``host:port`` of the gRPC API (``wsgate.v1.Gateway``); off when empty."""
    keys: list[str] = msgspec.field(default_factory=list)
    keys_file: str = ""
    aws: AwsConfig = msgspec.field(default_factory=AwsConfig)


JwtAlgorithm = Literal["HS256", "RS256", "ES256", "EdDSA"]



class AdminConfig(_Section):
    """``[admin]``: the operators' keys. Only an admin key opens ``/v1/tap``;
    admin keys are accepted on every other ``/v1`` path too (``[api] keys``
    are not accepted on ``/v1/tap``)."""

    keys: list[str] = msgspec.field(default_factory=list)


class TapRedact(_Section):
    """``[[tap.redact]]``: payload fields a tap shows as ``"[redacted]"``.

    ``match`` is a glob over the action type; ``fields`` are dotted paths
    starting at ``payload`` (``"payload.card"``, ``"payload.user.ssn"``).
    """

    match: Pattern
    fields: list[str] = msgspec.field(default_factory=list)


class TapConfig(_Section):
    """``[tap]``: the live action tap of the internal API (``GET /v1/tap``)."""

    queue: Positive = 1000
    """Actions held per tap for a slow reader; the oldest is dropped (and counted) past it."""
    max_taps: Positive = 16
    """Taps open at once on one node; one more is refused (503)."""
    redact: list[TapRedact] = msgspec.field(default_factory=list)

class JwtClaimNames(_Section):
    """``[auth.jwt.claims]``: which token claim fills which principal field.

    ``orgs`` may hold a list or one string; ``org`` (the active organization)
    falls back to the only entry of ``orgs``. ``teams``/``roles`` take a list
    or one string. ``exp``/``nbf``/``iat`` are NumericDates, ``aud`` a string
    or a list, ``iss`` a string (RFC 7519 §4.1), under whatever names are set here.
    """

    sub: str = "sub"
    sid: str = "sid"
    name: str = "name"
    org: str = "org"
    orgs: str = "orgs"
    teams: str = "teams"
    roles: str = "roles"
    exp: str = "exp"
    nbf: str = "nbf"
    iat: str = "iat"
    aud: str = "aud"
    iss: str = "iss"
    channel: str = "channel"
    """The channel a channel token grants (a token carrying it is a channel token only)."""


class JwtConfig(_Section):
    """``[auth.jwt]``: connection tokens (``Authorization: Bearer`` or ``@@wsgate/AUTH``)."""

    algorithms: list[JwtAlgorithm] = msgspec.field(
        default_factory=lambda: ["HS256", "RS256", "ES256", "EdDSA"]
    )
    """Algorithms accepted (``none`` never is); HS256 only checks against ``secret``,
    the others only against ``public_keys`` and the JWKS."""
    secret: str = ""
    """The HS256 shared secret (UTF-8 bytes; at least 32 of them)."""
    public_keys: list[str] = msgspec.field(default_factory=list)
    """PEM public keys (RSA, EC P-256, Ed25519) for RS256/ES256/EdDSA."""
    jwks_url: str = ""
    """An issuer's JWKS (``https://…/.well-known/jwks.json``), fetched and cached."""
    jwks_cache_s: Positive = 300
    """A fetched JWKS is used this long, then fetched again on the next token."""
    jwks_min_interval_ms: Positive = 10000
    """At most one JWKS fetch per this interval, whatever ``kid``s tokens name."""
    jwks_timeout_ms: Positive = 3000
    audience: str = ""
    """When set, a token's ``aud`` must contain it; when not, a token with an ``aud`` is
    refused (RFC 7519 §4.1.3: it is meant for someone else)."""
    issuer: str = ""
    """When set, a token's ``iss`` must equal it."""
    claims: JwtClaimNames = msgspec.field(default_factory=JwtClaimNames)


class AuthConfig(_Section):
    """``[auth]``: session cookies and, with ``[auth.jwt]``, connection tokens."""

    cookie_name: str = "wsgate_session"
    keys: list[str] = msgspec.field(default_factory=list)
    """Base64 32-byte keys: the first seals, all open."""
    keys_file: str = ""
    """A file of keys, one a line, re-read on SIGHUP."""
    securecookie_hash_key: str = ""
    """Base64 gorilla/securecookie hash key; with ``securecookie_block_key``
    enables reading cookies a Go service issued."""
    securecookie_block_key: str = ""
    sign_in_url: str = "/sign-in"
    allow_anonymous: bool = False
    cookie_ttl_s: Positive = 86400
    """Lifetime of cookies issued by ``wsgate cookie`` and the demo."""
    clock_skew_s: NonNegative = 60
    """Seconds of clock skew allowed for ``iat``/``nbf``/``exp`` of cookies and tokens alike."""
    first_message_ms: Positive = 5000
    """With ``[auth.jwt]``: how long an upgrade without cookie or bearer token may
    take to send ``@@wsgate/AUTH``."""
    expiry_warning_s: NonNegative = 60
    """Seconds before an open connection's credential expires that it gets
    ``@@wsgate/SESSION_EXPIRING`` (0: no warning; it still closes 4401 at ``exp``)."""
    refresh_url: str = ""
    """Where a cookie page gets a short-lived refresh token for ``@@wsgate/REFRESH``
    (sent in SESSION_EXPIRING as ``refreshUrl``; the gateway never calls it)."""
    revocation_ttl_s: Positive = 86400
    """How long a revocation is held: the longest lifetime of a credential it covers."""
    revocation_poll_ms: Positive = 1000
    """How often a node re-reads the cluster's revocations (their staleness bound)."""
    jwt: JwtConfig | None = None
    """Connection tokens; ``None`` (no ``[auth.jwt]`` table): cookies only."""


class BrokerConfig(_Section):
    """``[broker]``: ``memory://`` (one node), ``redis://…`` or ``nats://…`` (a cluster).

    ``memory://<name>`` runs the cluster code over an in-process hub: several
    nodes in one process (tests).
    """

    url: str = "memory://"
    prefix: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,32}$")] = "wsgate"
    """Namespace of every key and subject: several gateways may share one broker."""
    presence_ttl_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    """A node that stops beating for this long is dead: its members leave."""


class PresenceConfig(_Section):
    """``[presence]``: presence diffs."""

    batch_ms: NonNegative = 50
    """Diffs of one channel within this window go out as one PRESENCE."""
    max_members: NonNegative = 100
    """Past this many members a channel's JOINED and PRESENCE carry only ``count``."""
    large_batch_ms: NonNegative = 1000
    """Count-only updates of a channel past ``max_members`` go out at most this often."""


class HistoryConfig(_Section):
    """``[history]``: per-channel bounded history for recovery."""

    size: NonNegative = 100
    """Actions kept per channel (0 disables history)."""
    ttl_s: NonNegative = 300
    """How long a channel's history outlives its last member or last append, whichever is later."""
    max_channels: NonNegative = 10_000
    """Most channel streams one node retains (0: unbounded); past it the longest-idle memberless
    stream is freed first."""


class InboxConfig(_Section):
    """``[inbox]``: each signed-in user's stream of what is pushed to them (docs/protocol.md)."""

    enabled: bool = True
    """Deliveries to a user are stored in their inbox and carry ``meta.offset``."""
    max_messages: NonNegative = 100
    """Actions kept per user on a node (0: none, nothing is recovered), and in a cluster
    in the backend's copy (apart from channels' history)."""
    ttl_s: NonNegative = 300
    """How long a user's inbox outlives their last tab or last append, whichever is later."""
    max_users: NonNegative = 10_000
    """Most inbox streams one node retains (0: unbounded); past it the longest-idle stream
    of a user with no tab here is freed first. In a cluster also the backend's bound,
    cluster-wide (the stream with the oldest last append freed first)."""
    ack_timeout_ms: NonNegative = 10_000
    """An acknowledged delivery (``ack: true``) not yet acknowledged is sent again this
    long after its last send (0: acknowledged delivery is off)."""
    ack_ttl_s: Positive = 300
    """It is sent again until this long after the publish, then expired; a finished one
    stays readable (``GET /v1/deliveries/{id}``) this long more."""
    max_deliveries: NonNegative = 10_000
    """Most acknowledged deliveries a node tracks (0: unbounded); past it the oldest
    finished one is freed, and with none finished an ``ack`` publish is refused 503."""


class RoutingConfig(_Section):
    """``[routing]``: procedure discovery defaults and per-connection limits."""

    registered_secret: str = ""
    """HMAC secret for services known only from self-registration."""
    registered_timeout_ms: Positive = 2000
    registered_pipeline: Pipeline = 1
    """``services.<n>.pipeline`` for them: requests one connection may carry unanswered
    (HTTP/1.1 pipelining, 1-64). The SDK's built-in server takes pipelined requests."""
    authorize_cache_s: NonNegative = 30
    """How long an authorize hook's allow or deny is reused for the same user and channel."""
    max_in_flight: Positive = 16
    """Requests one connection may have waiting on services; past it ``RATE_LIMITED``."""
    max_in_flight_per_user: NonNegative = 64
    """The same for all of one user's connections together (0: no per-user cap)."""
    max_streams: Positive = 8
    """Streams (server-streaming gRPC calls) one connection may have open; past it
    ``RATE_LIMITED``."""
    max_streams_per_user: NonNegative = 32
    """The same for all of one user's connections together (0: no per-user cap)."""


RateText = Annotated[str, msgspec.Meta(pattern=r"^(0|\d+/\d*(ms|s|m|h))?$")]
"""``"<count>/<period>"``; ``""`` or ``"0"`` (or a count of 0) disables the limit."""


class LimitsConfig(_Section):
    """``[limits]``: what one client, user or address may cost (``docs/hardening.md``).

    A rate is ``"<count>/<period>"`` (``"100/1s"``, ``"1/60s"``, ``"5/m"``);
    an empty rate, or 0 for a count, disables that limit.
    """

    default_rate: RateText = "500/1s"
    """Every inbound message of one connection, before it is even decoded."""
    default_burst: Positive = 1000
    abuse_refusals: NonNegative = 100
    """``RATE_LIMITED`` refusals within ``abuse_window_s`` past which the connection
    is closed with 4429 (0: never)."""
    abuse_window_s: Positive = 10
    max_connections: NonNegative = 50000
    """Connections on this node (4429 past it)."""
    max_connections_per_user: NonNegative = 64
    max_connections_per_ip: NonNegative = 1024
    handshake_rate_per_ip: RateText = "50/1s"
    handshake_burst_per_ip: Positive = 200
    max_json_depth: Positive = 32
    """Nesting of arrays and objects in one message, the envelope included."""


class LogConfig(_Section):
    """``[log]``: what ``wsgate serve``/``demo`` print on stderr (``docs/observability.md``)."""

    format: Literal["text", "json"] = "text"
    """``json``: one JSON object a line, the event's fields as keys; ``text``: ``key=value``."""
    level: Literal["debug", "info", "warning", "error"] = "info"
    lifecycle_lines_per_s: NonNegative = 100
    """At most this many ``connected`` lines, and as many ``closed`` lines, per second;
    past it each second's rest is one ``suppressed`` line with their count (a reconnect
    storm writes one per handshake otherwise). 0: every line."""


class TracingConfig(_Section):
    """``[tracing]``: OpenTelemetry spans for routed calls and API publishes.

    Needs the ``tracing`` extra (``opentelemetry-sdk``); off, nothing of it is imported.
    """

    enabled: bool = False
    service_name: str = "wsgate"
    """The ``service.name`` resource attribute of every span."""
    endpoint: str = ""
    """OTLP/HTTP traces URL (``http://collector:4318/v1/traces``); ``""``: the exporter's
    default (``OTEL_EXPORTER_OTLP_*`` environment variables, else localhost:4318)."""


class MetricsConfig(_Section):
    """``[metrics]``: Prometheus ``GET /metrics`` on the internal listener (``[api] listen``).

    Open by default, like any scrape target; ``require_key`` makes it need one of
    ``[api] keys`` as a bearer key. Off, there is no route and no latency histogram.
    """

    enabled: bool = True
    require_key: bool = False


class ServiceConfig(_Section):
    """``[services.<name>]``: ``url`` is ``http(s)://…``, or ``nats:<subject>`` for a
    NATS service (called by request/reply on that subject; see :class:`NatsDiscoveryConfig`)."""

    url: str
    timeout_ms: Positive = 2000
    secret: str = ""
    max_concurrency: Positive = 256
    pipeline: Pipeline = 1
    """Requests one connection may carry unanswered (HTTP/1.1 pipelining); 1: off."""

    @property
    def transport(self) -> Literal["http", "nats"]:
        """What carries calls: ``nats`` for a ``nats:<subject>`` URL, else ``http``."""
        return "nats" if self.url.startswith(NATS_SERVICE_PREFIX) else "http"

    @property
    def target(self) -> str:
        """What the transport's invoker calls: the URL, or a NATS service's subject."""
        if self.transport == "nats":
            return self.url[len(NATS_SERVICE_PREFIX) :]
        return self.url


GrpcMethod = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][\w.]*\.[A-Za-z_]\w*/[A-Za-z_]\w*$")]
"""``<package>.<Service>/<Method>``."""
ActionTypeText = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_./:@$-]{1,128}$")]


class GrpcAlias(_Section):
    """``[grpc.aliases]`` entry in its long form: a method, and the type of its answer."""

    method: GrpcMethod
    reply: ActionTypeText | None = None
    """The answer's action type; default: the response message's full name."""


class GrpcConfig(_Section):
    """``[[grpc]]``: a gRPC target whose methods are discovered by server reflection."""

    target: str
    """``host:port`` of the server."""
    tls: bool = False
    ca_file: str = ""
    """PEM roots to check the server's certificate with (``tls`` only); default: the system's."""
    timeout_ms: Positive = 2000
    """Deadline of each call (and of each reflection round)."""
    max_concurrency: Positive = 256
    """Calls in flight to this target at once; a call waits up to ``timeout_ms`` for a slot."""
    max_message_bytes: Positive = 4 << 20
    """Largest request or answer message (a call over it: ``RESOURCE_EXHAUSTED``, as grpcio's)."""
    discover_every_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    """How often the target is reflected again (new methods, a restart, gone)."""
    aliases: dict[ActionTypeText, GrpcMethod | GrpcAlias] = msgspec.field(default_factory=dict)
    """Action type -> ``"<package>.<Service>/<Method>"`` or ``{method, reply}``."""


class RouteRule(_Section):
    """``[[routes]]``: action-type pattern to a service."""

    match: Pattern
    service: str
    roles: list[str] = msgspec.field(default_factory=list)


class RelayRule(_Section):
    """``[[relays]]``: action types relayed to the other members of ``meta.channel``."""

    match: Pattern


class ChannelRule(_Section):
    """``[[channels]]``: who may join the channels whose address matches ``match``.

    ``match`` is a glob (``*`` matches anything, ``*:admin/*``). A principal
    must satisfy every matching rule: for each non-empty list, hold at least
    one of its entries.
    """

    match: Pattern
    roles: list[str] = msgspec.field(default_factory=list)
    teams: list[str] = msgspec.field(default_factory=list)
    orgs: list[str] = msgspec.field(default_factory=list)
    token: bool = False
    """A join needs ``JOIN {channel, token}``: a JWT whose ``channel`` and ``sub``
    claims name the channel and the user (adds to the other rules)."""


ConflateKey = Annotated[str, msgspec.Meta(pattern=r"^payload(\.[A-Za-z0-9_-]{1,64}){1,8}$")]
"""A dotted path into the action: ``payload.<field>[.<field>...]``."""


class NamespaceRule(_Section):
    """``[[namespaces]]``: the options of the channels whose address matches ``match``.

    ``match`` is a glob as in ``[[channels]]``. Of the rules matching an
    address only the most specific applies (fewest ``*``, then the longest
    literal text before the first ``*``, then the first listed); an option it
    leaves unset takes the global default (``[history]``, ``[presence]``, or
    the value documented here). Resolved once, when the channel is created.
    """

    match: Pattern
    history_size: NonNegative | None = None
    """Actions kept for recovery (0: no history); unset: ``history.size``."""
    history_ttl_s: NonNegative | None = None
    """How long the stream outlives its last member; unset: ``history.ttl_s``."""
    recovery: bool = True
    """Whether a JOIN's ``since`` replays (``false``: ``recovered: false``, nothing replayed)."""
    presence: bool = True
    """Whether members get ``PRESENCE`` diffs and a member list in ``JOINED``."""
    presence_max_members: NonNegative | None = None
    """Count-only presence past this; unset: ``presence.max_members``."""
    relay: bool = True
    """Whether clients may relay into the channel (``[[relays]]`` still names the types)."""
    max_members: NonNegative = 0
    """Members (every node's, as this node knows them) past which a join is refused
    ``TOO_LARGE`` (0: no cap)."""
    conflate_ms: NonNegative = 0
    """Deliver at most one action per key per this window, the latest (0: off)."""
    conflate_key: ConflateKey | None = None
    """What an action is conflated by (``payload.symbol``); unset: one key for the channel."""


class RateLimitRule(_Section):
    """``[[rate_limits]]``."""

    match: Pattern
    per: Literal["connection", "user", "ip"] = "connection"
    rate: Annotated[str, msgspec.Meta(pattern=r"^\d+/\d*(ms|s|m|h)$")] = "10/1s"
    """``"<count>/<period>"``: ``"1/60s"`` is one a minute."""
    burst: Positive = 1


# NATS services ([discovery.nats], static nats:<subject> services) ---------------

NATS_SERVICE_PREFIX = "nats:"
"""A ``[services.<name>]`` URL starting with this names a NATS subject."""
_NATS_SUBJECT_RE = re.compile(r"[^\s.*>/]{1,64}(\.[^\s.*>/]{1,64}){0,15}")


def is_nats_subject(text: str) -> bool:
    """Tell whether ``text`` is a literal NATS subject a request can go to: at most
    16 dot-separated tokens of 1-64 characters, no wildcard, space or ``/``."""
    return _NATS_SUBJECT_RE.fullmatch(text) is not None


class NatsDiscoveryConfig(_Section):
    """``[discovery.nats]``: the NATS connection for NATS services, and their discovery.

    The connection is ``url``, else the broker's when ``[broker] url`` is
    ``nats://…``; with neither there is no NATS invoker and no discovery.
    """

    url: str = ""
    """``nats://host:port`` (or ``tls://``); empty: the broker's, if it is NATS."""
    discover: bool = True
    """Find services over ``$SRV.INFO``; ``false``: only static ``nats:`` services."""
    interval_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    """Time between discovery rounds; a service missing two rounds in a row drops out."""
    window_ms: Positive = 250
    """How long one round collects ``$SRV.INFO`` replies."""
    timeout_ms: Positive = 2000
    """Call timeout of discovered services."""
    max_concurrency: Positive = 256
    """Calls in flight per discovered service (per endpoint)."""
    max_services: Positive = 256
    """``$SRV.INFO`` replies read per round (service instances)."""
    max_endpoints: Positive = 32
    """Endpoints read per service; the rest are ignored."""
    max_actions: Positive = 64
    """Patterns read per endpoint's ``wsgate.actions``; the rest are ignored."""
    max_info_bytes: Positive = 65536
    """A larger ``$SRV.INFO`` reply is skipped."""
    max_response_bytes: Positive = 1 << 20
    """A larger answer from a NATS service is ``UPSTREAM_ERROR``."""


class DiscoveryConfig(_Section):
    """``[discovery]``: procedure discovery sources (``[discovery.nats]``)."""

    nats: NatsDiscoveryConfig = msgspec.field(default_factory=NatsDiscoveryConfig)


def nats_services_url(config: Config) -> str | None:
    """The NATS connection of NATS services: ``[discovery.nats] url``, else a NATS
    broker's URL, else ``None`` (no NATS invoker, no discovery)."""
    if config.discovery.nats.url:
        return config.discovery.nats.url
    if config.broker.url.partition("://")[0] in ("nats", "tls"):
        return config.broker.url
    return None


def _check_nats(config: Config) -> None:
    url = config.discovery.nats.url
    if url and (url.partition("://")[0] not in ("nats", "tls") or url.endswith("://")):
        raise ConfigError("discovery.nats.url", f"expected nats://host:port, got {url!r}")
    for name, svc in config.services.items():
        if svc.transport != "nats":
            continue
        if not is_nats_subject(svc.target):
            raise ConfigError(f"services.{name}.url", "expected nats:<subject>, no wildcards")
        if svc.secret:
            raise ConfigError(
                f"services.{name}.secret", "NATS services are not signed (use NATS permissions)"
            )
        if nats_services_url(config) is None:
            raise ConfigError(
                f"services.{name}.url",
                "a NATS service needs [discovery.nats] url or a nats:// [broker] url",
            )


class Config(_Section):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    api: ApiConfig = msgspec.field(default_factory=ApiConfig)
    admin: AdminConfig = msgspec.field(default_factory=AdminConfig)
    tap: TapConfig = msgspec.field(default_factory=TapConfig)
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    broker: BrokerConfig = msgspec.field(default_factory=BrokerConfig)
    presence: PresenceConfig = msgspec.field(default_factory=PresenceConfig)
    history: HistoryConfig = msgspec.field(default_factory=HistoryConfig)
    inbox: InboxConfig = msgspec.field(default_factory=InboxConfig)
    routing: RoutingConfig = msgspec.field(default_factory=RoutingConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    discovery: DiscoveryConfig = msgspec.field(default_factory=DiscoveryConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    tracing: TracingConfig = msgspec.field(default_factory=TracingConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    services: dict[str, ServiceConfig] = msgspec.field(default_factory=dict)
    routes: list[RouteRule] = msgspec.field(default_factory=list)
    relays: list[RelayRule] = msgspec.field(default_factory=list)
    channels: list[ChannelRule] = msgspec.field(default_factory=list)
    namespaces: list[NamespaceRule] = msgspec.field(default_factory=list)
    rate_limits: list[RateLimitRule] = msgspec.field(default_factory=list)
    grpc: list[GrpcConfig] = msgspec.field(default_factory=list)


_ENV_SECTIONS: dict[str, type[msgspec.Struct]] = {
    "server": ServerConfig,
    "api": ApiConfig,
    "auth": AuthConfig,
    "broker": BrokerConfig,
    "presence": PresenceConfig,
    "history": HistoryConfig,
    "inbox": InboxConfig,
    "routing": RoutingConfig,
    "limits": LimitsConfig,
    "log": LogConfig,
    "tracing": TracingConfig,
    "metrics": MetricsConfig,
}
_PATH_RE = re.compile(r"`\$((?:\.[A-Za-z_][\w]*|\[\d+\]|\[\.\.\.\])*)`")


def _env_value(key: str, raw: str, kind: Any) -> Any:
    text = raw.strip()
    if kind is bool or kind == "bool":
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(key, f"expected true or false, got {raw!r}")
    if str(kind).startswith("list"):
        if text.startswith("["):
            try:
                return json.loads(text)
            except ValueError as exc:
                raise ConfigError(key, f"expected a JSON list: {exc}") from None
        return [part.strip() for part in text.split(",") if part.strip()]
    if "int" in str(kind):
        try:
            return int(text)
        except ValueError:
            raise ConfigError(key, f"expected an integer, got {raw!r}") from None
    if "float" in str(kind):
        try:
            return float(text)
        except ValueError:
            raise ConfigError(key, f"expected a number, got {raw!r}") from None
    return raw


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> None:
    for name, value in env.items():
        if not name.startswith("WSGATE_"):
            continue
        rest = name[len("WSGATE_") :].lower()
        section, _, key = rest.partition("_")
        struct = _ENV_SECTIONS.get(section)
        if struct is None or not key:
            continue  # WSGATE_CONFIG and friends belong to the CLI
        dotted = f"{section}.{key}"
        fields = {f.name: f.type for f in msgspec.structs.fields(struct)}
        if key not in fields:
            raise ConfigError(dotted, f"unknown key (from environment variable {name})")
        target = data.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(section, "expected a table")
        target[key] = _env_value(dotted, value, fields[key])


def _dotted(path: str) -> str:
    return path.lstrip(".").replace("[", ".").replace("]", "").replace("...", "?") or "(root)"


def from_mapping(data: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Config:
    """Validate ``data`` (as parsed from TOML) with ``env`` overrides applied."""
    merged = json.loads(json.dumps(dict(data)))  # a deep copy we may mutate
    _apply_env(merged, os.environ if env is None else env)
    try:
        config = msgspec.convert(merged, Config)
    except msgspec.ValidationError as exc:
        text = str(exc)
        match = _PATH_RE.search(text)
        key = _dotted(match.group(1)) if match else "(root)"
        if key.startswith("services?"):  # msgspec does not name dict keys: find the service
            key = "services." + _bad_service(merged.get("services")) + key[len("services?.") :]
        if "unknown field" in text:
            field = text.split("`")[1] if "`" in text else "?"
            key = f"{key}.{field}" if key != "(root)" else field
            raise ConfigError(key, "unknown key") from None
        raise ConfigError(key, text.split(" - at ")[0]) from None
    _check(config)
    return config


def _bad_service(services: Any) -> str:
    """The name of the first ``[services.<name>]`` table that does not validate."""
    for name, table in (services or {}).items():
        try:
            msgspec.convert(table, ServiceConfig)
        except msgspec.ValidationError:
            return str(name)
    return "?"


def parse_listen(key: str, value: str) -> tuple[str, int]:
    """Split ``host:port`` (``[::1]:80`` too); raise ConfigError naming ``key``."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(key, f"expected host:port, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _check(config: Config) -> None:
    parse_listen("server.listen", config.server.listen)
    parse_listen("api.listen", config.api.listen)
    if config.api.grpc_listen:
        parse_listen("api.grpc_listen", config.api.grpc_listen)
    if not config.server.path.startswith("/"):
        raise ConfigError("server.path", "must start with /")
    if bool(config.server.tls_cert) != bool(config.server.tls_key):
        raise ConfigError("server.tls_cert", "tls_cert and tls_key must be set together")
    scheme = config.broker.url.partition("://")[0]
    jwt = config.auth.jwt
    if jwt is not None:
        _check_jwt(jwt)
    if scheme not in ("memory", "redis", "rediss", "nats"):
        raise ConfigError("broker.url", f"unsupported scheme {scheme!r}")
    seen: set[str] = set()
    for i, target in enumerate(config.grpc):
        parse_listen(f"grpc.{i}.target", target.target)
        if target.target in seen:
            raise ConfigError(f"grpc.{i}.target", f"{target.target} is configured twice")
        seen.add(target.target)
        if target.ca_file and not target.tls:
            raise ConfigError(f"grpc.{i}.ca_file", "needs tls = true")
        for alias in target.aliases:
            if alias.startswith("@@wsgate/"):
                raise ConfigError(f"grpc.{i}.aliases.{alias}", "@@wsgate/ types are the gateway's")
    for i, route in enumerate(config.routes):
        if route.service not in config.services:
            raise ConfigError(f"routes.{i}.service", f"no [services.{route.service}]")
    _check_nats(config)


def _check_jwt(jwt: JwtConfig) -> None:
    if not (jwt.secret or jwt.public_keys or jwt.jwks_url):
        raise ConfigError("auth.jwt", "needs secret, public_keys or jwks_url")
    if jwt.secret and len(jwt.secret.encode("utf-8")) < 32:
        raise ConfigError("auth.jwt.secret", "must be at least 32 bytes (RFC 7518 §3.2)")
    if "HS256" in jwt.algorithms and not jwt.secret and jwt.algorithms == ["HS256"]:
        raise ConfigError("auth.jwt.algorithms", "HS256 alone needs auth.jwt.secret")
    if jwt.jwks_url and not jwt.jwks_url.startswith(("https://", "http://")):
        raise ConfigError("auth.jwt.jwks_url", "must be an http(s) URL")


def load(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read the TOML file at ``path`` (defaults only when ``None``) and validate it."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as exc:
            raise ConfigError("(file)", f"cannot read {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("(file)", f"{path} is not valid TOML: {exc}") from None
    return from_mapping(data, env)
