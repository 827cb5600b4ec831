"""Run the Autobahn conformance cases (kosoku) against the wsgate transport.

Starts :func:`wsgate.transport.start_listener` with an echo handler on a free
port, runs ``kosoku`` in fuzzingclient mode against it as a subprocess,
parses the report (``index.json``) and prints pass/fail counts per section.
Exit status: 0 when every case passed (OK, NON-STRICT or INFORMATIONAL, for
both the exchange and the close), 1 when any failed, 2 when kosoku could not
run to a report (timeout, crash).

    python scripts/autobahn.py                      # 1.*–7.*, 9.*, 10.*, 12.*, 13.*
    python scripts/autobahn.py -i '5.*' -i 7.1.2    # a selection
    python scripts/autobahn.py --timeout 600 -p 4

Every wait is bounded: the whole kosoku run by ``--timeout`` seconds (then
it is killed), the server's shutdown by its drain grace period.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from wsgate.auth.principal import Principal
from wsgate.config import ServerConfig
from wsgate.transport import start_listener
from wsgate.transport.base import BinarySink, Session, Sink

__all__ = ["DEFAULT_CASES", "EchoHandler", "main", "not_strict", "run"]

DEFAULT_CASES = ("1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*", "12.*", "13.*")
_PASS = frozenset({"OK", "NON-STRICT", "INFORMATIONAL"})


class EchoSession:
    """Echoes every message back, text as text and binary as binary."""

    __slots__ = ("_sink",)

    def __init__(self, sink: BinarySink) -> None:
        self._sink = sink

    def on_message(self, data: bytes) -> None:
        self._sink.send(data)

    def on_binary(self) -> None:  # pragma: no cover - on_binary_message wins
        pass

    def on_binary_message(self, data: bytes) -> None:
        self._sink.send_binary(data)

    def on_close(self, code: int) -> None:
        pass


class EchoHandler:
    """A :class:`~wsgate.transport.base.ConnectionHandler` that echoes."""

    def open(self, sink: Sink, principal: Principal, peer: str) -> Session:
        assert hasattr(sink, "send_binary"), "the transport's sinks send binary"
        return EchoSession(sink)  # type: ignore[arg-type]


def echo_config() -> ServerConfig:
    """Limits sized for section 9 (messages up to 16 MiB); permessage-deflate for 12 and 13."""
    return ServerConfig(
        listen="127.0.0.1:0",
        path="/",  # kosoku requests /
        allowed_origins=["*"],
        max_message_bytes=64 << 20,
        outbound_high_water_bytes=256 << 20,
        heartbeat_ms=600_000,
        heartbeat_timeout_ms=60_000,
        compression=True,
    )


def summarize(index: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, Counter[str]]:
    """Per section (``"5"``), counts of ``passed`` and ``failed`` cases."""
    sections: dict[str, Counter[str]] = {}
    for cases in index.values():
        for case_id, entry in cases.items():
            section = case_id.split(".", 1)[0]
            ok = entry.get("behavior") in _PASS and entry.get("behaviorClose") in _PASS
            sections.setdefault(section, Counter())["passed" if ok else "failed"] += 1
    return sections


def failures(index: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[str]:
    """``"<case> <behavior>/<behaviorClose> code=<n>"`` for every failed case."""
    out = []
    for cases in index.values():
        for case_id, e in cases.items():
            if not (e.get("behavior") in _PASS and e.get("behaviorClose") in _PASS):
                out.append(
                    f"{case_id} {e.get('behavior')}/{e.get('behaviorClose')}"
                    f" code={e.get('remoteCloseCode')}"
                )
    return sorted(out, key=lambda s: [int(p) for p in s.split(" ", 1)[0].split(".")])


def not_strict(index: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[str]:
    """Passed cases that are NON-STRICT (not INFORMATIONAL) in behavior or close."""
    out = []
    for cases in index.values():
        for case_id, e in cases.items():
            b, c = e.get("behavior"), e.get("behaviorClose")
            if b in _PASS and c in _PASS and "NON-STRICT" in (b, c):
                out.append(f"{case_id} {b}/{c} code={e.get('remoteCloseCode')}")
    return sorted(out, key=lambda s: [int(p) for p in s.split(" ", 1)[0].split(".")])


async def run(
    cases: Sequence[str], *, parallelism: int = 1, timeout: float = 900.0, outdir: str
) -> dict[str, Any] | None:
    """Serve the echo, run kosoku on ``cases``, return its ``index.json`` (None on timeout)."""
    listener = await start_listener(
        handler=EchoHandler(),
        config=echo_config(),
        authenticate=lambda headers: Principal(sub="autobahn"),
        sign_in_url="/sign-in",
    )
    kosoku = Path(sys.executable).with_name("kosoku")
    argv = [str(kosoku) if kosoku.exists() else "kosoku", f"127.0.0.1:{listener.port}"]
    for case in cases:
        argv += ["-i", case]
    argv += ["-p", str(parallelism), "-o", outdir]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        try:
            _, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            print(f"kosoku did not finish within {timeout:.0f} s", file=sys.stderr)
            return None
        index_file = os.path.join(outdir, "index.json")
        if not os.path.exists(index_file):
            print(f"kosoku wrote no report (exit {proc.returncode}):", file=sys.stderr)
            print(err.decode(errors="replace")[-2000:], file=sys.stderr)
            return None
        with open(index_file) as f:
            index: dict[str, Any] = json.load(f)
        return index
    finally:
        await listener.drain(1001)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-i", "--include", action="append", metavar="CASE")
    parser.add_argument("-p", "--parallelism", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds for the whole run")
    parser.add_argument("-o", "--outdir", help="keep the report here (default: a temp dir)")
    args = parser.parse_args(argv)
    cases = args.include or list(DEFAULT_CASES)

    with tempfile.TemporaryDirectory(prefix="wsgate-autobahn-") as tmp:
        outdir = args.outdir or tmp
        index = asyncio.run(
            run(cases, parallelism=args.parallelism, timeout=args.timeout, outdir=outdir)
        )
    if index is None:
        return 2
    total: Counter[str] = Counter()
    for section, counts in sorted(summarize(index).items(), key=lambda kv: int(kv[0])):
        total.update(counts)
        print(f"section {section:>2}: {counts['passed']:4d} passed {counts['failed']:4d} failed")
    print(f"total     : {total['passed']:4d} passed {total['failed']:4d} failed")
    for line in failures(index):
        print("FAILED", line)
    for line in not_strict(index):
        print("passed, not strictly:", line)
    return 1 if total["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
