"""OpenTelemetry spans for routed calls and API publishes (``[tracing]``).

:func:`from_config` returns ``None`` unless ``tracing.enabled``: then
nothing of OpenTelemetry is imported and callers make no span object (one
``is None`` test per call). Enabled, it needs the ``tracing`` extra
(``opentelemetry-sdk``, ``opentelemetry-exporter-otlp-proto-http``); a
missing SDK is a :class:`~wsgate.exceptions.ConfigError` at start-up.

A :class:`Tracer` owns its own ``TracerProvider`` (never the global one):

- :meth:`Tracer.start` opens a span whose parent is the incoming
  ``traceparent`` (the client's ``meta.traceparent``, an API request's
  header; a root span when missing or malformed) and returns it with the
  child ``traceparent`` to pass on to the service;
- :meth:`Tracer.end` sets the outcome (``OK`` or an error code) and ends it;
- :meth:`Tracer.shutdown` flushes and stops the exporter (node stop).

Attributes are ids, types, codes and counts; never a payload.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from wsgate.config import TracingConfig
from wsgate.exceptions import ConfigError
from wsgate.routing.trace import valid_traceparent

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span

__all__ = ["OK", "Tracer", "from_config"]

OK: Final = "OK"
"""The outcome of a call that succeeded."""


class Tracer:
    """Spans of one node, exported by ``exporter`` (default: OTLP/HTTP to ``config.endpoint``).

    ``exporter`` given (tests: the SDK's ``InMemorySpanExporter``): each span
    is exported as it ends; otherwise in batches, off the event loop.
    """

    def __init__(self, config: TracingConfig, exporter: SpanExporter | None = None) -> None:
        try:
            from opentelemetry import trace
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )
        except ImportError:
            raise ConfigError(
                "tracing.enabled", "needs the tracing extra: pip install 'wsgate[tracing]'"
            ) from None
        provider = TracerProvider(resource=Resource.create({"service.name": config.service_name}))
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            otlp = OTLPSpanExporter(endpoint=config.endpoint) if config.endpoint else None
            provider.add_span_processor(BatchSpanProcessor(otlp or OTLPSpanExporter()))
        else:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        self._provider = provider
        self._tracer = provider.get_tracer("wsgate")
        self._propagator = TraceContextTextMapPropagator()
        self._kind = trace.SpanKind
        self._error = trace.Status(trace.StatusCode.ERROR)

    def start(
        self, name: str, traceparent: str | None, attributes: dict[str, str | int]
    ) -> tuple[Span, str]:
        """Open span ``name``, child of ``traceparent`` when valid; return it and its own
        ``traceparent`` (to send on). Call :meth:`end` exactly once with the span."""
        context = None
        if traceparent is not None and valid_traceparent(traceparent):
            context = self._propagator.extract({"traceparent": traceparent})
        span = self._tracer.start_span(
            name, context=context, kind=self._kind.CLIENT, attributes=attributes
        )
        ctx = span.get_span_context()
        return span, f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"

    def end(self, span: Span, outcome: str) -> None:
        """Record ``outcome`` (``OK`` or an error code, an error status) and end ``span``."""
        span.set_attribute("wsgate.outcome", outcome)
        if outcome != OK:
            span.set_status(self._error)
        span.end()

    def shutdown(self) -> None:
        """Export what is left and stop; later spans are dropped."""
        self._provider.shutdown()


def from_config(config: TracingConfig) -> Tracer | None:
    """A :class:`Tracer` when ``config.enabled``, else ``None`` (nothing imported)."""
    return Tracer(config) if config.enabled else None
