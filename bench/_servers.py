"""Servers under test, as subprocesses: the gateway, the picows reference and the Node anchors.

The anchors (``start_anchor``) are uWebSockets.js and Node ``ws``, run by
``bench/anchors/*.mjs`` from the modules ``bench/anchors/install.sh`` puts in
``bench/.anchors/``; each exits when its parent (this process) is gone.

Both run pinned to one CPU (``SERVER_CPU``) while the load generator runs on
another (``CLIENT_CPU``), so the two do not fight for a core more than a
2-core machine makes unavoidable. Output goes to a log file, never to a pipe
(a full pipe would stall the server mid-benchmark).

Lifecycle::

    srv = start_reference(workdir)      # or start_gateway(workdir), start_anchor("uws", workdir)
    ...                                 # srv.url, srv.cpu_seconds(), srv.rss_bytes()
    srv.stop()                          # SIGTERM, bounded wait, then SIGKILL
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

__all__ = [
    "ANCHORS",
    "CLIENT_CPU",
    "OBS_CONFIG",
    "SERVER_CPU",
    "BenchError",
    "Scraper",
    "ServerProcess",
    "callgrind_command",
    "callgrind_last_ir",
    "callgrind_toggle",
    "child_env",
    "free_port",
    "gateway_source",
    "pin_self",
    "start_anchor",
    "start_gateway",
    "start_profiler",
    "start_reference",
    "stop_profiler",
]

BENCH_DIR: Final = Path(__file__).resolve().parent
REPO: Final = BENCH_DIR.parent

SERVER_CPU: Final = 0
CLIENT_CPU: Final = 1

ANCHORS: Final = ("uws", "ws")
"""The Node servers: uWebSockets.js (its native addon) and Node ``ws``."""
ANCHOR_DIR: Final = BENCH_DIR / "anchors"
ANCHOR_MODULES: Final = BENCH_DIR / ".anchors"
GATEWAY_API_KEY: Final = "bench-only"

START_TIMEOUT_S: Final = 20.0
STOP_TIMEOUT_S: Final = 15.0

_CLK_TCK: Final = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time process ``pid`` has used so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


_PAGE: Final = os.sysconf("SC_PAGE_SIZE")


class BenchError(Exception):
    """A benchmark could not run or its result is not trustworthy (exit non-zero)."""


_MACHINE_CPUS: Final = frozenset(os.sched_getaffinity(0))
"""The CPUs this bench may use, read at import, before :func:`pin_self` narrows them."""


def _cpus() -> set[int]:
    return set(_MACHINE_CPUS)


def pin_self(cpu: int = CLIENT_CPU) -> bool:
    """Pin this process to ``cpu`` when the machine has it; tell whether it did."""
    if cpu in _cpus() and len(_cpus()) > 1:
        os.sched_setaffinity(0, {cpu})
        return True
    return False


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the usual small race applies)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    """One server subprocess: its URL, its CPU time and memory, and how to stop it."""

    def __init__(
        self, name: str, argv: list[str], log_path: Path, ready: str,
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self.api_url = ""
        """The gateway's internal API (``http://127.0.0.1:<port>``); empty for the others."""
        cpus = _cpus()
        pin = {SERVER_CPU} if SERVER_CPU in cpus and len(cpus) > 1 else None

        def preexec() -> None:
            if pin is not None:
                os.sched_setaffinity(0, pin)

        env = child_env()
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec,
            env=env,
            cwd=str(REPO),
        )
        self.url = self._wait_ready(ready, start_timeout_s)

    def _wait_ready(self, marker: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            for line in text.splitlines():
                if marker in line:
                    return line.split(marker, 1)[1].strip()
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-2000:]
        raise BenchError(f"{self.name} did not start (exit {self.proc.returncode}):\n{tail}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU time the server has used so far."""
        return proc_cpu_seconds(self.pid)

    def rss_bytes(self) -> int:
        """Resident set size (VmRSS)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise BenchError("no VmRSS")

    def pss_bytes(self) -> int:
        """Proportional set size (shared pages divided among their users)."""
        for line in Path(f"/proc/{self.pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
        raise BenchError("no Pss")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def stop(self) -> None:
        """SIGTERM, wait up to STOP_TIMEOUT_S, then SIGKILL; close the log."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()

    def log_tail(self, chars: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def start_reference(
    workdir: Path, read_buffer: int = 2048, aiofastnet: str = "off"
) -> ServerProcess:
    """Start ``bench/reference_server.py`` on a free port (uvloop's transport by default)."""
    port = free_port()
    argv = [
        sys.executable,
        str(BENCH_DIR / "reference_server.py"),
        "--port",
        str(port),
        "--read-buffer",
        str(read_buffer),
        "--aiofastnet",
        aiofastnet,
    ]
    return ServerProcess("reference", argv, workdir / f"reference-{port}.log", "listening on ")


GATEWAY_CONFIG: Final = """\
[server]
listen = "127.0.0.1:{port}"
allowed_origins = ["*"]
max_channels_per_connection = 64
outbound_high_water_bytes = 16777216
# No heartbeat pings during a run: 10,000 pings and pongs every ~30 s would
# land in whichever (gateway or reference) round happens to be running.
heartbeat_ms = 600000

[api]
listen = "127.0.0.1:{api_port}"
keys = ["{api_key}"]

[auth]
keys = ["{key}"]

[presence]
max_members = 100
batch_ms = 50

# Every bench client comes from 127.0.0.1 and signs in as the same user, and
# the publisher sends bursts: the per-IP, per-user and per-connection limits
# would (rightly) refuse that. Raised, not disabled, so their checks still run.
[limits]
max_connections = 100000
max_connections_per_user = 100000
max_connections_per_ip = 100000
handshake_rate_per_ip = "100000/1s"
handshake_burst_per_ip = 100000
default_rate = "100000/1s"
default_burst = 100000

[[relays]]
match = "bench/*"
"""


def child_env() -> dict[str, str]:
    """The environment of a server process: this one's, with this tree's ``src`` *after*
    the caller's ``PYTHONPATH``, so that ``PYTHONPATH=/tmp/base/src python bench/X.py``
    runs the base's gateway with this bench (it used to go first, so every "base" run
    ran this tree's code; :func:`gateway_source` says which one is run)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (env.get("PYTHONPATH", ""), str(REPO / "src")) if p
    )
    return env


def gateway_source() -> str:
    """The ``wsgate`` package file a server process started by this bench imports."""
    out = subprocess.run(
        [sys.executable, "-c", "import wsgate; print(wsgate.__file__)"],
        capture_output=True, text=True, timeout=30, env=child_env(), cwd=str(REPO),
    )  # fmt: skip
    return out.stdout.strip() or f"(import failed: {out.stderr.strip()[-200:]})"


def _cli(*args: str) -> str:
    env = child_env()
    out = subprocess.run(
        [sys.executable, "-m", "wsgate.cli", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=str(REPO),
    )
    if out.returncode != 0:
        raise BenchError(f"wsgate {' '.join(args)} failed ({out.returncode}): {out.stderr}")
    return out.stdout.strip()


OBS_CONFIG: Final = {
    "on": '[metrics]\nenabled = true\n\n[log]\nformat = "json"\n',
    "off": '[metrics]\nenabled = false\n\n[log]\nformat = "text"\n',
}
"""``--obs``: observability on (``/metrics`` and JSON logs) or off (no metrics, text logs)."""


def start_gateway(
    workdir: Path, command: list[str] | None = None, *, obs: str | None = None,
    name: str = "gateway", start_timeout_s: float = START_TIMEOUT_S, compression: bool = False,
    extra: str = "",
) -> tuple[ServerProcess, str]:
    """Write a bench config, start ``wsgate serve``; return it and a session cookie value.

    ``command`` replaces ``python -m wsgate.cli`` (e.g. a wrapper that
    instruments the gateway); ``serve --config FILE`` is appended to it.
    ``obs``: a key of :data:`OBS_CONFIG` appended to the config (``None``: the defaults).
    ``compression``: ``[server] compression = true`` (permessage-deflate).
    ``extra`` is TOML appended to the bench config (``[[namespaces]]`` rules, ``[inbox]``).
    """
    port, api_port = free_port(), free_port()
    config = workdir / f"gateway-{port}.toml"
    text = GATEWAY_CONFIG.format(
        port=port, api_port=api_port, api_key=GATEWAY_API_KEY, key=_cli("keys", "new")
    ) + ("" if obs is None else "\n" + OBS_CONFIG[obs]) + extra
    if compression:
        text = text.replace("[server]\n", "[server]\ncompression = true\n", 1)
    config.write_text(text)
    cookie = _cli("cookie", "--config", str(config), "--user", "bench", "--org", "acme")
    argv = [*(command or [sys.executable, "-m", "wsgate.cli"]), "serve", "--config", str(config)]
    srv = ServerProcess(
        name, argv, workdir / f"{name}-{port}.log", "listening on ", start_timeout_s
    )
    srv.api_url = f"http://127.0.0.1:{api_port}"
    return srv, cookie


def callgrind_command(out: Path, argv: list[str] | None = None) -> list[str]:
    """``argv`` (default ``python -m wsgate.cli``) under callgrind, instrumentation off
    until :func:`callgrind_toggle` turns it on; each dump goes to ``out.<n>``."""
    return [
        "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
        *(argv or [sys.executable, "-m", "wsgate.cli"]),
    ]  # fmt: skip


def callgrind_toggle(pid: int, on: bool) -> None:
    """Instrument ``pid`` (a :func:`callgrind_command` process) from now, or stop and
    dump what it counted since the last dump (then :func:`callgrind_last_ir`)."""
    argv = ["callgrind_control", "-i", "on" if on else "off", str(pid)]
    subprocess.run(argv, check=True, capture_output=True, timeout=120)
    if not on:
        subprocess.run(["callgrind_control", "-d", str(pid)], check=True,
                       capture_output=True, timeout=300)  # fmt: skip


def callgrind_last_ir(out: Path) -> int:
    """Instructions (``Ir``) in the newest dump of ``out`` (its ``totals:`` line; callgrind
    may write ``summary: 0`` beside it)."""
    parts = sorted(out.parent.glob(out.name + ".*"), key=lambda p: int(p.suffix[1:]))
    if not parts:
        raise BenchError(f"no callgrind dump {out}.*")
    found = [
        int(line.split()[1])
        for line in parts[-1].read_text(errors="replace").splitlines()
        if line.startswith(("summary:", "totals:"))
    ]
    if not found:
        raise BenchError(f"no totals in {parts[-1]}")
    return max(found)


class Scraper:
    """A thread that GETs ``<api_url>/metrics`` every ``every_s`` seconds, as Prometheus
    would (but far more often: 15-60 s is usual), so the scrapes' cost is measured too.

    Bounded: one request at a time, each with a 5 s timeout; :meth:`stop` ends it
    within one period. :attr:`scrapes` counts the successful ones, :attr:`failures`
    the others.
    """

    def __init__(self, api_url: str, every_s: float) -> None:
        import threading

        self.url = f"{api_url}/metrics"
        self.every_s = every_s
        self.scrapes = 0
        self.failures = 0
        self.seconds: list[float] = []
        """Each successful scrape's duration, request to last byte (bounded by the run)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-scraper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import urllib.request

        while not self._stop.wait(self.every_s):
            try:
                t0 = time.perf_counter()
                with urllib.request.urlopen(self.url, timeout=5) as resp:
                    resp.read()
                self.seconds.append(time.perf_counter() - t0)
                self.scrapes += 1
            except OSError:
                self.failures += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.every_s + 6)


def start_anchor(kind: str, workdir: Path) -> ServerProcess:
    """Start the Node anchor ``kind`` (``uws`` or ``ws``) on a free port, pinned like the rest.

    Raises :class:`BenchError` when Node or the installed anchors are missing, or the
    uWebSockets.js native addon does not load (the server exits 2 saying why).
    """
    if kind not in ANCHORS:
        raise BenchError(f"unknown anchor {kind!r} (one of {ANCHORS})")
    node = shutil.which("node")
    if node is None:
        raise BenchError("node is not installed (the anchors need Node >= 18)")
    if not (ANCHOR_MODULES / "node_modules").is_dir():
        raise BenchError(f"no {ANCHOR_MODULES}/node_modules: run sh bench/anchors/install.sh")
    port = free_port()
    argv = [
        node,
        str(ANCHOR_DIR / f"{kind}_server.mjs"),
        "--port",
        str(port),
        "--parent",
        str(os.getpid()),
        "--modules",
        str(ANCHOR_MODULES),
    ]
    return ServerProcess(kind, argv, workdir / f"{kind}-{port}.log", "listening on ")


def start_profiler(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy (collapsed stacks) on ``pid`` into ``out``; stop it with :func:`stop_profiler`."""
    argv = ["py-spy", "record", "--pid", str(pid), "--rate", "250", "--format", "raw"]
    return subprocess.Popen(
        [*argv, "--nonblocking", "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_profiler(proc: subprocess.Popen[bytes]) -> None:
    """Let py-spy write its file (SIGINT), killing it if it will not stop."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
