"""MemoryHistory frees streams that only ever saw appends, and stays bounded."""

from __future__ import annotations

from wsgate.backends.memory import MemoryHistory


class Clock:
    """A settable clock, so ttl expiry is exact instead of slept for."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def relay(history: MemoryHistory, channel: str) -> int:
    offset = history.next_offset(channel)
    history.append(channel, offset, b"x")
    return offset


def test_memberless_streams_freed_after_ttl() -> None:
    clock = Clock()
    history = MemoryHistory(size=4, ttl_s=1.0, clock=clock)
    for i in range(10):
        relay(history, f"c{i}")
    assert history.retained() == 10
    clock.now = 1.5
    relay(history, "fresh")  # any later append sweeps the expired ones
    assert history.retained() == 1


def test_member_keeps_stream_past_ttl() -> None:
    clock = Clock()
    history = MemoryHistory(size=4, ttl_s=1.0, clock=clock)
    history.retain("kept", True)
    offset = relay(history, "kept")
    clock.now = 5.0
    relay(history, "other")
    assert history.since("kept", offset - 1).recovered


def test_max_channels_frees_oldest_first() -> None:
    clock = Clock()
    history = MemoryHistory(size=4, ttl_s=300.0, clock=clock, max_channels=5)
    for i in range(20):
        relay(history, f"c{i}")
        clock.now += 0.01
    assert history.retained() == 5
    # A retained stream reports its own top; a freed one is unknown (0).
    assert [history.top(f"c{i}") > 0 for i in (14, 15, 19)] == [False, True, True]
    assert history.since("c0", 1).recovered is False  # the oldest went first


def test_offsets_are_per_channel_and_hide_other_volume() -> None:
    clock = Clock()
    history = MemoryHistory(size=4, ttl_s=1.0, clock=clock)
    first = relay(history, "quiet")
    for _ in range(50):
        relay(history, "busy")
    # The quiet channel's next offset moved by one, not by the busy one's 50.
    assert relay(history, "quiet") == first + 1


def test_offsets_never_reused_after_a_stream_is_freed() -> None:
    clock = Clock()
    history = MemoryHistory(size=4, ttl_s=1.0, clock=clock)
    old = [relay(history, "t") for _ in range(3)]
    clock.now = 5.0
    relay(history, "other")  # sweeps "t"
    assert history.retained() == 1
    assert relay(history, "t") > old[-1]
    assert history.since("t", old[-1]).recovered is False


def test_a_keyed_append_keeps_the_latest_per_key_and_its_maps_stay_bounded() -> None:
    clock = Clock()
    history = MemoryHistory(size=3, ttl_s=1.0, clock=clock)
    ch = "acme:ticker"
    start = history.top(ch)
    for n in range(50):
        offset = history.next_offset(ch)
        history.append(ch, offset, f"{n % 2}:{n}".encode(), key=str(n % 2))
    replay = history.since(ch, start)
    assert replay.recovered  # replaced entries are not losses
    assert replay.entries == [b"0:48", b"1:49"]
    for n in range(10):  # ten new keys through a window of 3: the maps follow the window
        history.append(ch, history.next_offset(ch), b"k%d" % n, key=f"k{n}")
    stream = history._streams[ch]
    assert len(stream.keys) == len(stream.key_at) == 3


def test_limits_give_each_stream_its_own_size_and_ttl() -> None:
    clock = Clock()
    sizes = {"acme:small": (1, 0.0), "acme:big": (5, 10.0)}
    history = MemoryHistory(size=3, ttl_s=1.0, clock=clock, limits=lambda ch: sizes[ch])
    for name in sizes:
        ch = name
        history.retain(ch, True)
        for n in range(4):
            history.append(ch, history.next_offset(ch), b"%d" % n)
        history.retain(ch, False)
    assert "acme:small" not in history._streams  # ttl 0: freed with its member
    assert history.since("acme:big", 0).entries == [b"0", b"1", b"2", b"3"]


def test_a_keyed_seen_keeps_the_latest_per_key_across_a_cluster_burst() -> None:
    """A cluster's conflated channel: every action is recorded on receipt with its key,
    and the window keeps the latest per key however many passed (size 4, 200 actions)."""
    history = MemoryHistory(size=4)
    base = 1_000
    history.load("t", base, [])
    for n in range(200):
        offset = base + 1 + n
        assert history.seen("t", offset, offset - 1, b"%d" % n, key="ABC"[n % 3])
    replay = history.since("t", base)
    assert replay.recovered and replay.entries == [b"197", b"198", b"199"]
    stream = history._streams["t"]  # type: ignore[index]
    assert len(stream.keys) == len(stream.key_at) == 3


def test_a_gap_in_a_keyed_stream_forgets_its_keys() -> None:
    history = MemoryHistory(size=4)
    history.load("t", 10, [])
    history.seen("t", 11, 10, b"a", key="A")
    history.seen("t", 12, 11, b"b", key="B")
    assert not history.seen("t", 20, 15, b"a2", key="A")  # 16..19 were lost
    stream = history._streams["t"]  # type: ignore[index]
    assert stream.keys == {"A": 20} and stream.key_at == {20: "A"}
    assert history.since("t", 15) == (True, [b"a2"])
    assert not history.since("t", 12).recovered
