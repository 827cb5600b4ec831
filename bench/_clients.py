"""The load generator: many picows clients on one uvloop loop, in one process.

Clients cost as little Python per frame as possible (one substring test and
a counter), because on a 2-core machine the load generator, not the server,
is often the limit: the figures it reports are "what this client can observe",
the same for the gateway and the reference.

Lifecycle::

    pool = Pool(join="acme:bench")                # or join=None for the reference
    pub = (await pool.connect(url, 1, headers, publisher=True))[0]
    recv = await pool.connect(url, n, headers)    # bounded concurrency; each
                                                  # waits for WELCOME (+ JOINED)
    await pool.quiesce()                          # PRESENCE storms are over
    t0, arrivals = await pool.publish(pub, msgs, n, timeout)       # relay: pub sends msgs
    t0, arrivals = await pool.measure(len(msgs), n, timeout, fire)  # fire() makes the server
    await pool.close_all()                                         # send them (server publish)

``Pool(..., deflate=True)`` makes clients that offer permessage-deflate and
inflate what comes compressed (the gateway with ``[server] compression``).

A receiver "arrives" when it has received every bench message published so
far (``Pool.expect``, cumulative); ``arrivals`` are ``perf_counter()``
stamps in arrival order, so ``arrivals[-1] - t0`` is the time until the last
member got the last message, and ``arrivals[n // 2] - t0`` the median member.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

try:  # _servers is a sibling module when run as bench/*.py
    from _servers import BenchError, proc_cpu_seconds
except ImportError:  # pragma: no cover - imported as bench._clients
    from bench._servers import BenchError, proc_cpu_seconds

__all__ = [
    "DEFLATE_OFFER",
    "MARK",
    "PUBLISH",
    "Client",
    "CountingReceivers",
    "DeflateClient",
    "Pool",
    "Publisher",
    "bench_message",
    "bench_payload",
    "publish_command",
]

MARK: Final = b'"bench/MSG"'
"""What tells a bench message from a control action (WELCOME, PRESENCE...)."""

_TEXT: Final = WSMsgType.TEXT
_CLOSE: Final = WSMsgType.CLOSE
_WELCOME: Final = b'"@@wsgate/WELCOME"'
_JOINED: Final = b'"@@wsgate/JOINED"'
_ERROR: Final = b'"@@wsgate/ERROR"'

PUBLISH: Final = b"!pub "
"""Server-publish command of the reference and the anchors: ``!pub <M> <message>``."""

perf_counter: Final = time.perf_counter

DEFLATE_OFFER: Final = {"Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits"}
"""What a browser offers (Chrome's header), for ``Pool(deflate=True)``."""
_TAIL: Final = b"\x00\x00\xff\xff"


def publish_command(count: int, message: bytes) -> bytes:
    """The text frame that makes the reference or an anchor publish ``message`` ``count`` times."""
    return PUBLISH + str(count).encode() + b" " + message


def bench_payload(seq: int, payload_bytes: int = 100) -> str:
    """The JSON payload of a bench message, ``payload_bytes`` long."""
    head = f'{{"seq":{seq},"pad":"'
    pad = "x" * max(0, payload_bytes - len(head) - 2)
    return f'{head}{pad}"}}'


def bench_message(seq: int, channel: str, payload_bytes: int = 100) -> bytes:
    """A relayable action whose payload JSON is ``payload_bytes`` long."""
    payload = bench_payload(seq, payload_bytes)
    return (f'{{"type":"bench/MSG","payload":{payload},"meta":{{"channel":"{channel}"}}}}').encode()


def client_text_frame(payload: bytes) -> bytes:
    """A client's final text frame (RFC 6455 §5.2), masked with a fresh random key."""
    n = len(payload)
    if n < 126:
        head = bytes([0x81, 0x80 | n])
    elif n < 1 << 16:
        head = bytes([0x81, 0xFE]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x81, 0xFF]) + n.to_bytes(8, "big")
    key = os.urandom(4)
    mask = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big")
    return head + key + masked


class Client(WSListener):
    """One connection: counts bench messages, reports control actions to the pool."""

    __slots__ = ("got", "pool", "ready", "wst")

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.got = 0
        """Bench messages received so far (cumulative over rounds)."""
        self.ready: asyncio.Future[str | None] | None = pool.loop.create_future()
        """Set once signed in (WELCOME) and joined (JOINED), or on connect for the
        reference: to ``None``, or to what went wrong."""

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.wst = transport
        if not self.pool.gateway:
            self._set_ready()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is _TEXT:
            payload = frame.get_payload_as_bytes()
            if MARK in payload:
                self.got = got = self.got + 1
                pool = self.pool
                if got == pool.expect:
                    pool.frame_size = len(payload)
                    arrivals = pool.arrivals
                    arrivals.append(perf_counter())
                    if len(arrivals) == pool.waiting_for:
                        done = pool.done
                        if done is not None and not done.done():
                            done.set_result(None)
                return
            self.pool.control(self, payload)
        elif frame.msg_type is _CLOSE:
            self.pool.closes.append(frame.get_close_code())
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        pool = self.pool
        pool.disconnected += 1
        if self.ready is not None and not self.ready.done():
            self.ready.set_result(f"disconnected before ready (closes: {pool.closes[-1:]})")
        if pool.all_gone is not None and pool.disconnected >= pool.opened:
            pool.all_gone.set()

    def _set_ready(self, failure: str | None = None) -> None:
        ready = self.ready
        if ready is not None and not ready.done():
            ready.set_result(failure)
        self.ready = None


class DeflateClient(Client):
    """A client that negotiated permessage-deflate: inflates RSV1 frames, then counts.

    The plain :class:`Client` path is left untouched (no RSV1 test per frame), so
    the other servers' figures do not change.
    """

    __slots__ = ()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if not frame.rsv1:
            super().on_ws_frame(transport, frame)
            return
        pool = self.pool
        payload = pool.inflate(frame.get_payload_as_bytes())
        if MARK in payload:
            self.got = got = self.got + 1
            if got == pool.expect:
                pool.frame_size = len(payload)
                pool.wire_size = frame.payload_size
                arrivals = pool.arrivals
                arrivals.append(perf_counter())
                if len(arrivals) == pool.waiting_for:
                    done = pool.done
                    if done is not None and not done.done():
                        done.set_result(None)
            return
        pool.control(self, payload)


class Publisher(Client):
    """The member that sends (relay) or commands (server publish): never counted.

    In server-publish mode the servers deliver to every member, this one included
    (uWS ``app.publish``); it ignores those copies so that only receivers arrive.
    """

    __slots__ = ()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is _TEXT and MARK in frame.get_payload_as_bytes():
            return
        super().on_ws_frame(transport, frame)


class DeflatePublisher(DeflateClient):
    """The :class:`Publisher` of a compressed run: ignores bench copies, inflated or not."""

    __slots__ = ()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is _TEXT:
            payload = frame.get_payload_as_bytes()
            if MARK in (self.pool.inflate(payload) if frame.rsv1 else payload):
                return
        super().on_ws_frame(transport, frame)


class Pool:
    """All clients of one run, their counters, and the measuring primitives."""

    def __init__(
        self, *, gateway: bool, join: str | None, read_buffer: int = 8192, deflate: bool = False
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.deflate = deflate
        """Offer permessage-deflate and inflate compressed frames (:class:`DeflateClient`)."""
        self._inflater = zlib.decompressobj(-15)
        """One inflater for every client: the server takes over no context
        (``server_no_context_takeover``), so each message inflates on its own and
        a shared inflater's history is never referred to."""
        self.gateway = gateway
        """Talk the wsgate protocol (wait for WELCOME, JOIN) or not (reference)."""
        self.join = join
        """Channel every client joins after WELCOME; None to stay signed-in only."""
        self.join_frame = (
            (
                f'{{"type":"@@wsgate/JOIN","payload":{{"channel":"{join}"}},"meta":{{"id":"j"}}}}'
            ).encode()
            if join
            else b""
        )
        self.read_buffer = read_buffer
        self.clients: list[Client] = []
        self.expect = 0
        self.arrivals: list[float] = []
        self.waiting_for = 0
        self.done: asyncio.Future[None] | None = None
        self.frame_size = 0
        """Payload size of the last bench message a receiver completed a round with."""
        self.wire_size = 0
        """Its size on the wire when it came compressed (0: it came as is)."""
        self.control_frames = 0
        """Non-bench text frames seen (WELCOME, JOINED, PRESENCE, ...)."""
        self.errors: list[bytes] = []
        self.closes: list[WSCloseCode] = []
        self.joined = 0
        """JOINED answers received."""
        self.opened = 0
        self.disconnected = 0
        self.all_gone: asyncio.Event | None = None

    def inflate(self, data: bytes) -> bytes:
        """One compressed message's payload, inflated (RFC 7692 §7.2.2)."""
        return self._inflater.decompress(data + _TAIL)

    # -- control actions -----------------------------------------------------

    def control(self, client: Client, payload: bytes) -> None:
        self.control_frames += 1
        if _WELCOME in payload:
            if self.join:
                client.wst.send(_TEXT, self.join_frame)
            else:
                client._set_ready()
        elif _JOINED in payload:
            self.joined += 1
            client._set_ready()
        elif _ERROR in payload:
            if len(self.errors) < 20:
                self.errors.append(payload[:300])
            client._set_ready(f"ERROR: {payload[:300]!r}")

    # -- connecting ----------------------------------------------------------

    async def connect(
        self,
        url: str,
        n: int,
        headers: Mapping[str, str] | Sequence[Mapping[str, str]] | None = None,
        *,
        concurrency: int = 200,
        timeout: float = 120.0,
        publisher: bool = False,
    ) -> list[Client]:
        """Open ``n`` clients, at most ``concurrency`` handshakes (+ joins) in flight.

        ``headers``: the upgrade's extra headers, one mapping for all or a sequence of
        ``n``, one per client (distinct cookies). ``publisher``: open
        :class:`Publisher` clients (never counted). Each is ready
        when signed in and joined (gateway) or connected (reference, anchors). Raises
        :class:`BenchError` past ``timeout`` or on the first client that fails.
        """
        sem = asyncio.Semaphore(concurrency)
        made: list[Client] = []
        if headers is None or isinstance(headers, Mapping):
            each = [dict(headers or {})] * n
        else:
            each = [dict(h) for h in headers]
            if len(each) != n:
                raise BenchError(f"{len(each)} header sets for {n} clients")
        if self.deflate:
            each = [{**h, **DEFLATE_OFFER} for h in each]
            kind: type[Client] = DeflatePublisher if publisher else DeflateClient
        else:
            kind = Publisher if publisher else Client

        async def one(extra: dict[str, str]) -> None:
            async with sem:
                _, client = await ws_connect(
                    lambda: kind(self),
                    url,
                    extra_headers=extra,
                    websocket_handshake_timeout=15,
                    read_buffer_init_size=self.read_buffer,
                )
                assert isinstance(client, Client)
                self.opened += 1
                made.append(client)
                if client.ready is not None:
                    failure = await client.ready
                    if failure is not None:
                        raise BenchError(failure)

        tasks = [asyncio.ensure_future(one(extra)) for extra in each]
        try:
            done, pending = await asyncio.wait(
                tasks, timeout=timeout, return_when=asyncio.FIRST_EXCEPTION
            )
        except BaseException:
            for t in tasks:
                t.cancel()
            raise
        failed = [t.exception() for t in done if t.exception() is not None]
        if pending or failed:
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            why = f"first failure: {failed[0]!r}" if failed else f"timeout after {timeout:.0f}s"
            raise BenchError(
                f"connected {len(made)}/{n}, ready {len(done) - len(failed)}/{n} ({why}); "
                f"errors: {self.errors[:3]}"
            )
        self.clients.extend(made)
        return made

    async def quiesce(self, quiet: float = 0.5, limit: float = 60.0) -> float:
        """Wait until no control frame arrived for ``quiet`` seconds; return the wait."""
        start = last_change = time.monotonic()
        seen = self.control_frames
        while True:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            if self.control_frames != seen:
                seen = self.control_frames
                last_change = now
            elif now - last_change >= quiet:
                return now - start
            if now - start > limit:
                raise BenchError(f"control traffic did not stop within {limit:.0f}s")

    # -- measuring -------------------------------------------------------------

    async def publish(
        self, publisher: Client, msgs: list[bytes], receivers: int, timeout: float
    ) -> tuple[float, list[float]]:
        """Send ``msgs`` back to back; wait until ``receivers`` clients have them all."""
        return await self.measure(len(msgs), receivers, timeout, self.sender(publisher, msgs))

    @staticmethod
    def sender(
        publisher: Client, msgs: list[bytes], *, one_write: bool = False
    ) -> Callable[[], None]:
        """What sends ``msgs`` back to back from ``publisher`` (a ``fire`` for :meth:`measure`).

        A compressed run's publisher sends them compressed, as a browser would
        (compressed here, before the clock starts). ``one_write``: every frame in
        one write (framed and masked here, before the clock starts), so that the
        server reads them together, instead of one write per message.
        """
        if one_write:
            if isinstance(publisher, DeflateClient):
                raise BenchError("one_write is for uncompressed runs")
            blob = b"".join(map(client_text_frame, msgs))
            tr = publisher.wst.underlying_transport
            return lambda: tr.write(blob)
        send = publisher.wst.send
        if isinstance(publisher, DeflateClient):
            squeezed = []
            for m in msgs:
                z = zlib.compressobj(6, zlib.DEFLATED, -15)
                squeezed.append((z.compress(m) + z.flush(zlib.Z_SYNC_FLUSH))[:-4])

            def fire_compressed() -> None:
                for m in squeezed:
                    send(_TEXT, m, rsv1=True)

            return fire_compressed

        def fire() -> None:
            for m in msgs:
                send(_TEXT, m)

        return fire

    async def measure(
        self, count: int, receivers: int, timeout: float, fire: Callable[[], object]
    ) -> tuple[float, list[float]]:
        """Call ``fire()`` (it makes ``count`` bench messages go to every receiver, at once
        or by tasks it starts); wait until ``receivers`` clients have them all.

        Returns ``perf_counter()`` just before ``fire()`` and the arrival stamps.
        """
        self.expect += count
        self.arrivals = []
        self.waiting_for = receivers
        self.done = done = self.loop.create_future()
        t0 = perf_counter()
        fire()
        try:
            await asyncio.wait_for(done, timeout)
        except TimeoutError:
            got = sorted(c.got for c in self.clients)
            raise BenchError(
                f"after {timeout:.1f}s only {len(self.arrivals)}/{receivers} receivers had all "
                f"{self.expect} messages; received min={got[0]} median={got[len(got) // 2]} "
                f"max={got[-1]}; closes={self.closes[:5]} errors={self.errors[:3]}"
            ) from None
        finally:
            self.done = None
        return t0, self.arrivals

    def check_counts(self, receivers: list[Client]) -> None:
        """Every receiver got exactly ``expect`` bench messages (no loss, no duplicates)."""
        bad = [c.got for c in receivers if c.got != self.expect]
        if bad:
            raise BenchError(
                f"{len(bad)} receivers have a wrong count (expected {self.expect}): {bad[:5]}"
            )

    # -- closing -----------------------------------------------------------------

    async def close_all(self, timeout: float = 20.0) -> None:
        """Abort every connection (RST: no TIME_WAIT) and wait until all are gone."""
        self.all_gone = asyncio.Event()
        if self.disconnected >= self.opened:
            return
        for c in self.clients:
            c.wst.disconnect(graceful=False)
        try:
            await asyncio.wait_for(self.all_gone.wait(), timeout)
        except TimeoutError:
            raise BenchError(
                f"{self.opened - self.disconnected} clients still open after {timeout:.0f}s"
            ) from None


RECV_COUNT_SRC: Final = Path(__file__).resolve().parent / "anchors" / "recv_count.c"
RECV_COUNT: Final = Path(__file__).resolve().parent / ".anchors" / "recv_count"
"""Built from :data:`RECV_COUNT_SRC` on first use (``cc -O2``), into the ignored folder."""


def build_recv_count() -> Path:
    """The receivers' counting program, compiled when missing or older than its source."""
    if RECV_COUNT.exists() and RECV_COUNT.stat().st_mtime >= RECV_COUNT_SRC.stat().st_mtime:
        return RECV_COUNT
    RECV_COUNT.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            ["cc", "-O2", "-o", str(RECV_COUNT), str(RECV_COUNT_SRC)],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        raise BenchError(f"cannot build {RECV_COUNT_SRC.name}: {exc}") from None
    return RECV_COUNT


class CountingReceivers:
    """Joined receivers whose sockets a C process reads (``bench/anchors/recv_count.c``).

    picows' per-frame callback costs this process ~0.75 µs per delivery, so one load
    generator tops out at ~1.2 M deliveries/s, below what the servers send. Once
    the receivers are signed in, joined and quiet (:meth:`Pool.quiesce`), their
    transports stop reading and the counting process reads the same sockets: one
    ``recv`` and a walk of the frame headers in C per read. Its stamps are
    ``CLOCK_MONOTONIC``, the clock of :func:`time.perf_counter` on Linux. It counts
    every text frame, so it takes over only once control traffic is over: a stray
    frame read before the round ends makes its socket pass the target, which
    :meth:`measure` reports as an error (one read after the round's end would go
    unseen, and make that receiver one frame early in the next round).
    """

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        self.expect = 0
        self.frame_size = 0
        """Payload length of the last text frame the counting process read."""

    @classmethod
    async def start(cls, receivers: list[Client], expect: int) -> CountingReceivers:
        """Hand ``receivers`` (each having received ``expect`` bench messages) over."""
        exe = build_recv_count()
        fds = []
        for client in receivers:
            tr = client.wst.underlying_transport
            tr.pause_reading()
            fds.append(tr.get_extra_info("socket").fileno())
        with tempfile.NamedTemporaryFile("w", suffix=".fds", delete=False) as f:
            f.write("\n".join(map(str, fds)))
        try:
            proc = await asyncio.create_subprocess_exec(
                str(exe), f.name, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, pass_fds=fds,
            )  # fmt: skip
            self = cls(proc)
            self.expect = expect
            await self._ask(f"expect {expect}", 10)  # "ready", then "done": all there
            await self._done(10)
        finally:
            os.unlink(f.name)
        return self

    async def _ask(self, command: str, timeout: float) -> None:
        stdin, stdout = self._proc.stdin, self._proc.stdout
        assert stdin is not None and stdout is not None
        stdin.write(command.encode() + b"\n")
        await stdin.drain()
        line = await asyncio.wait_for(stdout.readline(), timeout)
        if line != b"ready\n":
            raise BenchError(f"recv_count answered {line!r} to {command!r}")

    async def _done(self, timeout: float) -> tuple[float, float]:
        stdout = self._proc.stdout
        assert stdout is not None
        try:
            line = await asyncio.wait_for(stdout.readline(), timeout)
        except TimeoutError:
            raise BenchError(
                f"after {timeout:.1f}s not every receiver had all {self.expect} messages"
            ) from None
        parts = line.split()
        if not parts or parts[0] != b"done":
            raise BenchError(f"recv_count: {line!r} (a receiver closed)")
        if int(parts[3]):
            raise BenchError(f"{int(parts[3])} receivers got more than {self.expect} messages")
        self.frame_size = int(parts[4])
        return float(parts[1]), float(parts[2])

    async def measure(
        self, count: int, timeout: float, fire: Callable[[], object]
    ) -> tuple[float, float, float]:
        """Like :meth:`Pool.measure`: ``fire()``, then wait until every receiver has
        ``count`` more; returns ``perf_counter()`` before ``fire()``, and when the last
        and the median receiver had them."""
        self.expect += count
        await self._ask(f"expect {self.expect}", 10)
        t0 = perf_counter()
        fire()
        last, median = await self._done(timeout)
        return t0, last, median

    def cpu_seconds(self) -> float:
        """User + system CPU time the counting process has used so far."""
        return proc_cpu_seconds(self._proc.pid)

    async def close(self) -> None:
        """Stop the counting process (the sockets stay the pool's to close)."""
        proc = self._proc
        if proc.returncode is None:
            assert proc.stdin is not None
            proc.stdin.write(b"quit\n")
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
