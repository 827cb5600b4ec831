"""Run a gateway node beside real service processes for the end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from wsgate.config import Config

from ..helpers import free_port
from .gateway import API_KEY, Running, make_config, running

ROOT = Path(__file__).resolve().parents[2]
SECRET = "e2e-shared-secret"


class ServiceProcess:
    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await asyncio.wait_for(self.proc.wait(), 5)


async def start_service(port: int, api_url: str, name: str = "svc", module: str = "tests.e2e.service_app",
                        extra: list[str] | None = None) -> ServiceProcess:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, "--port", str(port), "--secret", SECRET,
        "--api", api_url, "--api-key", API_KEY, *(["--name", name] if module.endswith("service_app") else []),
        *(extra or []),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 15)
    assert line, "service process did not start"
    return ServiceProcess(proc, port)


def services_config(svc_port: int, pipeline: int = 1, **overrides: Any) -> Config:
    dead_port = free_port()  # nothing listens there
    base = f"http://127.0.0.1:{svc_port}"
    services = {
        "svc": {"url": f"{base}/actions", "secret": SECRET, "timeout_ms": 2000, "pipeline": pipeline},
        "slow": {"url": f"{base}/slow", "secret": SECRET, "timeout_ms": 300},
        "fail": {"url": f"{base}/fail", "secret": SECRET},
        "malformed": {"url": f"{base}/malformed", "secret": SECRET},
        "shape": {"url": f"{base}/shape", "secret": SECRET},
        "down": {"url": f"http://127.0.0.1:{dead_port}/actions", "secret": SECRET},
    }
    routes = [
        {"match": "svc/*", "service": "svc"},
        {"match": "admin/*", "service": "svc", "roles": ["admin"]},
        {"match": "slow/*", "service": "slow"},
        {"match": "fail/*", "service": "fail"},
        {"match": "bad/*", "service": "malformed"},
        {"match": "shape/*", "service": "shape"},
        {"match": "down/*", "service": "down"},
        {"match": "@@wsgate/*", "service": "svc"},
    ]
    routing = {"registered_secret": SECRET, **overrides.pop("routing", {})}
    return make_config(services=services, routes=routes, routing=routing, **overrides)


@contextlib.asynccontextmanager
async def with_service(pipeline: int = 1, **overrides: Any) -> AsyncIterator[tuple[Running, ServiceProcess]]:
    port = free_port()
    async with running(services_config(port, pipeline, **overrides)) as gw:
        svc = await start_service(port, gw.node.api_url)
        try:
            yield gw, svc
        finally:
            await svc.stop()
