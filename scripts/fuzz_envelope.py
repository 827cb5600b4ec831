#!/usr/bin/env python
"""Fuzz the envelope decoder and the core's dispatch of inbound actions.

Each input is fed, as the transport would feed one complete text message, to
two targets:

1. :func:`wsgate.protocol.envelope.decode_action` — must return an
   ``Action`` or a ``DecodeFailure``, never raise;
2. a core :class:`~wsgate.core.gateway.Gateway` (memory history, a manual
   clock, a recording sink, like ``tests/core/harness.py``), through
   ``Connection.on_message`` — so dispatch and the built-in payload decoding
   (``msgspec.json.decode(raw, type=JoinPayload)`` etc. in
   ``wsgate/core/builtin.py``) run too. Every answer must be valid JSON; an
   ``@@wsgate/ERROR`` must carry a documented code other than ``INTERNAL``;
   nothing may be logged at ERROR; the connection must not be closed.

The transport hands the core only UTF-8-valid text (it closes 1007
otherwise), so an input that is not UTF-8 reaches the gateway with its bad
bytes replaced by U+FFFD, and ``decode_action`` only with ``--raw-utf8``
(which then reports that it raises ``UnicodeDecodeError``).

Engines: ``atheris`` (coverage-guided, libFuzzer; ``pip install atheris``)
or ``hypothesis`` (a fallback). Both stop after ``--seconds`` (default 60)
and exit 1 on the first crash, printing the input (and writing it to
``--crash-dir``).

    python scripts/fuzz_envelope.py --seconds 60
    python scripts/fuzz_envelope.py --engine hypothesis --seconds 30
    python scripts/fuzz_envelope.py --replay crash-<sha1>   # re-run one input
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import msgspec

from wsgate.auth.policy import ChannelPolicy
from wsgate.auth.principal import Principal
from wsgate.backends.memory import MemoryHistory
from wsgate.core.gateway import Gateway
from wsgate.core.presence import PresenceBatcher
from wsgate.protocol.envelope import Action, DecodeFailure, decode_action
from wsgate.typing import NodeId

DOCUMENTED = {
    "BAD_REQUEST",
    "TOO_LARGE",
    "NO_ROUTE",
    "FORBIDDEN",
    "NOT_JOINED",
    "RATE_LIMITED",
    "UPSTREAM_TIMEOUT",
    "UPSTREAM_ERROR",
    "UPSTREAM_UNAVAILABLE",
}
MAX_MESSAGE = 65536

SEEDS = [
    b'{"type":"@@wsgate/PING","payload":{"a":[1,2]},"meta":{"id":"p"}}',
    b'{"type":"@@wsgate/JOIN","payload":{"channel":"acme:orders/42","since":0},"meta":{"id":"j"}}',
    b'{"type":"@@wsgate/LEAVE","payload":{"channel":"acme:orders/42"},"meta":{"id":"l"}}',
    b'{"type":"@@wsgate/NAVIGATE","payload":{"view":"orders/1","hub":"acme","since":3}}',
    b'{"type":"chat/M","payload":"hi","meta":{"channel":"acme:orders/42","echo":true}}',
    b'{"type":"orders/UPDATE","payload":null,"error":false,"meta":{"id":"x","channel":"acme"}}',
    b'{"type":"@@wsgate/JOIN","payload":{"channel":"public:lobby"}}',
    b'{"type":"x","meta":{"id":"\\ud800"}}',
    b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
]


class Crash(Exception):
    """An invariant broke; the message says which."""


class _Timer:
    def cancel(self) -> None:
        pass


class _Clock:
    """A Scheduler whose timers never fire (presence batching is off)."""

    def time(self) -> float:
        return 0.0

    def call_later(self, delay: float, callback: Any, /) -> _Timer:
        return _Timer()


class _Sink:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.closed: tuple[int, str] | None = None

    def send(self, data: bytes) -> None:
        self.frames.append(data)

    def close(self, code: int, reason: str = "") -> None:
        self.closed = (code, reason)


class _LogTrap(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Target:
    """One gateway and one connection, reused across inputs (reset now and then)."""

    def __init__(self) -> None:
        self.trap = _LogTrap()
        logging.getLogger().addHandler(self.trap)
        self.fed = 0
        self._new()

    def _new(self) -> None:
        clock = _Clock()
        self.gw = Gateway(
            node_id=NodeId("n1"),
            policy=ChannelPolicy([], True),
            scheduler=clock,
            history=MemoryHistory(100, 300.0, clock.time),
            relays=["chat/*"],
            presence=PresenceBatcher(clock, batch_ms=0, max_members=100, large_batch_ms=1000),
            max_channels=8,
        )
        self.sink = _Sink()
        principal = Principal(sub="alice", name="Alice", org="acme", orgs=("acme",))
        self.conn = self.gw.open(self.sink, principal, "127.0.0.1")
        self.peer_sink = _Sink()
        bob = Principal(sub="bob", name="Bob", org="acme", orgs=("acme",))
        self.gw.open(self.peer_sink, bob, "127.0.0.1")
        self.sink.frames.clear()

    def feed(self, data: bytes, raw_utf8: bool = False) -> None:
        if len(data) > MAX_MESSAGE:
            return  # the transport closes 1009 before the core sees it
        try:
            data.decode("utf-8")
            utf8 = True
        except UnicodeDecodeError:
            utf8 = False
        if utf8 or raw_utf8:
            try:
                result = decode_action(data)
            except Exception as exc:
                raise Crash(f"decode_action raised {exc!r}") from exc
            if not isinstance(result, Action | DecodeFailure):
                raise Crash(f"decode_action returned {result!r}")
        if not utf8:
            # Still worth a run through the gateway: the same bytes, made UTF-8.
            data = data.decode("utf-8", "replace").encode()
            if len(data) > MAX_MESSAGE:
                return
        self.fed += 1
        if self.fed % 5000 == 0:
            self._new()  # bounded state (channels, history)
        self.sink.frames.clear()
        self.peer_sink.frames.clear()
        try:
            self.conn.on_message(data)
        except Exception as exc:
            raise Crash(f"on_message raised {exc!r}") from exc
        if self.trap.records:
            record = self.trap.records[0]
            self.trap.records.clear()
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + "".join(traceback.format_exception(*record.exc_info))
            raise Crash(f"logged at {record.levelname}: {text}")
        if self.sink.closed is not None:
            raise Crash(f"connection closed {self.sink.closed}")
        if not self.sink.frames and not _maybe_silent(data):
            raise Crash("no answer")
        for frame in self.sink.frames + self.peer_sink.frames:
            try:
                action = msgspec.json.decode(frame)
            except msgspec.DecodeError as exc:
                raise Crash(f"answer is not JSON: {frame[:200]!r}") from exc
            if action.get("type") == "@@wsgate/ERROR":
                code = action["payload"]["code"]
                if code not in DOCUMENTED:
                    raise Crash(f"error code {code}: {action}")


def _maybe_silent(data: bytes) -> bool:
    """A relay (``chat/*``) to a joined channel has no answer for its sender."""
    return b"chat/" in data


def report(data: bytes, exc: BaseException, crash_dir: Path) -> None:
    crash_dir.mkdir(parents=True, exist_ok=True)
    path = crash_dir / f"crash-{hashlib.sha1(data).hexdigest()}"
    path.write_bytes(data)
    print(f"\nCRASH: {exc}\ninput ({len(data)} bytes): {data[:500]!r}\nsaved: {path}", flush=True)


# --- engines ------------------------------------------------------------------------


def run_atheris(args: argparse.Namespace, target: Target) -> int:
    import atheris

    state = {"n": 0, "start": time.monotonic()}

    def one(data: bytes) -> None:
        state["n"] += 1
        try:
            target.feed(data, args.raw_utf8)
        except Crash as exc:
            report(data, exc, args.crash_dir)
            os._exit(1)

    corpus = args.crash_dir / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(SEEDS):
        (corpus / f"seed-{i}").write_bytes(seed)
    argv = [
        sys.argv[0],
        f"-max_total_time={args.seconds}",
        f"-max_len={args.max_len}",
        "-print_final_stats=1",
        "-timeout=10",
        str(corpus),
    ]
    atheris.instrument_all()  # coverage of every loaded Python function (wsgate included)
    atheris.Setup(argv, one)
    atheris.Fuzz()  # exits the process (0 when the time is up without a crash)
    return 0


def run_hypothesis(args: argparse.Namespace, target: Target) -> int:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(), c, max_size=4),
        max_leaves=12,
    )
    channel = st.sampled_from(["acme:x", "public:lobby", "acme", "globex:y", "", "a:..", "b" * 70])
    envelope = st.fixed_dictionaries(
        {
            "type": st.sampled_from(
                ["@@wsgate/JOIN", "@@wsgate/LEAVE", "@@wsgate/NAVIGATE", "@@wsgate/PING", "chat/M"]
            )
            | st.text(max_size=10)
        },
        optional={
            "payload": st.fixed_dictionaries(
                {}, optional={"channel": channel | values, "view": values, "since": values}
            )
            | values,
            "meta": st.fixed_dictionaries(
                {}, optional={"id": st.text(max_size=70) | values, "channel": channel | values}
            )
            | values,
            "error": values,
        },
    )
    inputs = st.one_of(
        st.binary(max_size=args.max_len),
        st.sampled_from(SEEDS),
        envelope.map(lambda e: json.dumps(e).encode()),
        st.integers(1, 32_000).map(lambda n: b"[" * n + b"]" * n),
    )
    deadline = time.monotonic() + args.seconds
    count = {"n": 0}
    failure: list[tuple[bytes, BaseException]] = []

    @settings(
        max_examples=10**9,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(inputs)
    def one(data: bytes) -> None:
        if time.monotonic() > deadline:
            raise _TimeUp
        count["n"] += 1
        try:
            target.feed(data, args.raw_utf8)
        except Crash as exc:
            failure.append((data, exc))
            raise

    try:
        one()
    except _TimeUp:
        pass
    except Crash:
        pass
    print(f"hypothesis: {count['n']} executions in {args.seconds}s", flush=True)
    if failure:
        data, exc = failure[-1]  # the shrunk one
        report(data, exc, args.crash_dir)
        return 1
    return 0


class _TimeUp(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--engine", choices=["atheris", "hypothesis"], default="atheris")
    parser.add_argument("--max-len", type=int, default=4096)
    parser.add_argument("--raw-utf8", action="store_true", help="feed non-UTF-8 to decode_action")
    parser.add_argument("--crash-dir", type=Path, default=Path(".fuzz"))
    parser.add_argument("--replay", type=Path, help="feed one saved input and exit")
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.INFO)  # only the trap listens
    target = Target()
    if args.replay:
        data = args.replay.read_bytes()
        try:
            target.feed(data, args.raw_utf8)
        except Crash as exc:
            print(f"CRASH: {exc}")
            return 1
        print("ok")
        return 0
    if args.engine == "atheris":
        try:
            import atheris  # noqa: F401
        except ImportError:
            print("atheris is not installed: use --engine hypothesis", file=sys.stderr)
            return 2
        return run_atheris(args, target)
    return run_hypothesis(args, target)


if __name__ == "__main__":
    sys.exit(main())
