"""Both sides of a load-generator process (``fanout.py``, ``storm.py``).

A bench runs its own file again with ``--worker ...`` as a child process that
drives the clients for one server. The two talk one JSON object a line: the
parent writes a command line to the child's stdin, the child answers with
``{"ok": true, ...}`` or ``{"ok": false, "error": ...}`` on its stdout; its
first line (the *hello*) says it is ready. Its stderr goes to a log file,
whose tail is in the error when the child fails.

The parent's side (:class:`Worker`)::

    w = Worker(srv, [__file__, "--worker", srv.name, ...], log, ready_timeout=60)
    w.hello                             # the first answer
    w.ask("burst ...", timeout=20)      # one command, one answer (BenchError if not ok)
    w.cpu_seconds()
    w.stop()                            # "quit", bounded wait, then SIGKILL; close the log

The child's side::

    reply(ok=True, ...)                 # the hello, once the clients are open
    await serve({"burst": do_burst})    # each an async (cmd words) -> the ok answer's fields
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import select
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from _servers import BenchError, ServerProcess, proc_cpu_seconds

__all__ = ["Command", "Worker", "reply", "serve"]

QUIT_TIMEOUT_S = 30.0
"""How long ``stop`` waits for the child to quit before it kills it."""

Command = Callable[[list[str]], Awaitable[dict[str, Any]]]
"""The child's handler of one command: its words in, the fields of its ok answer out."""


class Worker:
    """One load generator for the server ``srv``: ``python argv...``, answering on stdout."""

    def __init__(
        self, srv: ServerProcess, argv: list[str], log: Path, ready_timeout: float
    ) -> None:
        self.kind = srv.name
        self.srv = srv
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log
        )
        self.hello = self._read(ready_timeout)
        """The child's first answer: it is ready (and what it says about itself)."""

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.proc.kill()
            err = self.log_path.read_text(errors="replace")[-1500:]
            why = "timed out" if not ready else f"exited ({self.proc.wait()})"
            raise BenchError(f"{self.kind} load generator {why}:\n{err}")
        answer: dict[str, Any] = json.loads(line)
        if not answer.get("ok"):
            raise BenchError(f"{self.kind}: {answer.get('error')}")
        return answer

    def ask(self, command: str, timeout: float) -> dict[str, Any]:
        """Send one command line; its answer within ``timeout`` s, else BenchError."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()
        return self._read(timeout)

    def cpu_seconds(self) -> float:
        """User + system CPU time the child, and the processes it runs, have used so far
        (fanout.py's receivers in C are a child of its worker)."""
        pid = self.proc.pid
        total = proc_cpu_seconds(pid)
        for children in Path(f"/proc/{pid}/task").glob("*/children"):
            for child in children.read_text().split():
                with contextlib.suppress(OSError):  # gone meanwhile
                    total += proc_cpu_seconds(int(child))
        return total

    def stop(self) -> None:
        """``quit``, wait up to QUIT_TIMEOUT_S, then SIGKILL; close the log."""
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(b"quit\n")
                self.proc.stdin.flush()
                self.proc.wait(QUIT_TIMEOUT_S)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def reply(**kw: Any) -> None:
    """The child's side: one answer line to the parent (read by ``Worker._read``)."""
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()


async def serve(commands: Mapping[str, Command]) -> None:
    """The child's side: answer the parent's command lines on stdin until ``quit`` or EOF.

    One line at a time (the parent waits for each answer): ``commands[word](words)``
    gives the fields of an ``ok`` answer; a BenchError it raises, or an unknown
    command, is answered ``ok: false`` with the error. Ends when the parent says
    ``quit`` or its end of the pipe closes (it exited).
    """
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        handler = commands.get(cmd[0])
        if handler is None:
            reply(ok=False, error=f"unknown command {cmd!r}")
            continue
        try:
            answer = await handler(cmd)
        except BenchError as exc:
            reply(ok=False, error=str(exc))
        else:
            reply(ok=True, **answer)
