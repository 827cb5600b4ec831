"""``wsgate.config``: defaults, validation errors naming their key, environment
overrides, the documented "0 disables" values, and docs/configuration.md listing
exactly the keys the config accepts."""

from __future__ import annotations

import json
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

import msgspec
import pytest

from wsgate.config import (
    AuthConfig,
    Config,
    GrpcConfig,
    JwtConfig,
    NamespaceRule,
    ServiceConfig,
    from_mapping,
    load,
)
from wsgate.core.limits import parse_rate
from wsgate.exceptions import ConfigError

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"

SERVICE = {"services": {"orders": {"url": "http://127.0.0.1:9/actions"}}}


def refused(data: dict[str, Any], env: dict[str, str] | None = None) -> ConfigError:
    """The ConfigError ``data`` (with ``env``) is refused with."""
    with pytest.raises(ConfigError) as caught:
        from_mapping(data, env=env or {})
    return caught.value


# -- defaults -----------------------------------------------------------------------------------

DEFAULTS: dict[str, dict[str, Any]] = {
    "server": {
        "listen": "127.0.0.1:8080", "path": "/ws", "allowed_origins": ["http://localhost:8080"],
        "tls_cert": "", "tls_key": "", "node_id": "", "max_message_bytes": 65536,
        "heartbeat_ms": 25000, "heartbeat_timeout_ms": 10000, "handshake_timeout_ms": 5000,
        "outbound_high_water_bytes": 1 << 20, "read_buffer_bytes": 2048, "drain_timeout_ms": 10000,
        "max_channels_per_connection": 64, "compression": False,
    },
    "api": {
        "listen": "127.0.0.1:8081", "grpc_listen": "", "keys": [], "keys_file": "",
        "aws": {"credentials": [], "region": "us-east-1"},
    },
    "admin": {"keys": []},
    "tap": {"queue": 1000, "max_taps": 16, "redact": []},
    "auth": {
        "cookie_name": "wsgate_session", "keys": [], "keys_file": "", "securecookie_hash_key": "",
        "securecookie_block_key": "", "sign_in_url": "/sign-in", "allow_anonymous": False,
        "cookie_ttl_s": 86400, "clock_skew_s": 60, "first_message_ms": 5000,
        "expiry_warning_s": 60, "refresh_url": "", "revocation_ttl_s": 86400,
        "revocation_poll_ms": 1000, "jwt": None,
    },
    "broker": {"url": "memory://", "prefix": "wsgate", "presence_ttl_s": 10.0},
    "presence": {"batch_ms": 50, "max_members": 100, "large_batch_ms": 1000},
    "history": {"size": 100, "ttl_s": 300, "max_channels": 10_000},
    "inbox": {
        "enabled": True, "max_messages": 100, "ttl_s": 300, "max_users": 10_000,
        "ack_timeout_ms": 10_000, "ack_ttl_s": 300, "max_deliveries": 10_000,
    },
    "routing": {
        "registered_secret": "", "registered_timeout_ms": 2000, "registered_pipeline": 1,
        "authorize_cache_s": 30,
        "max_in_flight": 16, "max_in_flight_per_user": 64, "max_streams": 8,
        "max_streams_per_user": 32,
    },
    "limits": {
        "default_rate": "500/1s", "default_burst": 1000, "abuse_refusals": 100, "abuse_window_s": 10,
        "max_connections": 50000, "max_connections_per_user": 64, "max_connections_per_ip": 1024,
        "handshake_rate_per_ip": "50/1s", "handshake_burst_per_ip": 200, "max_json_depth": 32,
    },
    "discovery": {"nats": {
        "url": "", "discover": True, "interval_s": 5.0, "window_ms": 250, "timeout_ms": 2000,
        "max_concurrency": 256, "max_services": 256, "max_endpoints": 32, "max_actions": 64,
        "max_info_bytes": 65536, "max_response_bytes": 1 << 20,
    }},
    "log": {"format": "text", "level": "info", "lifecycle_lines_per_s": 100},
    "tracing": {"enabled": False, "service_name": "wsgate", "endpoint": ""},
    "metrics": {"enabled": True, "require_key": False},
    "services": {}, "routes": [], "relays": [], "channels": [], "namespaces": [],
    "rate_limits": [], "grpc": [],
}


def test_no_file_and_no_environment_gives_every_documented_default() -> None:
    assert msgspec.to_builtins(load(None, env={})) == DEFAULTS


def test_a_rule_and_a_service_get_their_defaults() -> None:
    config = from_mapping({
        **SERVICE,
        "routes": [{"match": "orders/*", "service": "orders"}],
        "channels": [{"match": "*"}],
        "rate_limits": [{"match": "chat/*"}],
    }, env={})
    assert msgspec.to_builtins(config.services["orders"]) == {
        "url": "http://127.0.0.1:9/actions", "timeout_ms": 2000, "secret": "", "max_concurrency": 256,
        "pipeline": 1,
    }
    assert config.routes[0].roles == []
    assert (config.channels[0].roles, config.channels[0].teams, config.channels[0].orgs) == ([], [], [])
    rule = config.rate_limits[0]
    assert (rule.per, rule.rate, rule.burst) == ("connection", "10/1s", 1)


def test_a_file_is_read_and_its_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "wsgate.toml"
    path.write_text('[server]\nlisten = "127.0.0.1:9000"\n[history]\nsize = 7\n')
    config = load(path, env={})
    assert (config.server.listen, config.history.size, config.history.ttl_s) == ("127.0.0.1:9000", 7, 300)
    path.write_text("[server\n")
    with pytest.raises(ConfigError, match="is not valid TOML") as bad:
        load(path, env={})
    assert bad.value.key == "(file)"
    with pytest.raises(ConfigError, match="cannot read") as missing:
        load(tmp_path / "absent.toml", env={})
    assert missing.value.key == "(file)"


# -- validation: every error names its key ------------------------------------------------------

@pytest.mark.parametrize(("data", "key"), [
    ({"server": {"listen": "nowhere"}}, "server.listen"),
    ({"server": {"listen": "127.0.0.1:70000"}}, "server.listen"),
    ({"api": {"listen": "127.0.0.1:"}}, "api.listen"),
    ({"server": {"path": "ws"}}, "server.path"),
    ({"server": {"tls_cert": "cert.pem"}}, "server.tls_cert"),
    ({"server": {"max_message_bytes": 0}}, "server.max_message_bytes"),
    ({"server": {"heartbeat_ms": "soon"}}, "server.heartbeat_ms"),
    ({"server": {"allowed_origins": "*"}}, "server.allowed_origins"),
    ({"api": {"aws": {"credentials": [{"access_key_id": "a"}]}}}, "api.aws.credentials.0"),
    ({"auth": {"allow_anonymous": "yes"}}, "auth.allow_anonymous"),
    ({"auth": {"cookie_ttl_s": -1}}, "auth.cookie_ttl_s"),
    ({"broker": {"url": "http://127.0.0.1"}}, "broker.url"),
    ({"broker": {"prefix": "a b"}}, "broker.prefix"),
    ({"broker": {"presence_ttl_s": 0}}, "broker.presence_ttl_s"),
    ({"presence": {"batch_ms": -1}}, "presence.batch_ms"),
    ({"history": {"max_channels": -1}}, "history.max_channels"),
    ({"history": {"size": 1.5}}, "history.size"),
    ({"routing": {"max_in_flight": 0}}, "routing.max_in_flight"),
    ({"limits": {"default_rate": "fast"}}, "limits.default_rate"),
    ({"limits": {"handshake_rate_per_ip": "5/fortnight"}}, "limits.handshake_rate_per_ip"),
    ({"limits": {"max_json_depth": 0}}, "limits.max_json_depth"),
    ({"services": {"orders": {}}}, "services.orders"),
    ({"services": {"ok": {"url": "u"}, "orders": {"url": "u", "pipeline": 65}}}, "services.orders.pipeline"),
    ({"routing": {"registered_pipeline": 0}}, "routing.registered_pipeline"),
    ({"routes": [{"match": "orders/*", "service": "billing"}]}, "routes.0.service"),
    ({"routes": [{"match": "", "service": "x"}]}, "routes.0.match"),
    ({"rate_limits": [{"match": "a"}, {"match": "b", "per": "planet"}]}, "rate_limits.1.per"),
    ({"rate_limits": [{"match": "a", "rate": "0"}]}, "rate_limits.0.rate"),
    ({"namespaces": [{"match": "a:*", "conflate_key": "symbol"}]}, "namespaces.0.conflate_key"),
    ({"namespaces": [{"match": "a:*", "conflate_ms": -1}]}, "namespaces.0.conflate_ms"),
    ({"namespaces": [{"match": "a:*", "colour": "red"}]}, "namespaces.0.colour"),
    ({"server": []}, "server"),
])
def test_a_bad_value_is_refused_naming_its_key(data: dict[str, Any], key: str) -> None:
    error = refused(data)
    assert error.key == key
    assert str(error).startswith(f"config {key}: ")


@pytest.mark.parametrize(("data", "key"), [
    ({"server": {"max_mesage_bytes": 10}}, "server.max_mesage_bytes"),
    ({"api": {"aws": {"zone": "x"}}}, "api.aws.zone"),
    ({"severs": {}}, "severs"),
    ({"services": {"orders": {"url": "u", "retries": 3}}}, "services.orders.retries"),
    ({"channels": [{"match": "*", "role": ["admin"]}]}, "channels.0.role"),
])
def test_an_unknown_key_is_refused_naming_it(data: dict[str, Any], key: str) -> None:
    error = refused(data)
    assert (error.key, str(error)) == (key, f"config {key}: unknown key")


# -- environment overrides ----------------------------------------------------------------------

def test_environment_overrides_every_kind_of_scalar_and_list() -> None:
    config = from_mapping({"server": {"heartbeat_ms": 1}, "auth": {"allow_anonymous": True}}, env={
        "WSGATE_SERVER_HEARTBEAT_MS": " 1500 ",
        "WSGATE_SERVER_ALLOWED_ORIGINS": "https://a.example, https://b.example",
        "WSGATE_API_KEYS": '["k1", "k2"]',
        "WSGATE_AUTH_ALLOW_ANONYMOUS": "false",
        "WSGATE_BROKER_URL": "redis://127.0.0.1:6379/0",
        "WSGATE_PRESENCE_BATCH_MS": "0",
        "WSGATE_HISTORY_SIZE": "7",
        "WSGATE_ROUTING_MAX_IN_FLIGHT": "3",
        "WSGATE_LIMITS_DEFAULT_RATE": "5/1s",
        "WSGATE_CONFIG": "ignored.toml",  # the CLI's, not a key
        "HOME": "/nowhere",
    })
    assert config.server.heartbeat_ms == 1500  # the environment wins over the file
    assert config.server.allowed_origins == ["https://a.example", "https://b.example"]
    assert config.api.keys == ["k1", "k2"]
    assert config.auth.allow_anonymous is False
    assert config.broker.url == "redis://127.0.0.1:6379/0"
    assert (config.presence.batch_ms, config.history.size) == (0, 7)
    assert (config.routing.max_in_flight, config.limits.default_rate) == (3, "5/1s")


def test_environment_overrides_a_float_key() -> None:
    """docs/configuration.md: every scalar key can be overridden; presence_ttl_s is a float."""
    assert from_mapping({}, env={"WSGATE_BROKER_PRESENCE_TTL_S": "2.5"}).broker.presence_ttl_s == 2.5
    assert from_mapping({}, env={"WSGATE_BROKER_PRESENCE_TTL_S": "3"}).broker.presence_ttl_s == 3.0
    assert refused({}, {"WSGATE_BROKER_PRESENCE_TTL_S": "soon"}).key == "broker.presence_ttl_s"


@pytest.mark.parametrize(("name", "value", "key", "why"), [
    ("WSGATE_SERVER_HEARTBEAT_MS", "soon", "server.heartbeat_ms", "expected an integer, got 'soon'"),
    ("WSGATE_SERVER_HEARTBEAT_MS", "0", "server.heartbeat_ms", "Expected `int` >= 1"),
    ("WSGATE_AUTH_ALLOW_ANONYMOUS", "maybe", "auth.allow_anonymous", "expected true or false, got 'maybe'"),
    ("WSGATE_SERVER_ALLOWED_ORIGINS", "[1", "server.allowed_origins", "expected a JSON list"),
    ("WSGATE_SERVER_ALLOWED_ORIGINS", "[1, 2]", "server.allowed_origins.0", "Expected `str`, got `int`"),
    ("WSGATE_HISTORY_MAX_CHANNELS", "-1", "history.max_channels", "Expected `int` >= 0"),
    ("WSGATE_SERVER_MAX_MESAGE_BYTES", "10", "server.max_mesage_bytes",
     "unknown key (from environment variable WSGATE_SERVER_MAX_MESAGE_BYTES)"),
])
def test_a_bad_environment_value_is_refused_naming_its_key(name: str, value: str, key: str, why: str) -> None:
    error = refused({}, {name: value})
    assert error.key == key
    assert str(error).startswith(f"config {key}: {why}")


def test_environment_does_not_reach_tables_of_tables() -> None:
    """``[services.x]`` and ``[[routes]]`` come from the file only: their variables are not keys."""
    assert from_mapping({}, env={"WSGATE_SERVICES_ORDERS": "x", "WSGATE_ROUTES": "y"}) == Config()


# -- the documented "0 disables" values ---------------------------------------------------------

def test_the_documented_zero_values_are_accepted() -> None:
    config = from_mapping({
        "presence": {"batch_ms": 0},
        "history": {"size": 0, "max_channels": 0},
        "routing": {"max_in_flight_per_user": 0},
        "limits": {"default_rate": "0", "handshake_rate_per_ip": "", "abuse_refusals": 0},
    }, env={})
    assert (config.presence.batch_ms, config.history.size, config.history.max_channels) == (0, 0, 0)
    assert (config.routing.max_in_flight_per_user, config.limits.abuse_refusals) == (0, 0)
    assert parse_rate(config.limits.default_rate, config.limits.default_burst) is None
    assert parse_rate(config.limits.handshake_rate_per_ip, config.limits.handshake_burst_per_ip) is None
    assert parse_rate("0/1s", 5) is None  # a count of 0 disables too
    assert parse_rate("5/1s", 5) is not None  # and a real rate does not


ZERO_MEANS = {
    "presence.batch_ms": "(0: at once)",
    "history.size": "(0: none)",
    "history.max_channels": "(0: unbounded)",
    "inbox.max_messages": "(0: none)",
    "inbox.max_users": "(0: unbounded)",
    "inbox.ack_timeout_ms": "(0: off)",
    "inbox.max_deliveries": "(0: unbounded)",
    "routing.max_in_flight_per_user": "(0: off)",
    "routing.max_streams_per_user": "(0: off)",
    "limits.default_rate": '(`""` or `"0"` disables both)',
    "limits.abuse_refusals": "(0: never)",
    "limits.max_connections": "(0: no limit)",
    "limits.max_connections_per_user": "(0: no limit)",
    "limits.max_connections_per_ip": "(0: no limit)",
    "namespaces.history_size": "(0: no history)",
    "namespaces.history_ttl_s": "(0: freed with the last member)",
    "namespaces.max_members": "(0: no cap)",
    "namespaces.conflate_ms": "(0: no conflation)",
}
"""Every key docs/configuration.md gives a meaning for 0, with the words it uses."""


def _doc_rows(text: str) -> dict[str, str]:
    """Key → its table row in the doc, for the first key of each row (a row of several keys,
    ``abuse_refusals, abuse_window_s``, speaks of its first in its notes)."""
    rows: dict[str, str] = {}
    sections: list[str] = []
    for line in text.splitlines():
        if heading := _HEADING.match(line):
            sections = _SECTION.findall(heading.group(1))
        elif line.startswith("| `"):
            key = _CELL_KEY.findall(line.split("|")[1])[0]
            own = len(sections) == 1 and not key.startswith(f"{sections[0]}.")
            rows[f"{sections[0]}.{key}" if own else key] = line
    return rows


def test_the_doc_says_what_0_means_exactly_for_these_keys_and_they_take_0() -> None:
    rows = _doc_rows(DOC.read_text())
    saying = {key for key, row in rows.items() if re.search(r"\(0[:)]|`\"0\"` disables", row)}
    assert saying == set(ZERO_MEANS), "a doc row gives 0 a meaning: add it to ZERO_MEANS"
    for key, words in ZERO_MEANS.items():
        assert words in rows[key], key
        section, name = key.split(".")
        zero: object = "0" if name.endswith("_rate") else 0
        if section == "namespaces":  # a table of tables: its first entry
            rule = from_mapping({section: [{"match": "*", name: zero}]}, env={}).namespaces[0]
            assert getattr(rule, name) == zero
            continue
        assert getattr(getattr(from_mapping({section: {name: zero}}, env={}), section), name) == zero


@pytest.mark.parametrize("key", ["server.max_message_bytes", "server.heartbeat_ms", "routing.max_in_flight",
                                 "limits.default_burst", "limits.abuse_window_s"])
def test_zero_is_refused_where_it_would_not_mean_disabled(key: str) -> None:
    section, name = key.split(".")
    assert refused({section: {name: 0}}).key == key


# -- docs/configuration.md lists exactly the accepted keys --------------------------------------

def _struct_keys(struct: type[msgspec.Struct], prefix: str) -> set[str]:
    """Every leaf key under ``struct``: ``<n>`` names a ``[services.<n>]``-like table, an
    array of tables names its entries' keys under its own name."""
    keys: set[str] = set()
    for field in msgspec.structs.fields(struct):
        keys |= _type_keys(field.type, f"{prefix}{field.name}")
    return keys


def _type_keys(kind: Any, name: str) -> set[str]:
    if typing.get_origin(kind) is typing.Annotated:
        kind = typing.get_args(kind)[0]
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        return _struct_keys(kind, f"{name}.")
    if isinstance(kind, types.UnionType) and len(args) == 2 and type(None) in args:
        (inner,) = (arg for arg in args if arg is not type(None))  # an optional table: [auth.jwt]
        if isinstance(inner, type) and issubclass(inner, msgspec.Struct):
            return _struct_keys(inner, f"{name}.")
    if origin is dict and isinstance(args[1], type) and issubclass(args[1], msgspec.Struct):
        return _struct_keys(args[1], f"{name}.<n>.")
    if origin is list and isinstance(args[0], type) and issubclass(args[0], msgspec.Struct):
        return _struct_keys(args[0], f"{name}.")
    assert not isinstance(kind, types.UnionType), f"{name}: a union the walker does not know"
    return {name}


MAPS = {"grpc.aliases"}
"""Tables whose keys are free (action types): the doc's examples set entries, not keys."""


def _toml_keys(table: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    if prefix.rstrip(".") in MAPS:
        return {prefix.rstrip(".")}
    for name, value in table.items():
        dotted = "services.<n>" if prefix == "services." else f"{prefix}{name}"
        if isinstance(value, dict):
            keys |= _toml_keys(value, f"{dotted}.")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for entry in value:
                keys |= _toml_keys(entry, f"{dotted}.")
        else:
            keys.add(dotted)
    return keys


_HEADING = re.compile(r"^##+ (.*)$")
_SECTION = re.compile(r"`\[([a-z_.<>]+)\]`")
_CELL_KEY = re.compile(r"`([a-z_.<>]+)`")


def documented_keys(text: str) -> set[str]:
    """The keys docs/configuration.md documents: the first cell of every table row (qualified by
    the heading's section when it names one) and every key set in a ``toml`` example block."""
    keys: set[str] = set()
    sections: list[str] = []
    lines = iter(text.splitlines())
    for line in lines:
        if heading := _HEADING.match(line):
            sections = _SECTION.findall(heading.group(1))
        elif line.startswith("```toml"):
            block = []
            for inner in lines:
                if inner.startswith("```"):
                    break
                block.append(inner)
            keys |= _toml_keys(tomllib.loads("\n".join(block)))
        elif line.startswith("| `"):
            for key in _CELL_KEY.findall(line.split("|")[1]):
                own = len(sections) == 1 and not key.startswith(f"{sections[0]}.")
                keys.add(f"{sections[0]}.{key}" if own else key)
    return keys


def test_documented_keys_reads_tables_and_examples() -> None:
    """The doc parser itself, on a doc of known content."""
    text = ("## `[server]` — x\n\n| key | default |\n|---|---|\n| `listen`, `path` | 1 |\n"
            "## `[a]` and `[b]`\n| `a.x` | 1 |\n| `b.y` | 2 |\n"
            "```toml\n[[routes]]\nmatch = \"x\"\n[services.orders]\nurl = \"u\"\n```\n")
    assert documented_keys(text) == {"server.listen", "server.path", "a.x", "b.y", "routes.match",
                                     "services.<n>.url"}


def test_the_doc_lists_every_accepted_key_and_no_other() -> None:
    accepted = _struct_keys(Config, "")
    documented = documented_keys(DOC.read_text())
    assert sorted(accepted - documented) == [], "keys the config accepts that docs/configuration.md omits"
    assert sorted(documented - accepted) == [], "keys docs/configuration.md lists that the config refuses"


def test_every_documented_key_is_accepted_by_the_config() -> None:
    """Each documented key, set to its default, loads (so the doc names real keys, spelled right)."""
    defaults = msgspec.to_builtins(Config())
    for key in sorted(documented_keys(DOC.read_text())):
        section, _, rest = key.partition(".")
        tables = ("services", "routes", "relays", "channels", "namespaces", "rate_limits", "grpc")
        if section in tables or "." in rest:
            continue  # tables of tables: covered by test_a_rule_and_a_service_get_their_defaults
        from_mapping({section: {rest: defaults[section][rest]}}, env={})


TABLES: dict[str, type[msgspec.Struct]] = {
    "services.<n>.": ServiceConfig, "grpc.": GrpcConfig, "namespaces.": NamespaceRule,
}
"""Keys of each entry of a table of tables: their defaults are the entry struct's."""


def _code_default(key: str) -> Any:
    """The default config.py gives ``key`` (a table entry's key: its struct's default)."""
    for prefix, struct in TABLES.items():
        if key.startswith(prefix):
            field = {f.name: f for f in msgspec.structs.fields(struct)}[key[len(prefix) :]]
            if field.default_factory is not msgspec.NODEFAULT:
                return msgspec.to_builtins(field.default_factory())
            return msgspec.to_builtins(field.default)
    # The optional [auth.jwt] table is absent by default: its keys' defaults are JwtConfig's.
    node: Any = msgspec.to_builtins(Config(auth=AuthConfig(jwt=JwtConfig())))
    for part in key.split("."):
        node = node[part]
    return node


def _doc_value(cell: str) -> Any:
    """A default cell's value: JSON, or the text of a code span; ``None`` for prose."""
    code = re.fullmatch(r"`(.*)`", cell.strip())
    text = code.group(1) if code else cell.strip()
    try:
        return json.loads(text)
    except ValueError:
        return text if code else None


PROSE_DEFAULTS = {
    "server.node_id", "services.<n>.url", "grpc.target", "namespaces.match",
    "namespaces.history_size", "namespaces.history_ttl_s", "namespaces.presence_max_members",
    "namespaces.conflate_key",
}
"""Keys whose documented default is words ("random ...", "required"), not a value."""


def documented_defaults(text: str) -> dict[str, Any]:
    """Key → default of every table row; a row of several keys lists their defaults in order."""
    found: dict[str, Any] = {}
    sections: list[str] = []
    for line in text.splitlines():
        if heading := _HEADING.match(line):
            sections = _SECTION.findall(heading.group(1))
        elif line.startswith("| `"):
            cells = line.split("|")
            keys = [f"{sections[0]}.{k}" if len(sections) == 1 and not k.startswith(f"{sections[0]}.") else k
                    for k in _CELL_KEY.findall(cells[1])]
            values = re.split(r",\s+(?![^\[]*\])", cells[2].strip())
            if len(values) != len(keys):
                values = [cells[2]] * len(keys)  # one default for them all
            found.update({key: _doc_value(value) for key, value in zip(keys, values, strict=True)})
    return found


def test_the_doc_states_each_default_config_py_has() -> None:
    documented = documented_defaults(DOC.read_text())
    assert {key for key, value in documented.items() if value is None} == PROSE_DEFAULTS
    wrong = {key: (value, _code_default(key)) for key, value in documented.items()
             if key not in PROSE_DEFAULTS and value != _code_default(key)}
    assert wrong == {}, "docs/configuration.md default != config.py default"
