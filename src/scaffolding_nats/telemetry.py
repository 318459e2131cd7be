"""Trace context across the bus: W3C ``traceparent`` in NATS headers, so one job's spans
join up across the gateway, controller and workers. Without an SDK configured these are
no-ops that cost a dictionary lookup."""

from __future__ import annotations

import time
from collections.abc import Mapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

tracer = trace.get_tracer("scaffolding_nats")


_RECHECK_S = 1.0
_seen: list[float | bool] = [False, -_RECHECK_S]  # [installed, when last looked]


def enabled() -> bool:
    """Whether an SDK tracer provider is installed (else spans and propagation are skipped
    on the hot path: they would be no-ops that still cost microseconds per task). A provider
    is set once per process: once seen it stays; until then it is looked for at most once a
    second (the look reads the environment)."""
    if _seen[0]:
        return True
    now = time.monotonic()
    if now - _seen[1] < _RECHECK_S:
        return False
    _seen[1] = now
    _seen[0] = type(trace.get_tracer_provider()).__name__ not in {"ProxyTracerProvider", "NoOpTracerProvider"}
    return bool(_seen[0])


def inject_headers(headers: dict[str, str] | None = None) -> dict[str, str] | None:
    if not enabled() and not headers:
        return None
    carrier: dict[str, str] = dict(headers or {})
    propagate.inject(carrier)
    return carrier or None


def extract_context(headers: Mapping[str, str] | None) -> otel_context.Context:
    return propagate.extract(dict(headers or {}))


def configure_from_env(service_name: str) -> None:
    """``SCAF_OTEL_EXPORTER=console`` prints spans; ``otlp`` sends them to
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` (needs ``opentelemetry-exporter-otlp``). Unset: no tracing,
    and the hot paths skip span work entirely."""
    import os

    exporter_name = os.environ.get("SCAF_OTEL_EXPORTER", "").lower()
    if not exporter_name:
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    exporter: SpanExporter
    if exporter_name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    else:
        exporter = ConsoleSpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
