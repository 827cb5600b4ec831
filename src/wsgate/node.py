"""Composition root: config in, a running node out.

:class:`Node` builds the backends, the core, the transport and (when routes
exist) the internal API from a :class:`~wsgate.config.Config`, starts them,
and drains them. :func:`serve` and :func:`demo` are the CLI's blocking entry
points; tests start a :class:`Node` in-process on port 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import ssl
import sys
from collections.abc import Callable, Mapping

from wsgate.auth.handshake import Authenticator
from wsgate.auth.keyring import KeyRing
from wsgate.auth.policy import ChannelPolicy
from wsgate.backends.memory import MemoryHistory
from wsgate.config import Config, load, parse_listen
from wsgate.core.gateway import Gateway
from wsgate.core.presence import PresenceBatcher
from wsgate.exceptions import ConfigError, WsgateError
from wsgate.protocol.codes import CloseCode
from wsgate.transport.base import HttpResponse
from wsgate.transport.server import Listener, start_listener
from wsgate.typing import NodeId

__all__ = ["Node", "demo", "print_routes", "serve"]

log = logging.getLogger("wsgate.node")

PlainGet = Callable[[str, Mapping[str, str]], HttpResponse | None]
"""Answers plain HTTP GETs on the public listener (the demo's pages)."""


def _ssl_context(config: Config) -> ssl.SSLContext | None:
    server = config.server
    if not server.tls_cert:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(server.tls_cert, server.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("server.tls_cert", f"cannot load certificate: {exc}") from None
    return context


class Node:
    """One gateway node. Call :meth:`start`, later :meth:`stop`."""

    def __init__(self, config: Config, *, plain_get: PlainGet | None = None) -> None:
        self.config = config
        self.node_id = NodeId(config.server.node_id or f"n{secrets.token_hex(3)}")
        if config.broker.url.partition("://")[0] != "memory":
            raise ConfigError("broker.url", "only memory:// is available in this version")
        self.keyring = KeyRing.from_config(config.auth)
        self.authenticate = Authenticator(config.auth, self.keyring)
        self.policy = ChannelPolicy(config.channels, config.auth.allow_anonymous)
        self._plain_get = plain_get
        self._ssl = _ssl_context(config)
        self.gateway: Gateway | None = None
        self.listener: Listener | None = None

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
        """Build the core on the running loop and start listening."""
        loop = asyncio.get_running_loop()
        config = self.config
        presence = PresenceBatcher(
            loop,
            batch_ms=config.presence.batch_ms,
            max_members=config.presence.max_members,
            large_batch_ms=config.presence.large_batch_ms,
        )
        self.gateway = Gateway(
            node_id=self.node_id,
            policy=self.policy,
            scheduler=loop,
            history=MemoryHistory(config.history.size, config.history.ttl_s),
            relays=[rule.match for rule in config.relays],
            presence=presence,
            heartbeat_ms=config.server.heartbeat_ms,
            max_channels=config.server.max_channels_per_connection,
        )
        self.listener = await start_listener(
            handler=self.gateway,
            config=config.server,
            authenticate=self.authenticate,
            sign_in_url=config.auth.sign_in_url,
            plain_get=self._plain_get,
            ssl_context=self._ssl,
        )

    def reload_keys(self) -> None:
        """SIGHUP: re-read the key files; keep the old keys when that fails."""
        try:
            self.keyring.reload()
            log.info("session keys reloaded")
        except WsgateError as exc:
            log.error("session keys not reloaded: %s", exc)

    async def stop(self, code: int = CloseCode.GOING_AWAY) -> None:
        """Stop accepting, close every connection with ``code``."""
        if self.listener is not None:
            await self.listener.close()
            await self.listener.drain(code, "node going away")
            self.listener = None


async def _run(node: Node, banner: str) -> None:
    await node.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, node.reload_keys)
    print(banner.format(url=node.url, port=node.port), flush=True)
    await stop.wait()
    await node.stop()


def _event_loop_run(coro_node: Node, banner: str) -> int:
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(_run(coro_node, banner))
    return 0


def serve(config_path: str | None) -> int:
    """``wsgate serve --config FILE``: run a node until SIGINT/SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        node = Node(load(config_path))
    except WsgateError as exc:
        print(f"wsgate: {exc}", file=sys.stderr)
        return 2
    return _event_loop_run(node, "wsgate: listening on {url}")


def demo(port: int) -> int:
    """``wsgate demo``: the demo app on the memory backend, ephemeral keys."""
    from wsgate.demo import DemoSite, demo_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = demo_config(port)
    site = DemoSite(config)
    node = Node(config, plain_get=site.handle)
    return _event_loop_run(
        node, "wsgate: demo on http://localhost:{port}/ (second user: http://127.0.0.1:{port}/)"
    )


def print_routes(config_path: str) -> int:
    """``wsgate routes``: the static route table of a config."""
    try:
        config = load(config_path)
    except WsgateError as exc:
        print(f"wsgate: {exc}", file=sys.stderr)
        return 2
    for rule in config.routes:
        service = config.services[rule.service]
        print(f"{rule.match:<32} {rule.service:<16} {service.url} (static)")
    return 0

