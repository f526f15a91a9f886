"""Tracing: off locally (no provider, the API's no-op tracer, OpenTelemetry's SDK not even
loaded), Cloud Trace in the cloud (its client made on the first export only: importing a
target loads no google.cloud or gRPC), forced either way by TETHER_TRACING; log lines carry
the ids of the span they are written in; a call to a runtime carries its client span."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from tether import logs, tracing
from tether.provision.runtime_http import RuntimeHttp
from tether.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
# Cloud Trace's client and what it brings (functions-framework's own google.cloud.functions
# aside).
HEAVY = ("google.cloud.trace", "google.api_core", "grpc", "opentelemetry.exporter")
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"

# Imports the function targets as Cloud Functions does, then says what tracing became.
PROBE = """
import json, sys
sys.path.insert(0, "functions")
import main
from opentelemetry import trace
from tether import tracing
from opentelemetry.sdk.trace import TracerProvider
with tracing.span("probe") as made:
    pass
span = tracing.tracer().start_span("probe")
print(json.dumps({
    "installed": tracing.installed(),
    "enabled": tracing.enabled(),
    "global_is_sdk": isinstance(trace.get_tracer_provider(), TracerProvider),
    "span_made": made is not None,
    "api_span_recording": span.is_recording(),
    "api_span_valid": span.get_span_context().is_valid,
    "heavy": sorted(m for m in sys.modules if m.startswith(%r)),
}))
"""


def probe(monkeypatch_env: dict[str, str]) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("K_SERVICE", "KUBERNETES_SERVICE_HOST", "TETHER_TRACING")}  # fmt: skip
    # Were anything to look for credentials, it finds none at once, never asking a server.
    env |= {"GOOGLE_APPLICATION_CREDENTIALS": "/nonexistent", **monkeypatch_env}
    code = PROBE % (HEAVY,)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
        check=True, timeout=60,
    ).stdout  # fmt: skip
    return dict(json.loads(out.splitlines()[-1]))


def test_off_locally_installs_no_provider_and_the_tracer_is_a_no_op() -> None:
    code = (
        "import json, sys; sys.path.insert(0, 'functions'); import main; "
        "from tether import tracing; tracing.headers(); "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('opentelemetry'))))"
    )
    env = {k: v for k, v in os.environ.items()
           if k not in ("K_SERVICE", "KUBERNETES_SERVICE_HOST", "TETHER_TRACING")}  # fmt: skip
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
    )
    assert loaded == [], f"tracing off loaded {loaded[:5]}"  # OpenTelemetry not even imported
    said = probe({})
    assert said["installed"] == "off" and not said["enabled"]
    assert not said["global_is_sdk"] and not said["span_made"]
    assert not said["api_span_recording"] and not said["api_span_valid"]


@pytest.mark.parametrize("env", [{"K_SERVICE": "onmemos"}, {"TETHER_TRACING": "cloud"}])
def test_the_cloud_exports_to_cloud_trace_without_loading_it_at_import(
    env: dict[str, str],
) -> None:
    said = probe(env)
    assert said["installed"] == "cloud" and said["enabled"] and said["global_is_sdk"]
    assert said["span_made"] and said["api_span_recording"]
    assert said["heavy"] == [], f"configuring Cloud Trace loaded {said['heavy'][:5]}"


def test_the_setting_forces_tracing_off_in_the_cloud_and_on_locally() -> None:
    assert probe({"K_SERVICE": "onmemos", "TETHER_TRACING": "off"})["installed"] == "off"
    assert probe({"TETHER_TRACING": "console"})["installed"] == "console"


def test_console_writes_each_span_to_stderr() -> None:
    code = (
        "from tether import tracing; tracing.configure(service='probe'); "
        "span = tracing.span('console-probe', 'internal', {'tether.session_id': 'ws-1'}); "
        "span.__enter__(); span.__exit__(None, None, None)"
    )
    env = {**os.environ, "TETHER_TRACING": "console"}
    ran = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True, timeout=60)  # fmt: skip
    assert '"name": "console-probe"' in ran.stderr and '"tether.session_id": "ws-1"' in ran.stderr
    assert ran.stdout == ""


def test_the_setting_is_read_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TETHER_TRACING", "console")
    assert Settings.from_env().tracing == "console"
    monkeypatch.delenv("K_SERVICE", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert tracing.mode("") == "off" and tracing.mode("Cloud") == "cloud"
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")  # a GKE agent's pod
    assert tracing.mode("") == "cloud"
    with pytest.raises(ValueError, match="TETHER_TRACING"):
        tracing.mode("zipkin")


def test_the_cloud_trace_exporter_is_made_on_first_export_only() -> None:
    before = set(sys.modules)
    exporter = tracing._cloud_trace("acme-prod")
    assert exporter.force_flush() is True  # nothing made, nothing to flush
    exporter.shutdown()
    assert not [m for m in set(sys.modules) - before if m.startswith(HEAVY)]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.install(SimpleSpanProcessor(exporter))
    try:
        yield exporter
    finally:
        tracing.uninstall()


def test_a_line_carries_the_ids_of_the_span_it_is_written_in(
    spans: InMemorySpanExporter, json_logs: io.StringIO
) -> None:
    caller = {"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"}
    with logs.bind(**logs.trace_ids(caller)), tracing.span("work", "server", carrier=caller):
        logging.getLogger("tether.test").info("inside")
    (made,) = spans.get_finished_spans()
    line = json.loads(json_logs.getvalue().splitlines()[-1])
    assert line[logs.TRACE_KEY] == f"projects/acme-prod/traces/{TRACE}"
    assert line[logs.SPAN_KEY] == f"{made.context.span_id:016x}" != "00f067aa0ba902b7"
    assert made.parent is not None and made.parent.span_id == 0x00F067AA0BA902B7


def test_google_s_trace_header_is_continued_when_there_is_no_traceparent(
    spans: InMemorySpanExporter,
) -> None:
    with tracing.span("work", "server", carrier={"X-Cloud-Trace-Context": f"{TRACE}/42;o=1"}):
        pass
    (made,) = spans.get_finished_spans()
    assert f"{made.context.trace_id:032x}" == TRACE
    assert made.parent is not None and made.parent.span_id == 42


def test_a_call_to_a_runtime_carries_its_client_span(spans: InMemorySpanExporter) -> None:
    heard: list[dict[str, str]] = []

    class Runtime(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            heard.append(dict(self.headers))
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"returncode": 0, "success": True}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Runtime)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = RuntimeHttp()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        with tracing.span("agent exec", "consumer"):
            result = client.exec(base, "true", 5, headers={"Authorization": "Bearer id-token"})
    finally:
        client.close()
        server.shutdown()
        server.server_close()
    assert result.success
    call, command = spans.get_finished_spans()
    assert call.name == "runtime POST /exec" and call.kind is SpanKind.CLIENT
    assert call.parent is not None and call.parent.span_id == command.context.span_id
    sent = {k.lower(): v for k, v in heard[0].items()}
    assert sent["authorization"] == "Bearer id-token"  # the caller's headers are kept
    assert sent["traceparent"].startswith(
        f"00-{call.context.trace_id:032x}-{call.context.span_id:016x}-"
    )
    assert "id-token" not in json.dumps(dict(call.attributes or {}))
