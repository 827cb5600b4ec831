"""The gateway's hand-written HTTP/1.1 answer parser against one on httptools (llhttp).

Each case is a recorded answer (or a run of them) as a service sends it; each
parser reads it as the gateway's connection would, collecting (status, body,
close-after) per answer, and the figure is the best of ``--repeat`` rounds
of ns per answer, the parsers interleaved round by round:

- ``httptools``: ``bench/_parse_llhttp.py``, the same ``AnswerParser``
  rebuilt on llhttp with the checks the gateway adds (the candidate);
- ``hand``: :class:`wsgate.routing.http1_parse.AnswerParser`, the parser in
  use, with its cache of heads seen (a service sends the same few heads over
  and over);
- ``hand, uncached``: the same with the cache emptied before every feed (a
  head never seen before: the regular-expression parse each time).

Usage::

    python bench/http_parse.py [--number 100000] [--repeat 5]

Prints a table and the ratios hand / httptools per case (above 1: httptools
is faster). Exits non-zero when the parsers disagree on any answer.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import httptools

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _parse_llhttp import HEAD, AnswerParser

from wsgate.routing import http1_parse as hand

__all__ = ["CASES", "main"]

_BODY: Final = b'{"reply":[{"type":"echo/PONG","payload":{"n":12345,"text":"' + b"x" * 70 + b'"}}]}'
_SDK: Final = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    % (len(_BODY), _BODY)
)
_AIOHTTP: Final = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
    b"Content-Length: %d\r\nDate: Wed, 02 Dec 2026 16:40:00 GMT\r\n"
    b"Server: Python/3.11 aiohttp/3.14.5\r\n\r\n%s" % (len(_BODY), _BODY)
)
_CHUNKED: Final = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"%x\r\n%s\r\n0\r\n\r\n" % (len(_BODY), _BODY)
)
_NO_CONTENT: Final = b"HTTP/1.1 204 No Content\r\n\r\n"

CASES: Final[dict[str, tuple[list[bytes], int]]] = {
    "sdk answer, one read": ([_SDK], 1),
    "aiohttp answer, one read": ([_AIOHTTP], 1),
    "204, one read": ([_NO_CONTENT], 1),
    "chunked answer, one read": ([_CHUNKED], 1),
    "sdk answer in 3 reads": ([_SDK[:20], _SDK[20:90], _SDK[90:]], 1),
    "16 pipelined sdk answers, one read": ([_SDK * 16], 16),
}
"""Name: (the reads of one round, the answers in them)."""

Got = list[tuple[int, bytes | None, bool]]


class Ours(AnswerParser):
    """The llhttp candidate, collecting its answers, always ready for the next one."""

    def __init__(self, got: Got) -> None:
        super().__init__(1 << 20)
        self.got = got
        self.state = HEAD

    def _finish(self, body: bytes | None) -> None:
        self.chunks = []
        self.got.append((self.status, body, self.close_after))
        self.state = HEAD


class Hand(hand.AnswerParser):
    """The hand-written parser in use, the same way."""

    def __init__(self, got: Got) -> None:
        super().__init__(1 << 20)
        self.got = got
        self.state = hand.HEAD

    def _finish(self, body: bytes | None) -> None:
        self.chunks = []
        self.got.append((self.status, body, self.close_after))
        self.state = hand.HEAD


def _time(
    feed: Callable[[bytes], None], reads: list[bytes], number: int, before: Callable[[], None]
) -> float:
    start = time.perf_counter_ns()
    for _ in range(number):
        before()
        for data in reads:
            feed(data)
    return float(time.perf_counter_ns() - start)


def _nothing() -> None:
    pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--number", type=int, default=100_000, help="rounds per timing (100000)")
    ap.add_argument("--repeat", type=int, default=5, help="timings per parser, best kept (5)")
    args = ap.parse_args()
    print(
        f"httptools {httptools.__version__}, {sys.version.split()[0]}; ns per answer, best of "
        f"{args.repeat} x {args.number:,} rounds, interleaved"
    )
    hdr = (
        f"{'case':<38} {'httptools':>10} {'hand':>8} {'uncached':>9} "
        f"{'hand/ht':>8} {'uncached/ht':>12}"
    )
    print(hdr)
    print("-" * len(hdr), flush=True)
    for name, (reads, answers) in CASES.items():
        got: dict[str, Got] = {"httptools": [], "hand": [], "uncached": []}
        runs: dict[str, tuple[Callable[[bytes], None], Callable[[], None]]] = {
            "httptools": (Ours(got["httptools"]).feed, _nothing),
            "hand": (Hand(got["hand"]).feed, _nothing),
            "uncached": (Hand(got["uncached"]).feed, hand._seen.clear),
        }
        best = {k: float("inf") for k in runs}
        for _ in range(args.repeat):
            for key, (feed, before) in runs.items():
                best[key] = min(best[key], _time(feed, reads, args.number, before))
        per = {k: v / (args.number * answers) for k, v in best.items()}
        want = got["httptools"][:answers]
        for key, value in got.items():
            if value[:answers] != want or len(value) != args.repeat * args.number * answers:
                print(
                    f"{name}: {key} disagrees: {value[:answers]} != {want}, {len(value)} answers",
                    file=sys.stderr,
                )
                return 1
        ht = per["httptools"]
        print(
            f"{name:<38} {ht:>10.0f} {per['hand']:>8.0f} {per['uncached']:>9.0f} "
            f"{per['hand'] / ht:>8.2f} {per['uncached'] / ht:>12.2f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
