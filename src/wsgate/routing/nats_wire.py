"""The bytes of one NATS request, and writing them through nats-py's buffer.

A request is one ``HPUB`` command: the service's subject, the invoker's reply
subject, the context as a header block and the ``{action, context}`` body.
:func:`header_block` writes the block in one format string, where nats-py's
``publish(headers=dict)`` checks each key with a regex and strips,
translates and encodes each value on every call: 9.9 µs CPU per publish of
the gateway's six headers against 1.7 µs for the same bytes built here and
handed to the client (``bench/nats_request.py --publish``, one run, one
process; bench/README.md). The values are checked once, together: a value
that is not printable (CR or LF would end the block early and smuggle a
header in) is refused with :exc:`ValueError`.

:func:`write` appends a command to the client's own pending buffer
(``Client._send_command``, so it stays in order with nats-py's ``SUB`` and
``PING`` and its reconnect buffering) and :func:`flush` writes everything
appended since to the socket at once, as nats-py's flusher task would one loop
iteration later. These two are the only calls of
nats-py's private API in wsgate; the NATS invoker tests fail if nats-py
changes them (the third, the raw reply subscription, is
:mod:`wsgate.backends.nats_client`'s). :func:`refusal` says why a command
cannot go out now, as ``publish`` would raise it. :func:`answer_headers`
reads an answer's header block (only error answers carry one).
"""

from __future__ import annotations

import re
from typing import Final

from nats.aio.client import Client

from wsgate.routing.context import InvocationContext

__all__ = [
    "MAX_SUBJECT",
    "STATUS",
    "answer_headers",
    "flush",
    "header_block",
    "hpub",
    "refusal",
    "valid_subject",
    "write",
]

MAX_SUBJECT: Final = 256
"""Longest subject sent (nats-server's own limit is larger; ours are short)."""
_SUBJECT: Final = re.compile(rf"[!-~]{{1,{MAX_SUBJECT}}}")
"""Printable ASCII without spaces: nothing that would end the command line."""


def valid_subject(subject: str) -> bool:
    """Tell whether ``subject`` can be sent as one token of a command line."""
    return _SUBJECT.fullmatch(subject) is not None


def header_block(context: InvocationContext, traceparent: str) -> bytes:
    """The context as a NATS header block (``NATS/1.0`` … blank line).

    ``Wsgate-User``, ``Wsgate-Channel`` and ``Wsgate-Request-Id`` are left
    out when empty (docs/routing.md, "NATS"). Raises :exc:`ValueError` when
    a value is not printable.
    """
    cid, hub, user = context.connectionId, context.hub, context.userId
    channel, rid = context.channel or "", context.requestId
    if not (cid + hub + user + channel + rid + traceparent).isprintable():
        raise ValueError("a context value is not printable")
    block = f"NATS/1.0\r\nWsgate-Connection-Id: {cid}\r\nWsgate-Hub: {hub}\r\n"
    if user:
        block += f"Wsgate-User: {user}\r\n"
    if channel:
        block += f"Wsgate-Channel: {channel}\r\n"
    if rid:
        block += f"Wsgate-Request-Id: {rid}\r\n"
    block += f"traceparent: {traceparent}\r\n\r\n"
    return block.encode()


STATUS: Final = "Status"
"""The key :func:`answer_headers` gives a server's inline status (``NATS/1.0 503``)."""
_VERSION: Final = b"NATS/1.0"


def answer_headers(block: bytes) -> dict[str, str]:
    """An answer's header block (``NATS/1.0[ status]`` CRLF, ``Name: value`` lines) as a dict.

    The inline status, if any (``NATS/1.0 503``: no responders), is under
    :data:`STATUS`, as nats-py gives it. Names and values are stripped and decoded
    (bad UTF-8 replaced); a line without a colon is skipped; a later line of a
    name wins. Never raises.
    """
    lines = block.split(b"\r\n")
    out: dict[str, str] = {}
    first = lines[0]
    if first.startswith(_VERSION):
        status = first[len(_VERSION) :].split(None, 1)
        if status and status[0].isdigit():
            out[STATUS] = status[0].decode("ascii")
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip():
            out[name.strip().decode(errors="replace")] = value.strip().decode(errors="replace")
    return out


def hpub(subject: str, reply: str, header: bytes, body: bytes) -> bytes:
    """The ``HPUB`` command (NATS client protocol) for one request."""
    size = len(header)
    return b"HPUB %s %s %d %d\r\n%s%s\r\n" % (
        subject.encode(),
        reply.encode(),
        size,
        size + len(body),
        header,
        body,
    )


def refusal(nc: Client, body_size: int) -> str | None:
    """Why nothing can be sent on ``nc`` now, else ``None``.

    Closed, draining, or disconnected (reconnecting: a request buffered now
    would reach the service after its caller's timeout), or a body over the
    server's ``max_payload``.
    """
    if nc.is_closed:
        return "connection closed"
    if nc.is_draining_pubs:
        return "connection draining"
    if not nc.is_connected:
        return "connection down, reconnecting"
    if body_size > nc.max_payload:
        return f"request over the server's max_payload ({nc.max_payload} bytes)"
    return None


async def write(nc: Client, command: bytes) -> None:
    """Append ``command`` to ``nc``'s pending buffer (in order with nats-py's own)."""
    await nc._send_command(command)


def flush(nc: Client) -> None:
    """Write what :func:`write` appended (and anything nats-py queued before it) to
    the socket now, in this loop iteration; no waiting for the server.

    nats-py's own way, waking its flusher task, puts the bytes on the wire one
    loop iteration later; on a closed loop of callers that is one iteration
    more of every round trip's latency (bench/README.md, "The NATS invoker's
    writes"). The flusher's ``drain`` is not needed for a bound: the invoker
    only writes requests that hold one of its ``max_concurrency`` slots. While
    the client is not connected the buffer stays for nats-py's reconnect
    logic (the invoker refuses new requests then, :func:`refusal`).
    """
    transport = nc._transport
    if nc._pending_data_size <= 0 or transport is None or not nc.is_connected:
        return
    transport.writelines(nc._pending)
    nc._pending = []
    nc._pending_data_size = 0
