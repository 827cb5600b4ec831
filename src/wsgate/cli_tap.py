"""``wsgate tap``: a node's live action tap (``GET /v1/tap``) printed one line per action.

The command line's part of the tap: :func:`run` opens the tap WebSocket on
the internal API named by the config's ``[api] listen`` (``WSGATE_API_LISTEN``
applies, as everywhere) with an ``[admin]`` key (``--key``, else the config's
first ``admin.keys``, which ``WSGATE_ADMIN_KEYS`` overrides), prints each
frame as one line on stdout (:func:`line`, or the frame's JSON with
``--json``) and returns when Ctrl-C (SIGINT) or SIGTERM arrives (it closes the
tap with 1000: exit 0) or when the node closes it (exit 1). A refused key,
a refused tap or a node that is not there raise
:class:`~wsgate.exceptions.ConfigError` (exit 2).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any, TextIO

from wsgate.config import Config, parse_listen
from wsgate.exceptions import ConfigError

__all__ = ["OPEN_TIMEOUT_S", "line", "run"]

OPEN_TIMEOUT_S = 5.0
"""The tap's WebSocket must be open within this."""


def line(frame: dict[str, Any]) -> str:
    """One tap frame as a terminal line: ``kind target type [from user/conn] payload``."""
    to = frame.get("to") or {}
    origin = frame.get("from")
    parts = [str(to.get("kind", "?")), str(to.get("target", "?")), str(frame.get("type", "?"))]
    if origin:
        parts.append(f"from {origin.get('userId') or '-'}/{origin.get('connectionId')}")
    if frame.get("error"):
        parts.append("error")
    parts.append(json.dumps(frame.get("payload"), separators=(",", ":")))
    if frame.get("dropped"):
        parts.append(f"(dropped {frame['dropped']})")
    return " ".join(parts)


async def run(
    config: Config,
    *,
    channel: str | None,
    connection: str | None,
    key: str | None,
    raw: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    """Print the tap of ``channel`` or ``connection`` until a signal or the node ends it."""
    import aiohttp

    admin_key = key or next((k for k in config.admin.keys if k), None)
    if not admin_key:
        raise ConfigError("admin.keys", "tap needs an admin key: --key, or [admin] keys")
    host, port = parse_listen("api.listen", config.api.listen)
    kind, target = ("channel", channel) if channel is not None else ("connection", connection)
    url = f"http://{host}:{port}/v1/tap"
    headers = {"Authorization": f"Bearer {admin_key}"}
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with aiohttp.ClientSession() as http:
            try:
                ws = await asyncio.wait_for(
                    http.ws_connect(url, params={kind: target or ""}, headers=headers),
                    OPEN_TIMEOUT_S,
                )
            except aiohttp.WSServerHandshakeError as exc:
                raise ConfigError(
                    "admin.keys" if exc.status in (401, 403) else "(tap)",
                    f"the node on {host}:{port} refused the tap ({exc.status} {exc.message})",
                ) from None
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise ConfigError("api.listen", f"no node on {host}:{port}: {exc}") from None
            print(f"wsgate: tapping {kind} {target} on {host}:{port}", file=sys.stderr, flush=True)
            return await _pump(ws, stop, raw, out)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _pump(ws: Any, stop: asyncio.Event, raw: bool, out: TextIO) -> int:
    import aiohttp

    stopped = asyncio.ensure_future(stop.wait())
    try:
        while True:
            received = asyncio.ensure_future(ws.receive())
            done, _ = await asyncio.wait({received, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if stopped in done:
                received.cancel()
                await ws.close(code=1000)
                return 0
            msg = received.result()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                code = ws.close_code
                print(f"wsgate: the node closed the tap ({code})", file=sys.stderr, flush=True)
                return 1
            frame = json.loads(msg.data)
            print(msg.data if raw else line(frame), file=out, flush=True)
    finally:
        stopped.cancel()
