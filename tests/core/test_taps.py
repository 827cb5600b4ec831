"""The tap registry is the one owner of Fanout.taps: ``None`` while nobody watches."""

from __future__ import annotations

from wsgate.backends.memory import MemoryHistory
from wsgate.core.delivery import Delivery, TargetKind
from wsgate.core.fanout import Fanout
from wsgate.core.namespaces import Namespaces
from wsgate.core.pool import Pool
from wsgate.core.taps import TapFilter, TapRegistry
from wsgate.protocol.envelope import From

from .fakes import ManualClock


def _channel(n: int = 0) -> Delivery:
    return Delivery(TargetKind.CHANNEL, "acme:a", "chat/SAY", n)


class Watcher:
    def __init__(self, channel: str | None, connection: str | None) -> None:
        self.filter = TapFilter(channel, connection)
        self.got: list[tuple[Delivery, int]] = []

    def offer(self, d: Delivery, offset: int) -> None:
        self.got.append((d, offset))


def test_the_fanout_hook_is_none_unless_a_watcher_is_registered() -> None:
    fanout = Fanout(Pool(Namespaces()), MemoryHistory(), ManualClock())
    registry = TapRegistry(fanout)
    first, second = Watcher("acme:a", None), Watcher(None, "n1.c")
    registry.add(first)
    registry.add(second)
    assert fanout.taps is not None
    fanout.taps(_channel(), 3)
    assert first.got == [(_channel(), 3)] and second.got == []
    registry.remove(first)
    assert fanout.taps is not None
    registry.remove(second)
    registry.remove(second)  # twice: nothing
    assert fanout.taps is None


def test_filters_want_one_channel_or_what_reaches_and_leaves_one_connection() -> None:
    channel, conn = TapFilter("acme:a", None), TapFilter(None, "n1.c")
    assert channel.wants(_channel()) and not conn.wants(_channel())
    assert conn.wants(Delivery(TargetKind.CONNECTION, "n1.c", "x/Y"))
    assert conn.wants(Delivery(TargetKind.CHANNEL, "acme:b", "x/Y", origin=From("u", "n1.c")))
    assert not conn.wants(Delivery(TargetKind.CONNECTION, "n1.d", "x/Y"))
