"""The demo site: sign-in, the web app and the JS client on the public listener.

``wsgate demo`` serves, on the gateway's own port (so the session cookie
travels with the WebSocket upgrade):

- ``GET /sign-in`` the sign-in form; ``GET /sign-in?user=&name=&org=`` seals
  a session cookie for that user and redirects to ``/``;
- ``GET /`` the app (302 to ``/sign-in`` without a valid cookie);
- ``GET /demo/<file>`` from ``examples/demo/``, ``GET /js/<file>`` from
  ``clients/js/``;
- the WebSocket at ``/ws``.

Development only: anyone can sign in as anyone. Keys are made fresh at each
start, so restarting the demo signs everybody out.
"""

from __future__ import annotations

import importlib.util
import mimetypes
import re
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping
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

__all__ = ["DemoSite", "demo_config", "site_root", "start_orders"]

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



def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def demo_config(port: int, orders_port: int | None = None) -> Config:
    """The demo node: relays for chat and cursors, the orders service routed."""
    origins = [f"http://localhost:{port}", f"http://127.0.0.1:{port}"]
    orders = orders_port or _free_port()
    return from_mapping(
        {
            "server": {"listen": f"127.0.0.1:{port}", "allowed_origins": origins},
            "api": {"listen": "127.0.0.1:0", "keys": [secrets.token_urlsafe(24)]},
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
            "routes": [{"match": "orders/*", "service": "orders"}],
        },
        env={},
    )


def _load_orders_module() -> ModuleType:
    path = site_root() / "examples/orders/service.py"
    spec = importlib.util.spec_from_file_location("wsgate_demo_orders", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
