"""The ``wsgate`` command line.

::

    wsgate serve [--config FILE]          run a node (FILE defaults to $WSGATE_CONFIG)
    wsgate demo [--port N]                run the demo: gateway, services and web app
    wsgate routes [--config FILE]         print the live route table
    wsgate tap (--channel ADDR | --connection ID) [--config FILE] [--key KEY] [--json]
                                          print a node's live actions of one channel or
                                          connection, one line each, until Ctrl-C
    wsgate check [--config FILE]          validate a config; print it, secrets masked
    wsgate keys new                       print a fresh base64 32-byte session key
    wsgate cookie [--config FILE] --user U --org O [--org O2]... [--team T]...
                  [--role R]... [--name N] [--ttl S]
                                          print a sealed session-cookie value

Exit status: what the command returns (0 on success); 2 for a usage error, a
:class:`~wsgate.exceptions.ConfigError` or a
:class:`~wsgate.exceptions.KeyRingError`, reported on stderr as
``wsgate: <message>``; 130 on Ctrl-C.

This module is the glue between a process and a :class:`~wsgate.node.Node`:
logging set-up, the event loop (uvloop when installed), the signal handlers
(SIGINT/SIGTERM drain and stop, SIGHUP re-reads the session keys) and the
banner. The node itself never imports it. Heavy modules are imported by the
command that needs them, so ``wsgate keys new`` starts fast.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from wsgate import __version__
from wsgate.exceptions import ConfigError, KeyRingError, WsgateError

if TYPE_CHECKING:
    from wsgate.config import Config
    from wsgate.node import Node

__all__ = [
    "GC_THRESHOLD",
    "build_parser",
    "check",
    "demo",
    "main",
    "print_routes",
    "serve",
    "tune_gc",
]

_CONFIG_ENV = "WSGATE_CONFIG"


def _config_path(args: argparse.Namespace) -> str | None:
    path: str | None = args.config or os.environ.get(_CONFIG_ENV) or None
    return path


def _cmd_serve(args: argparse.Namespace) -> int:
    return serve(_config_path(args))


def _cmd_demo(args: argparse.Namespace) -> int:
    return demo(args.port)


def _cmd_check(args: argparse.Namespace) -> int:
    return check(_config_path(args))


def check(config_path: str | None) -> int:
    """``wsgate check``: what ``serve`` would run, validated as ``serve`` does, secrets masked.

    The node is built (keys, policy, routes, TLS files) but nothing is bound
    or connected; the messages and exit status of a bad config are ``serve``'s.
    """
    import msgspec

    from wsgate.config import load
    from wsgate.config_show import masked
    from wsgate.node import Node

    try:
        config = load(config_path)
        Node(config)
    except WsgateError as exc:
        print(f"wsgate: {exc}", file=sys.stderr)
        return 2
    overrides = sorted(n for n in os.environ if n.startswith("WSGATE_") and n != _CONFIG_ENV)
    if overrides:
        print(f"wsgate: environment overrides: {', '.join(overrides)}", file=sys.stderr)
    print(msgspec.json.format(msgspec.json.encode(masked(config)), indent=2).decode())
    return 0


def _cmd_routes(args: argparse.Namespace) -> int:
    path = _config_path(args)
    if path is None:
        raise ConfigError("(file)", f"routes needs --config FILE or ${_CONFIG_ENV}")
    return print_routes(path)


def _cmd_tap(args: argparse.Namespace) -> int:
    from wsgate.cli_tap import run
    from wsgate.config import load

    config = load(_config_path(args))
    return asyncio.run(
        run(config, channel=args.channel, connection=args.connection, key=args.key, raw=args.json)
    )


Extra = Callable[["Node"], Awaitable[Callable[[], Awaitable[None]]]]
"""Started after the node (the demo's orders service); returns its stopper."""


GC_THRESHOLD: Final = (10_000, 10, 10)
"""The collector's thresholds while a node serves (CPython's default is 700, 10, 10)."""


def tune_gc() -> None:
    """Freeze what start-up made and collect the youngest generation 14 x less often.

    A signed-in connection allocates a few dozen tracked objects, so with the
    default threshold a reconnect storm of 10,000 ran ~800 young, ~70 middle
    and 6 full collections, the full ones each walking the whole heap (a
    quarter of the node's CPU over two storms, bench/storm.py; each also a
    pause for every open connection). Frozen start-up objects (modules, config, route
    table) are never walked again. Cyclic garbage waits for at most 10,000
    allocations more: bounded, and still collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


async def _run(node: Node, banner: str, extra: Extra | None) -> None:
    try:
        await node.start()
    except BaseException:
        await node.stop(deadline_s=0)  # close what started before the failure
        raise
    tune_gc()
    stop_extra = await extra(node) if extra is not None else None
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, node.reload_keys)
    print(banner.format(url=node.url, port=node.port, api=node.api_url), flush=True)
    await stop.wait()
    await node.stop()
    if stop_extra is not None:
        await stop_extra()


def _event_loop_run(node: Node, banner: str, extra: Extra | None = None) -> int:
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    try:
        asyncio.run(_run(node, banner, extra))
    except WsgateError as exc:  # e.g. a port in use: one line, no traceback
        print(f"wsgate: {exc}", file=sys.stderr)
        return 2
    return 0


def _logging(config: Config) -> None:
    """Apply ``[log]`` (format, level) to stderr, before the node starts (:mod:`wsgate.logs`)."""
    from wsgate.logs import configure

    configure(config.log)


def serve(config_path: str | None) -> int:
    """``wsgate serve --config FILE``: run a node until SIGINT/SIGTERM."""
    from wsgate.config import load
    from wsgate.node import Node

    try:
        config = load(config_path)
        _logging(config)
        node = Node(config)
    except WsgateError as exc:
        print(f"wsgate: {exc}", file=sys.stderr)
        return 2
    return _event_loop_run(node, "wsgate: listening on {url}")


def demo(port: int) -> int:
    """``wsgate demo``: the demo app on the memory backend, ephemeral keys.

    Beside it: the orders service, and the procedure examples whose extras are
    installed (``examples/modules`` over gRPC; ``examples/nats_orders`` on a
    ``nats-server`` the demo starts and stops). A missing one is a line on stderr.
    """
    from wsgate.demo import (
        DemoSite,
        Examples,
        NatsServerProcess,
        available_examples,
        demo_config,
        free_port,
        start_examples,
    )
    from wsgate.node import Node

    grpc, nats_binary, notes = available_examples()
    nats_server = NatsServerProcess(nats_binary) if nats_binary is not None else None
    if nats_server is not None:
        try:
            nats_server.start()
        except RuntimeError as exc:
            notes.append(f"wsgate: demo without examples/nats_orders: {exc}")
            nats_server = None
    for note in notes:
        print(note, file=sys.stderr)
    examples = Examples(
        grpc_port=free_port() if grpc else None,
        nats_url=None if nats_server is None else nats_server.url,
    )
    try:
        config = demo_config(port, examples=examples)
        _logging(config)
        site = DemoSite(config)
        node = Node(config, plain_get=site.handle)
        banner = (
            "wsgate: demo on http://localhost:{port}/ (second user: http://127.0.0.1:{port}/)\n"
            "wsgate: internal API on {api} (docs/api.md), e.g.\n"
            f"  curl -H 'Authorization: Bearer {config.api.keys[0]}' {{api}}/v1/hubs\n"
            f"wsgate: admin dashboard on {{api}}/admin/ with the admin key {config.admin.keys[0]}"
        )
        return _event_loop_run(node, banner, start_examples(examples))
    finally:
        if nats_server is not None:
            nats_server.stop()


def _format_routes(entries: list[dict[str, Any]]) -> str:
    """The table ``wsgate routes`` prints: one row per route, every column as wide as its
    longest cell (gRPC method names and ``grpc:<target>`` services are long)."""
    rows = [("PATTERN", "SERVICE", "SOURCE", "ROLES", "INSTANCES")]
    for entry in entries:
        roles = ",".join(entry.get("roles") or []) or "-"
        source = f"{entry.get('source', '-')}/{entry.get('transport', '-')}"
        instances = "; ".join(
            f"{i['url']} [{i['source']}, {'up' if i['healthy'] else 'DOWN'}"
            + (f", expires in {i['expires_in']:.0f}s" if i.get("expires_in") is not None else "")
            + "]"
            for i in entry.get("instances", [])
        )
        rows.append((entry["pattern"], entry["service"], source, roles, instances or "-"))
    widths = [max(len(row[col]) for row in rows) for col in range(4)]
    return "\n".join(
        " ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True))
        + " "
        + row[4]
        for row in rows
    )


async def _live_routes(config: Config) -> list[dict[str, Any]] | None:
    """The running node's table from its internal API, or ``None`` if unreachable.

    Raises :class:`ConfigError` when the node answers but refuses the key.
    """
    import aiohttp

    from wsgate.config import parse_listen
    from wsgate.node import api_keys

    keys = api_keys(config)
    host, port = parse_listen("api.listen", config.api.listen)
    if not keys or port == 0:
        return None
    headers = {"Authorization": f"Bearer {keys[0]}"}
    timeout = aiohttp.ClientTimeout(total=3)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(f"http://{host}:{port}/v1/routes", headers=headers) as resp,
        ):
            if resp.status in (401, 403):
                message = f"the node on {host}:{port} refused the first key ({resp.status})"
                raise ConfigError("api.keys", message)
            if resp.status != 200:
                return None
            entries: list[dict[str, Any]] = await resp.json()
            return entries
    except (aiohttp.ClientError, TimeoutError):
        return None


def print_routes(config_path: str) -> int:
    """``wsgate routes``: the live table of the node this config runs, else the static one."""
    from wsgate.config import load
    from wsgate.routing.table import RouteTable

    try:
        config = load(config_path)
        live = asyncio.run(_live_routes(config))
        if live is None:
            print("wsgate: node not reachable on [api] listen; the static table:", file=sys.stderr)
            live = RouteTable.from_config(config).snapshot()
    except WsgateError as exc:
        print(f"wsgate: {exc}", file=sys.stderr)
        return 2
    print(_format_routes(live))
    return 0


def _cmd_keys_new(args: argparse.Namespace) -> int:
    from wsgate.auth.keyring import new_key

    print(new_key())
    return 0


def _cmd_cookie(args: argparse.Namespace) -> int:
    from wsgate.auth.cookie import CookieCodec
    from wsgate.auth.keyring import KeyRing
    from wsgate.auth.principal import Principal
    from wsgate.config import load
    from wsgate.protocol.address import is_hub_id

    for org in args.org:
        if not is_hub_id(org):
            raise ConfigError("--org", f"{org!r} is not an organization id ([A-Za-z0-9_-]{{1,64}})")
    config = load(_config_path(args))
    ring = KeyRing.from_config(config.auth)
    codec = CookieCodec.from_config(config.auth, ring)
    if args.ttl is not None:
        codec.ttl_s = args.ttl
    principal = Principal(
        sub=args.user,
        sid=args.sid or secrets.token_urlsafe(12),
        name=args.name or "",
        org=args.org[0],
        orgs=tuple(dict.fromkeys(args.org)),
        teams=tuple(dict.fromkeys(args.team)),
        roles=tuple(dict.fromkeys(args.role)),
    )
    print(codec.seal(principal))
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _port(text: str) -> int:
    value = _positive(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port (1-65535), got {text!r}")
    return value


def _user(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("a user id cannot be empty")
    return text


Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; each subcommand sets ``handler`` in the namespace."""
    parser = argparse.ArgumentParser(
        prog="wsgate", description="A WebSocket API gateway for Redux-style actions."
    )
    parser.add_argument("--version", action="version", version=f"wsgate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config_help = f"the TOML config file (default: ${_CONFIG_ENV}, else built-in defaults)"

    serve = sub.add_parser("serve", help="run a gateway node")
    serve.add_argument("--config", metavar="FILE", help=config_help)
    serve.set_defaults(handler=_cmd_serve)

    demo = sub.add_parser("demo", help="run the demo gateway, services and web app")
    demo.add_argument("--port", type=_port, default=8080, help="public port (default 8080)")
    demo.set_defaults(handler=_cmd_demo)

    routes = sub.add_parser("routes", help="print the live route table")
    routes.add_argument("--config", metavar="FILE", help=f"the config file (or ${_CONFIG_ENV})")
    routes.set_defaults(handler=_cmd_routes)

    tap = sub.add_parser("tap", help="print the live actions of one channel or connection")
    target = tap.add_mutually_exclusive_group(required=True)
    target.add_argument("--channel", metavar="ADDR", help="a channel address: acme:orders/42")
    target.add_argument("--connection", metavar="ID", help="a connection id")
    tap.add_argument("--config", metavar="FILE", help=config_help)
    tap.add_argument("--key", help="an [admin] key (default: the config's first admin.keys)")
    tap.add_argument("--json", action="store_true", help="print each frame's JSON as is")
    tap.set_defaults(handler=_cmd_tap)

    check_ = sub.add_parser(
        "check", help="validate a config and print it (environment applied, secrets masked)"
    )
    check_.add_argument("--config", metavar="FILE", help=config_help)
    check_.set_defaults(handler=_cmd_check)

    keys = sub.add_parser("keys", help="session keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    keys_new = keys_sub.add_parser("new", help="print a fresh base64 32-byte session key")
    keys_new.set_defaults(handler=_cmd_keys_new)

    cookie = sub.add_parser(
        "cookie", help="print a sealed session-cookie value (development and tests)"
    )
    cookie.add_argument("--config", metavar="FILE", help=config_help)
    cookie.add_argument("--user", required=True, type=_user, help="user id (sub)")
    cookie.add_argument(
        "--org",
        required=True,
        action="append",
        help="organization; the first is the active one; repeat for more",
    )
    cookie.add_argument("--team", action="append", default=[], help="team id; repeatable")
    cookie.add_argument("--role", action="append", default=[], help="role; repeatable")
    cookie.add_argument("--name", help="display name")
    cookie.add_argument("--sid", help="session id (default: random)")
    cookie.add_argument(
        "--ttl", type=_positive, metavar="S", help="lifetime in s (default: auth.cookie_ttl_s)"
    )
    cookie.set_defaults(handler=_cmd_cookie)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except (ConfigError, KeyRingError) as exc:
        print(f"wsgate: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
