"""The HTTP/1.1 answer parser on its own: bytes in, answers out, no event loop, no socket.

That the module imports no asyncio/socket/ssl is an import-linter contract (pyproject.toml).
"""

from __future__ import annotations

import pytest

from wsgate.exceptions import WsgateError
from wsgate.routing import http1
from wsgate.routing.http1_parse import DEAD, HEAD, IDLE, AnswerParser

PIPELINED = (
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: t\r\n\r\n"
    b"HTTP/1.1 204 No Content\r\n\r\n"
    b"HTTP/1.1 500 Oops\r\ncontent-length: 0\r\nConnection: close\r\n\r\n"
)
WANT = [(200, b"hello", False), (404, b"abcde", False), (204, b"", False), (500, b"", True)]


class Answers(AnswerParser):
    """Collects the answers; expects ``expected`` of them."""

    def __init__(self, expected: int, max_body: int = 1 << 20) -> None:
        super().__init__(max_body)
        self.expected = expected
        self.got: list[tuple[int, bytes | None, bool]] = []
        self.state = HEAD

    def _finish(self, body: bytes | None) -> None:
        self.chunks = []
        self.got.append((self.status, body, self.close_after))
        if body is None:
            self.state = DEAD
        else:
            self.state = HEAD if len(self.got) < self.expected else IDLE


@pytest.mark.parametrize("step", [1, 2, 7, 64, len(PIPELINED)])
def test_pipelined_answers_split_anywhere(step: int) -> None:
    parser = Answers(len(WANT))
    for i in range(0, len(PIPELINED), step):
        parser.feed(PIPELINED[i : i + step])
    assert parser.got == WANT
    assert parser.state == IDLE


def test_an_answer_nobody_asked_for_is_a_protocol_error() -> None:
    parser = Answers(1)
    with pytest.raises(http1.ProtocolError, match="nobody asked for"):
        parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n")


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (b"HTTP/2.0 200 OK\r\n\r\n", "bad status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "Transfer-Encoding"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 101 Switching\r\n\r\n", "unexpected 101"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000, "header block too large"),
    ],
)
def test_bad_answers_are_protocol_errors(answer: bytes, why: str) -> None:
    with pytest.raises(http1.ProtocolError, match=why):
        Answers(1).feed(answer)


def test_a_body_over_the_limit_is_not_read() -> None:
    parser = Answers(1, max_body=4)
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel")
    assert parser.got == [(200, None, False)]
    assert parser.state == DEAD


@pytest.mark.parametrize(
    "error",
    [
        http1.HttpError,
        http1.ConnectFailed,
        http1.ResponseTimeout,
        http1.Dropped,
        http1.ProtocolError,
        http1.Unanswered,
    ],
)
def test_http_client_errors_share_the_wsgate_root(error: type[Exception]) -> None:
    assert issubclass(error, WsgateError)


def test_remembered_heads_read_as_fresh_ones_and_the_memo_stays_bounded() -> None:
    from wsgate.routing import http1_parse

    http1_parse._seen.clear()
    for _ in range(2):  # parsed, then answered from the memo
        parser = Answers(len(WANT))
        parser.feed(PIPELINED)
        assert parser.got == WANT
    assert len(http1_parse._seen) == 5  # 100 Continue too
    for i in range(http1_parse._SEEN_MAX + 10):
        parser = Answers(1)
        parser.feed(b"HTTP/1.1 200 OK\r\nX-N: %d\r\nContent-Length: 2\r\n\r\nok" % i)
        assert parser.got == [(200, b"ok", False)]
        assert len(http1_parse._seen) <= http1_parse._SEEN_MAX
