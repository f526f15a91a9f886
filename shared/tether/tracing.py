"""Traces: OpenTelemetry spans for a request's way through Tether. The function target that
takes it makes a server span (continuing the caller's `traceparent` or
`X-Cloud-Trace-Context`), publishing its command makes a producer span whose context the
message carries (the `traceparent` attribute), the agent's run of the command a consumer span
under it, and each of the agent's calls to the workspace runtime a client span whose context
goes along in the request's `traceparent` header. The log lines written inside a span carry
its trace and span ids (`tether.logs`), so Cloud Logging shows them under it.

`configure` installs the process's provider, where `logs.configure` is called, as
`TETHER_TRACING` says: `cloud` (Cloud Trace; the default in the cloud), `console` (each span
as JSON on stderr) or `off` (the default elsewhere). Off, nothing is installed: OpenTelemetry
is not even imported, every helper here returns at once, and the API's own tracer is the
no-op one. The Cloud Trace client (gRPC, credentials) is made on the first export, in the
exporting thread: configuring connects nowhere, and importing this module imports nothing.

The workspace runtime makes no spans: it runs inside a workspace, which has no credentials
to export with and may be anyone's; the traceparent it is sent is only the agent's word.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

    from tether.settings import Settings

MODES = ("cloud", "console", "off")
NAME = "tether"  # the instrumentation scope of every span Tether makes
TRACEPARENT = "traceparent"  # W3C's header, and the Pub/Sub attribute that carries it

Kind = Literal["server", "client", "producer", "consumer", "internal"]
Attributes = Mapping[str, str | int | float | bool]

_lock = threading.Lock()
_provider: TracerProvider | None = None
_tracer: Tracer | None = None  # _provider's; None: tracing is off (no span is made)
_mode = "off"  # what is installed: a mode of MODES, or "custom" (`install`)


def mode(setting: str = "") -> str:
    """TETHER_TRACING's value, its default filled in: `cloud` in the cloud (Cloud Run sets
    `K_SERVICE`, GKE `KUBERNETES_SERVICE_HOST`; as `tether.logs` tells), else `off`."""
    from tether.logs import in_the_cloud

    chosen = setting.strip().lower() or ("cloud" if in_the_cloud() else "off")
    if chosen not in MODES:
        raise ValueError(f"TETHER_TRACING must be one of {', '.join(MODES)}, not {setting!r}")
    return chosen


def configure(settings: Settings | None = None, service: str = NAME) -> TracerProvider | None:
    """Installs this process's tracer provider as `settings.tracing` says (the environment's
    settings when None), naming the process `service` in each span's resource; also the
    OpenTelemetry API's global one, so a library's spans join Tether's. Once a process: a
    provider installed already is kept. Returns the provider, None when tracing is off."""
    if settings is None:
        from tether.settings import Settings

        settings = Settings.from_env()
    chosen = mode(settings.tracing)
    with _lock:
        if chosen == "off" or _provider is not None:
            return _provider
    if chosen == "cloud":
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        processor: SpanProcessor = BatchSpanProcessor(_cloud_trace(settings.project))
    else:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

        processor = SimpleSpanProcessor(ConsoleSpanExporter(service_name=service, out=sys.stderr))
    provider = install(processor, service, chosen)
    from opentelemetry import trace

    trace.set_tracer_provider(provider)
    return provider


def install(processor: SpanProcessor, service: str = NAME, how: str = "custom") -> TracerProvider:
    """Spans are made from here on, each handed to `processor` when it ends (a test's
    in-memory exporter's, say). Replaces a provider installed before (without shutting it
    down) but not the API's global one; `uninstall` undoes it."""
    global _provider, _tracer, _mode
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(processor)
    with _lock:
        _provider, _tracer, _mode = provider, provider.get_tracer(NAME), how
    return provider


def uninstall() -> None:
    """No more spans: the provider `install` installed is flushed and shut down."""
    global _provider, _tracer, _mode
    with _lock:
        provider, _provider, _tracer, _mode = _provider, None, None, "off"
    if provider is not None:
        provider.shutdown()


def enabled() -> bool:
    return _tracer is not None


def installed() -> str:
    """What makes this process's spans: a mode of `MODES` (`off`: none), or `custom`."""
    return _mode


def tracer() -> Tracer:
    """Tether's tracer: the installed provider's, else the API's (a no-op until some provider
    is installed globally)."""
    if _tracer is not None:
        return _tracer
    from opentelemetry import trace

    return trace.get_tracer(NAME)


# -- spans ------------------------------------------------------------------------------------


@contextlib.contextmanager
def span(
    name: str,
    kind: Kind = "internal",
    attributes: Attributes | None = None,
    carrier: Any = None,
) -> Iterator[Span | None]:
    """A span `name` around the block, the current one inside it, a child of the current span
    or, when `carrier` (a request's headers, a message's attributes: a mapping) names a trace,
    of that (`traceparent`, else `X-Cloud-Trace-Context`). An exception out of the block marks it
    failed. Yields None, at once, when tracing is off."""
    active = _tracer
    if active is None:
        yield None
        return
    from opentelemetry.trace import SpanKind

    parent = _extract(carrier) if carrier is not None else None
    with active.start_as_current_span(
        name, context=parent, kind=SpanKind[kind.upper()], attributes=attributes
    ) as made:
        yield made


@contextlib.contextmanager
def producer(name: str, attributes: Attributes | None = None) -> Iterator[dict[str, str]]:
    """A span for sending a message, under the current span, yielding the attributes that
    carry it to whoever takes the message (`headers`). Outside any span (a heartbeat) no span
    is made: a message nobody asked for starts no trace."""
    if _tracer is None or not _current_is_valid():
        yield headers()
        return
    with span(name, "producer", attributes):
        yield headers()


def headers() -> dict[str, str]:
    """What passes the current trace on (to a runtime, in a message): its `traceparent`, from
    the current span, else from the trace bound for the log lines (a request's, with tracing
    off); empty outside any trace."""
    if _tracer is not None and _current_is_valid():
        carrier: dict[str, str] = {}
        _propagators()[-1].inject(carrier)  # W3C's `traceparent` only
        return carrier
    from tether import logs

    bound = logs.traceparent()
    return {TRACEPARENT: bound} if bound else {}


def annotate(attributes: Attributes) -> None:
    """Sets `attributes` on the current span (nothing when there is none)."""
    if _tracer is not None:
        from opentelemetry import trace

        trace.get_current_span().set_attributes(attributes)


def failed(description: str) -> None:
    """Marks the current span failed, with `description` (the error the caller is told)."""
    if _tracer is not None:
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode

        trace.get_current_span().set_status(Status(StatusCode.ERROR, description))


def current_ids() -> dict[str, str]:
    """The current span's `trace`, `span` and `sampled` (as `logs.trace_ids` names them), for
    the log lines written in it; empty when tracing is off or no span is current."""
    if _tracer is None:
        return {}
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {
        "trace": f"{context.trace_id:032x}",
        "span": f"{context.span_id:016x}",
        "sampled": "1" if context.trace_flags.sampled else "0",
    }


def _current_is_valid() -> bool:
    from opentelemetry import trace

    return trace.get_current_span().get_span_context().is_valid


def _extract(carrier: Any) -> Context:
    """The context `carrier` names (W3C's `traceparent` first, then Google's
    `X-Cloud-Trace-Context`), over the current one: a carrier that names none changes
    nothing."""
    from opentelemetry import context

    found = context.get_current()
    # Only the headers the propagators read, looked up as the carrier looks them up
    # (werkzeug's headers: whatever their case): a propagator may go through every key.
    wanted = {}
    for name in ("traceparent", "tracestate", "X-Cloud-Trace-Context", "x-cloud-trace-context"):
        if value := carrier.get(name):
            wanted[name.lower()] = value
    if wanted:
        for propagator in _propagators():
            found = propagator.extract(wanted, found)
    return found


@functools.cache
def _propagators() -> tuple[TextMapPropagator, ...]:
    """The last one that finds its header wins: `traceparent` over `X-Cloud-Trace-Context`."""
    from opentelemetry.propagators.cloud_trace_propagator import CloudTraceFormatPropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return CloudTraceFormatPropagator(), TraceContextTextMapPropagator()


def _cloud_trace(project: str) -> SpanExporter:
    """Cloud Trace's exporter, made on the first export (in the batch processor's thread):
    making it imports gRPC and looks up credentials, neither of which configuring may do. One
    that cannot be made (no credentials) drops the batch and is tried again with the next;
    the first failure is logged."""
    import logging

    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    log = logging.getLogger(__name__)

    class CloudTrace(SpanExporter):
        def __init__(self) -> None:
            self._exporter: SpanExporter | None = None
            self._told = False

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            if self._exporter is None:
                try:
                    from opentelemetry.exporter.cloud_trace import (  # type: ignore[import-untyped]
                        CloudTraceSpanExporter,
                    )

                    self._exporter = CloudTraceSpanExporter(project_id=project)  # type: ignore[no-untyped-call]
                except Exception:
                    if not self._told:
                        log.warning("no Cloud Trace exporter: spans dropped", exc_info=True)
                        self._told = True
                    return SpanExportResult.FAILURE
            return self._exporter.export(spans)

        def shutdown(self) -> None:
            if self._exporter is not None:
                self._exporter.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return self._exporter is None or self._exporter.force_flush(timeout_millis)

    return CloudTrace()
