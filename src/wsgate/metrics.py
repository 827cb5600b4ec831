"""Prometheus metrics of one node (``[metrics]``), served as ``GET /metrics`` by the internal API.

Nothing here runs on the hot path. The parts that see events keep plain
``int`` attributes (no lock, one addition each): the dispatcher (actions by
class, limiter refusals, errors sent by code), the fan-out (deliveries), the
lifecycle log (connections admitted, joins, leaves, closes by code), the
conflation of hot channels (actions superseded, congested members skipped), the
listener (slow-consumer closes), the cluster bus (its ticker's and shared
limits' failures, the broker's dropped messages, and its lag: a sum and a
count, one ``time.time()`` and two additions per message received; the broker
adapters count their reconnects). :class:`NodeMetrics`'s
collector reads them, and the live state (connections by hub, channels and
their members, history streams retained, whether the broker is connected),
only when Prometheus scrapes.

The upstream call latency histogram is plain counters too
(:attr:`NodeMetrics.observe_call`: one ``bisect`` and two additions per
answered service call, not prometheus-client's locked ``observe``); its
``_count`` is the call count, its label pairs bounded by the services routed
to and the error codes.

Each node has its own :class:`~prometheus_client.CollectorRegistry`, never the
global one, so several nodes in one process (tests) keep their own counts.
Call order: build, :meth:`NodeMetrics.watch` once the node's parts exist, then
:meth:`NodeMetrics.render` per scrape.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from wsgate.cluster.bus import ClusterBus
    from wsgate.core.gateway import Gateway
    from wsgate.lifecycle import LifecycleLog
    from wsgate.transport.server import Listener

__all__ = ["CONTENT_TYPE", "LATENCY_BUCKETS", "NodeMetrics", "Parts"]

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
"""The ``Content-Type`` of :meth:`NodeMetrics.render`'s text."""

LATENCY_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0
)
"""Upper bounds (seconds) of the upstream call latency histogram."""


class Retained(Protocol):
    """The node's recent history (:class:`~wsgate.backends.memory.MemoryHistory`)."""

    def retained(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Parts:
    """What the collector reads at scrape time; given once by the node."""

    gateway: Gateway
    lifecycle: LifecycleLog
    history: Retained
    listener: Callable[[], Listener | None]
    """The public listener, ``None`` before it is bound and after the drain."""
    bus: ClusterBus | None = None


class _Collector(Collector):
    """Yields every ``wsgate_*`` family but the histogram, computed now from ``parts``."""

    def __init__(self, parts: Parts) -> None:
        self._parts = parts

    def collect(self) -> Iterator[Metric]:
        p = self._parts
        gw = p.gateway
        pool = gw.pool
        d = gw.dispatcher
        life = p.lifecycle

        by_hub = GaugeMetricFamily(
            "wsgate_connections", "Connections open on this node, by hub.", labels=["hub"]
        )
        for hub_id, hub in pool.hubs.items():
            by_hub.add_metric([hub_id], len(hub.members))
        yield by_hub
        yield GaugeMetricFamily(
            "wsgate_connections_open", "Connections on this node (any state).",
            value=len(pool.connections),
        )
        yield CounterMetricFamily(
            "wsgate_connections_opened", "Connections admitted.", value=life.opened
        )
        closed = CounterMetricFamily(
            "wsgate_connections_closed", "Connections gone, by close code (other: past 64 codes).",
            labels=["code"],
        )
        for code, n in sorted(life.closes.items()):
            closed.add_metric([str(code) if code else "other"], n)
        yield closed
        channels = members = 0
        for hub in pool.hubs.values():
            channels += len(hub.channels)
            for channel in hub.channels.values():
                members += len(channel.members)
        yield GaugeMetricFamily("wsgate_channels", "View channels with a local member.", channels)
        yield GaugeMetricFamily(
            "wsgate_channel_members", "Local members of view channels, summed.", members
        )
        yield CounterMetricFamily("wsgate_joins", "Channels joined.", value=life.joins)
        yield CounterMetricFamily("wsgate_leaves", "Channels left.", value=life.leaves)

        actions = CounterMetricFamily(
            "wsgate_actions", "Inbound actions routed, by class.", labels=["class"]
        )
        actions.add_metric(["builtin"], d.builtin)
        actions.add_metric(["relay"], d.relayed)
        actions.add_metric(["routed"], d.routed)
        yield actions
        yield CounterMetricFamily(
            "wsgate_deliveries", "Actions the fan-out handed to local connections.",
            value=gw.fanout.delivered,
        )
        errors = CounterMetricFamily(
            "wsgate_errors_sent", "@@wsgate/ERROR sent to clients, by code.", labels=["code"]
        )
        for error_code, n in d.errors_sent.items():
            errors.add_metric([error_code.value], n)
        yield errors
        yield CounterMetricFamily(
            "wsgate_rate_limited", "Messages refused by the rate limits.", value=d.rate_limited
        )
        listener = p.listener()
        yield CounterMetricFamily(
            "wsgate_slow_consumer_closes", "Connections closed 4000 (slow consumer).",
            value=0 if listener is None else listener.slow_consumer_closes,
        )
        batches = CounterMetricFamily(
            "wsgate_channel_batches",
            "A channel's or hub's deliveries of one loop iteration, by outcome: written as "
            "one shared write per member, or settled (handed to each member one by one "
            "because another frame, target, close, join or leave came first).",
            labels=["outcome"],
        )
        flusher = None if listener is None else listener.flusher
        batches.add_metric(["written"], 0 if flusher is None else flusher.batches_written)
        batches.add_metric(["settled"], 0 if flusher is None else flusher.batches_settled)
        yield batches
        conflation = gw.fanout.conflation
        yield CounterMetricFamily(
            "wsgate_conflation_superseded",
            "Actions of conflated channels replaced within their window by a later one of "
            "the same key (never sent).",
            value=conflation.superseded,
        )
        yield CounterMetricFamily(
            "wsgate_conflation_skipped",
            "Flushes of a conflated channel at which a congested member was skipped "
            "(it gets the newest value of each key later).",
            value=conflation.skipped,
        )
        yield GaugeMetricFamily(
            "wsgate_history_streams", "Channel history streams retained on this node.",
            value=p.history.retained(),
        )
        if p.bus is not None:
            yield from _cluster(p.bus)


def _cluster(bus: ClusterBus) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "wsgate_broker_connected", "1 while the broker holds its server connection.",
        value=1 if bus.broker_connected else 0,
    )
    yield CounterMetricFamily(
        "wsgate_broker_dropped", "Messages the broker dropped or could not send.",
        value=bus.broker_dropped,
    )
    yield CounterMetricFamily(
        "wsgate_broker_reconnects", "Lost broker server connections made again.",
        value=bus.broker_reconnects,
    )
    yield SummaryMetricFamily(
        "wsgate_broker_lag_seconds",
        "Deliveries received from the broker: publish to receipt (publisher's clock).",
        count_value=bus.lag_count, sum_value=bus.lag_s,
    )
    failures = CounterMetricFamily(
        "wsgate_cluster_failures", "Failed rounds of the cluster's periodic parts.",
        labels=["part"],
    )
    for name, n in bus.ticker.failures.items():
        failures.add_metric([name], n)
    failures.add_metric(["shared_limits"], bus.limits.failures)
    if bus.acks is not None:
        failures.add_metric(["acks"], bus.acks.failures)
        failures.add_metric(["acks_dropped"], bus.acks.dropped)
    yield failures


class _Calls(Collector):
    """The upstream call latency histogram, kept as plain counters.

    prometheus-client's ``Histogram.observe`` takes a lock and walks every
    bucket (about 2 µs here, 5 % of a round trip's gateway CPU); this is one
    ``bisect`` and two additions, and the buckets are made cumulative only at
    scrape. Bounded by the services routed to x the outcomes (OK and the error
    codes); never freed (a node's services are few).
    """

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], list[int]] = {}
        """(service, outcome) -> calls per bucket, not cumulative; the last is ``+Inf``."""
        self.sums: dict[tuple[str, str], float] = {}
        """(service, outcome) -> seconds summed."""

    def observe(self, service: str, outcome: str, seconds: float) -> None:
        key = (service, outcome)
        counts = self.counts.get(key)
        if counts is None:
            counts = self.counts[key] = [0] * (len(LATENCY_BUCKETS) + 1)
            self.sums[key] = 0.0
        counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1  # le: the first bound >= seconds
        self.sums[key] += seconds

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            "wsgate_upstream_call_duration_seconds",
            "Routed service calls: time to the answer, by service and outcome (OK or error code).",
            labels=["service", "outcome"],
        )
        for key, counts in list(self.counts.items()):
            total, buckets = 0, []
            for bound, n in zip((*_LE, "+Inf"), counts, strict=True):
                total += n
                buckets.append((bound, float(total)))
            family.add_metric(list(key), buckets, self.sums[key])
        yield family


_LE: Final = tuple(str(b) for b in LATENCY_BUCKETS)
"""The ``le`` label of each bucket: ``str`` writes these bounds as prometheus-client
does (``0.001``, ``1.0``; its Go style differs only from 1e6 up)."""


class NodeMetrics:
    """One node's registry: the latency histogram and the scrape-time collector."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._calls = _Calls()
        self.registry.register(self._calls)
        self.observe_call = self._calls.observe
        """One answered service call (the :class:`~wsgate.upstream.Upstream` hook):
        ``(service, outcome, seconds)``."""
        self._collector: _Collector | None = None

    def watch(self, parts: Parts) -> None:
        """Collect from ``parts`` (the node calls it when they exist, at each start).

        A node started again after a stop has new parts: they replace the old
        ones; the counters of the histogram carry on.
        """
        if self._collector is not None:
            self.registry.unregister(self._collector)
        self._collector = _Collector(parts)
        self.registry.register(self._collector)

    def render(self) -> bytes:
        """The registry in Prometheus text format (:data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)
