"""A client for the gateway's internal API (design §5), for services.

::

    async with Publisher("http://127.0.0.1:8081", api_key) as gw:
        await gw.publish({"channel": "acme:orders/42"}, {"type": "orders/UPDATED"})
        gw.keep_registered("orders", "http://10.0.0.5:9000/actions", ["orders/*"], ttl=30)

Every call sends ``Authorization: Bearer <api_key>`` and raises
:class:`~wsgate.exceptions.PublishError` (with the HTTP status; 0 when the gateway could not be
reached) when the gateway does not answer 2xx, except where noted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import msgspec
from yarl import URL

from wsgate.exceptions import PublishError

__all__ = ["PublishError", "Publisher"]

log = logging.getLogger(__name__)

_encoder: Final = msgspec.json.Encoder()


def _seg(value: str) -> str:
    return quote(value, safe="")


class Publisher:
    """Async client of the internal API; one pooled session; :meth:`aclose` when done."""

    def __init__(self, base_url: str, api_key: str, *, timeout_s: float = 5.0) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._renewers: set[asyncio.Task[None]] = set()

    async def publish(
        self,
        to: dict[str, str],
        action: dict[str, Any],
        exclude_connection: str | None = None,
    ) -> None:
        """``POST /v1/publish``: deliver ``action`` to ``to`` (``{"channel": addr}``…)."""
        body: dict[str, Any] = {"to": to, "action": action}
        if exclude_connection is not None:
            body["exclude"] = {"connection": exclude_connection}
        await self._call("POST", "/v1/publish", body)

    async def disconnect(self, connection_id: str) -> bool:
        """``DELETE /v1/connections/{id}``; ``False`` when the connection is unknown (404)."""
        return await self._call("DELETE", f"/v1/connections/{_seg(connection_id)}", ok404=True)

    async def join(self, connection_id: str, channel: str) -> None:
        """``PUT /v1/connections/{id}/channels/{addr}``: join the connection to ``channel``."""
        path = f"/v1/connections/{_seg(connection_id)}/channels/{_seg(channel)}"
        await self._call("PUT", path)

    async def leave(self, connection_id: str, channel: str) -> None:
        """``DELETE /v1/connections/{id}/channels/{addr}``."""
        path = f"/v1/connections/{_seg(connection_id)}/channels/{_seg(channel)}"
        await self._call("DELETE", path)

    async def register(self, name: str, url: str, actions: list[str], ttl: float) -> None:
        """``PUT /v1/services/{name}``: route ``actions`` to ``url`` for ``ttl`` seconds."""
        body = {"url": url, "actions": actions, "ttl": ttl}
        await self._call("PUT", f"/v1/services/{_seg(name)}", body)

    async def routes(self) -> list[dict[str, Any]]:
        """``GET /v1/routes``: the live route table, every source (docs/api.md)."""
        body = await self._request("GET", "/v1/routes")
        routes: list[dict[str, Any]] = msgspec.json.decode(body or b"[]")
        return routes

    def keep_registered(
        self, name: str, url: str, actions: list[str], ttl: float
    ) -> asyncio.Task[None]:
        """Start a task that registers now and renews every ``ttl / 3`` seconds.

        A failed renewal is logged (once until the next success) and retried
        after ``min(1 s, ttl / 3)``. The task runs until cancelled or
        :meth:`aclose`; each round is bounded by the client timeout.
        """
        task = asyncio.get_running_loop().create_task(self._renew(name, url, actions, ttl))
        self._renewers.add(task)
        task.add_done_callback(self._renewers.discard)
        return task

    async def aclose(self) -> None:
        """Stop the renewers and close the session."""
        renewers = list(self._renewers)
        for task in renewers:
            task.cancel()
        for task in renewers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # Internals

    async def _renew(self, name: str, url: str, actions: list[str], ttl: float) -> None:
        period = ttl / 3
        failing = False
        while True:  # until cancelled (aclose); one bounded call per round
            try:
                await self.register(name, url, actions, ttl)
            except PublishError as exc:
                if not failing:
                    log.warning("registration of %s failed: %s", name, exc)
                failing = True
                await asyncio.sleep(min(1.0, period))
                continue
            if failing:
                log.info("registration of %s renewed again", name)
            failing = False
            await asyncio.sleep(period)

    async def _call(self, method: str, path: str, body: Any = None, *, ok404: bool = False) -> bool:
        return await self._request(method, path, body, ok404=ok404) is not None

    async def _request(
        self, method: str, path: str, body: Any = None, *, ok404: bool = False
    ) -> bytes | None:
        """The answer's body on 2xx; ``None`` on a 404 when ``ok404``; else PublishError."""
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        data = None if body is None else _encoder.encode(body)
        headers = {"Content-Type": "application/json"} if data is not None else None
        try:
            async with self._session.request(
                method, URL(self._base + path, encoded=True), data=data, headers=headers
            ) as resp:
                if 200 <= resp.status < 300:
                    return await resp.read()
                if ok404 and resp.status == 404:
                    return None
                text = (await resp.content.read(512)).decode(errors="replace")
                raise PublishError(resp.status, text)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PublishError(0, f"{type(exc).__name__}: {exc}") from None
