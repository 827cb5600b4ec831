"""How the NATS backend names things: subjects, stream names, headers.

A NATS subject is a list of ``.``-separated tokens, and a token cannot hold
``.``, ``*``, ``>`` or whitespace; a JetStream stream name allows only
``[A-Za-z0-9_-]``. wsgate's names hold any of these (``chan.acme:orders/42``),
so each free-form part is escaped into one token: every byte of its UTF-8
outside ``[A-Za-z0-9_-]`` becomes ``=HH`` (upper-case hex), and the empty
string becomes ``=``. The escape is a bijection onto tokens that are also
valid JetStream KV keys, and keeps common names readable (``acme=3Aorders``).

Layout under one prefix ``P`` (itself escaped into one token, so no prefix
can nest inside another):

- ``P.msg.<kind>.<rest>`` — broker subject of the logical ``<kind>.<rest>``
  (core NATS, nothing stored);
- ``P.hist.<stream>`` — channel history, in the JetStream stream ``<N>_hist``,
  which *republishes* every message stored there to ``P.msg.chan.<stream>``
  (the broker subject of ``chan.<stream>``: same token, same escape);
- ``P.inbox.<stream>`` — users' inboxes (streams named ``@inbox:<user>``,
  :func:`~wsgate.backends.base.is_inbox`), in the JetStream stream
  ``<N>_inbox``, bounded by ``[inbox]`` apart from channels' history and
  republished the same way to ``P.msg.chan.<stream>``;
- ``P.pres|beat|lim|cnt|reg.…`` — cluster state, one message per subject, in
  the JetStream stream ``<N>_state``.

``N`` is the prefix reduced to ``[A-Za-z0-9_-]`` (plus a hash of the prefix
when that changed it), so each prefix has streams of its own.
"""

from __future__ import annotations

import hashlib
import re

from wsgate.backends.base import is_inbox

__all__ = [
    "HDR_CREATED",
    "HDR_LENGTHS",
    "HDR_OFFSET",
    "HDR_SEQUENCE",
    "HDR_STREAM",
    "STREAM_KIND",
    "Names",
    "decode_token",
    "encode_token",
    "stream_base_name",
]

HDR_STREAM = "Nats-Stream"
"""Header the server sets on a republished message: the stream that stored it."""
HDR_SEQUENCE = "Nats-Sequence"
"""Header of a republished (and a direct-get) message: its stream sequence, the offset."""
HDR_OFFSET = "Wsgate-Offset"
"""Header of every history message (stored, republished, read back): its offset in
its channel, ``created + n`` for the channel's ``n``-th message."""
HDR_LENGTHS = "Wsgate-Lengths"
"""Header of a history message holding several actions (consecutive offsets from
``Wsgate-Offset``): their data lengths, comma-separated, in order (absent: one action)."""
HDR_CREATED = "Wsgate-Created"
"""Header of every history message: its channel's epoch (``created``, microseconds),
taken when the channel's first message was stored; the first offset is ``created + 1``."""

STREAM_KIND = "chan"
"""The only logical subject kind ``publish_stream`` serves: ``chan.<stream>``."""

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ESCAPE = re.compile(r"=([0-9A-F]{2})")


def encode_token(text: str) -> str:
    """``text`` as one NATS subject token (and KV key token), reversibly."""
    if not text:
        return "="
    raw = text.encode()
    if all(b in _SAFE for b in raw):
        return text
    return "".join(chr(b) if b in _SAFE else f"={b:02X}" for b in raw)


def decode_token(token: str) -> str:
    """The inverse of :func:`encode_token`."""
    if token == "=":
        return ""
    if "=" not in token:
        return token
    out = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(token):
        out += token[pos : m.start()].encode()
        out.append(int(m.group(1), 16))
        pos = m.end()
    out += token[pos:].encode()
    return out.decode()


def stream_base_name(prefix: str) -> str:
    """A JetStream-safe name unique to ``prefix`` (``[A-Za-z0-9_-]``, at most 48 chars)."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", prefix)[:32] or "wsgate"
    if name != prefix:
        name += "_" + hashlib.sha256(prefix.encode()).hexdigest()[:10]
    return name


class Names:
    """Every subject and stream name of one prefix."""

    def __init__(self, prefix: str) -> None:
        self.root = encode_token(prefix)
        """The prefix as one subject token."""
        base = stream_base_name(prefix)
        self.hist_stream = f"{base}_hist"
        """The JetStream stream holding every channel's history."""
        self.inbox_stream = f"{base}_inbox"
        """The JetStream stream holding every user's inbox (apart from channels' history)."""
        self.state_stream = f"{base}_state"
        """The JetStream stream holding presence, heartbeats, limits, counters, services."""

    # Broker ------------------------------------------------------------------

    def subject(self, logical: str) -> str:
        """The NATS subject of a logical subject (``chan.acme:orders/42``)."""
        kind, dot, rest = logical.partition(".")
        if not dot:
            return f"{self.root}.msg.{encode_token(kind)}"
        return f"{self.root}.msg.{encode_token(kind)}.{encode_token(rest)}"

    def logical(self, subject: str) -> str:
        """The inverse of :meth:`subject`."""
        tokens = subject.split(".")
        if len(tokens) not in (3, 4) or tokens[0] != self.root or tokens[1] != "msg":
            raise ValueError(f"not a broker subject of this prefix: {subject!r}")
        if len(tokens) == 3:
            return decode_token(tokens[2])
        return f"{decode_token(tokens[2])}.{decode_token(tokens[3])}"

    # JetStream ---------------------------------------------------------------

    def hist(self, stream: str) -> str:
        return f"{self.root}.hist.{encode_token(stream)}"

    def inbox(self, stream: str) -> str:
        return f"{self.root}.inbox.{encode_token(stream)}"

    def stored(self, stream: str) -> tuple[str, str]:
        """``(JetStream stream, subject)`` where ``stream`` is stored: an inbox in the
        inbox stream, a channel in the history stream."""
        if is_inbox(stream):
            return self.inbox_stream, self.inbox(stream)
        return self.hist_stream, self.hist(stream)

    def stream_subject(self, stream: str) -> str:
        """The logical broker subject the history of ``stream`` is republished to."""
        return f"{STREAM_KIND}.{stream}"

    @property
    def hist_republish_src(self) -> str:
        """The history subjects the stream republishes: ``P.hist.<stream>``."""
        return f"{self.root}.hist.*"

    @property
    def inbox_republish_src(self) -> str:
        """The inbox subjects the inbox stream republishes: ``P.inbox.<stream>``."""
        return f"{self.root}.inbox.*"

    @property
    def hist_republish_dest(self) -> str:
        """Where they go: ``P.msg.chan.<stream>`` (the token is carried over as is)."""
        return f"{self.root}.msg.{encode_token(STREAM_KIND)}.{{{{wildcard(1)}}}}"

    def state(self, kind: str, *parts: str) -> str:
        """``P.<kind>.<part>…`` in the state stream; ``*`` and ``>`` pass through as wildcards."""
        tokens = [p if p in ("*", ">") else encode_token(p) for p in parts]
        return ".".join([self.root, kind, *tokens])

    @property
    def hist_subjects(self) -> list[str]:
        return [f"{self.root}.hist.>"]

    @property
    def inbox_subjects(self) -> list[str]:
        return [f"{self.root}.inbox.>"]

    @property
    def state_subjects(self) -> list[str]:
        return [f"{self.root}.{kind}.>" for kind in ("pres", "beat", "lim", "cnt", "reg")]
