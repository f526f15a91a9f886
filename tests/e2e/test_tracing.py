"""A create and an exec each make one trace, on the Pub/Sub emulator: the function's server span
(continuing the caller's `traceparent`), its command's publish (producer), the agent's run of
the command (consumer, parented through the message's attribute) and the agent's call to the
workspace runtime (client). Every part runs in this process, so one in-memory exporter sees
every span."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from flask.testing import FlaskClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from tether import targets, tracing
from tether.bus.pubsub import PubSubBus
from tether.core.ports import Message

from tests.e2e.conftest import PUBSUB_KEY
from tests.waiting import wait_for

KEY = PUBSUB_KEY
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.install(SimpleSpanProcessor(exporter), service="tether-test")
    try:
        yield exporter
    finally:
        tracing.uninstall()


@pytest.fixture
def api(spans: InMemorySpanExporter, onmemos_on_pubsub: FlaskClient) -> FlaskClient:
    """The stack, made with the exporter in place."""
    return onmemos_on_pubsub


def _one(found: list[ReadableSpan], what: str) -> ReadableSpan:
    assert len(found) == 1, f"{what}: {[s.name for s in found]}"
    return found[0]


def _chain(
    exporter: InMemorySpanExporter, trace_id: int, command: str
) -> tuple[ReadableSpan, ReadableSpan, ReadableSpan, list[ReadableSpan]]:
    """The server span of the request in `trace_id`, its command's publish, the agent's span
    for `command` (start_session, exec) and that span's runtime calls, once all have ended."""

    def chain() -> tuple[ReadableSpan, ReadableSpan, ReadableSpan, list[ReadableSpan]] | None:
        mine = [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]
        by_id = {s.context.span_id: s for s in mine}
        # The delivery that ran the command (a redelivery, on a loaded machine, runs nothing).
        for consumer in sorted(mine, key=lambda s: s.start_time or 0):
            if consumer.name != f"agent {command}":
                continue
            publish = by_id.get(consumer.parent.span_id) if consumer.parent else None
            server = by_id.get(publish.parent.span_id) if publish and publish.parent else None
            calls = [s for s in mine if s.parent and s.parent.span_id == consumer.context.span_id]
            calls = [s for s in calls if s.kind is SpanKind.CLIENT]
            if publish is not None and server is not None and calls:
                return server, publish, consumer, calls
        return None

    assert wait_for(chain, timeout=30), [(s.name, s.kind) for s in exporter.get_finished_spans()]
    found = chain()
    assert found is not None
    return found


def test_a_create_and_an_exec_are_each_one_trace_from_function_to_runtime(
    api: FlaskClient, spans: InMemorySpanExporter
) -> None:
    headers = {"X-API-Key": KEY}
    created = api.post("/v1/sessions", json={"template": "shell"}, headers=headers)
    assert created.status_code == 201, created.get_json()
    session_id = created.get_json()["id"]
    traced = {**headers, "traceparent": f"00-{TRACE}-{CALLER_SPAN}-01"}
    ran = api.post(f"/v1/sessions/{session_id}/execute", json={"command": "true"}, headers=traced)
    assert ran.status_code == 200, ran.get_json()

    # The exec: the caller's trace, continued under its span.
    server, publish, consumer, calls = _chain(spans, int(TRACE, 16), "exec")
    assert server.name == "POST onmemos" and server.kind is SpanKind.SERVER
    assert server.parent is not None and server.parent.is_remote
    assert server.parent.span_id == int(CALLER_SPAN, 16)
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["tether.request_id"] == ran.headers["X-Request-Id"]
    assert publish.name == "publish agent-commands" and publish.kind is SpanKind.PRODUCER
    assert publish.parent is not None and publish.parent.span_id == server.context.span_id
    assert consumer.kind is SpanKind.CONSUMER
    assert consumer.parent is not None and consumer.parent.is_remote  # through the attribute
    assert consumer.attributes is not None and publish.attributes is not None
    command_id = consumer.attributes["tether.command_id"]
    assert publish.attributes["tether.command_id"] == command_id
    assert consumer.attributes["tether.session_id"] == session_id
    assert consumer.attributes["tether.command_type"] == "exec"
    call = _one([c for c in calls if c.name == "runtime exec"], "runtime calls of the exec")
    assert call.end_time is not None and consumer.end_time is not None
    assert call.end_time <= consumer.end_time

    # The create: a trace of its own, started by the function (no traceparent was sent).
    def start() -> ReadableSpan | None:
        for span in spans.get_finished_spans():
            said = span.attributes or {}
            if span.name == "agent start_session" and said.get("tether.session_id") == session_id:
                return span
        return None

    assert wait_for(start, timeout=30), [s.name for s in spans.get_finished_spans()]
    started = start()
    assert started is not None
    server, publish, consumer, calls = _chain(spans, started.context.trace_id, "start_session")
    assert server.name == "POST onmemos" and server.parent is None  # the trace's root
    assert server.attributes is not None
    assert server.attributes["tether.request_id"] == created.headers["X-Request-Id"]
    assert publish.kind is SpanKind.PRODUCER and consumer.kind is SpanKind.CONSUMER
    assert (consumer.attributes or {})["tether.session_id"] == session_id
    # Starting the runtime: it is asked whether it is up until it says so.
    assert {c.name for c in calls} == {"runtime ping"}, [c.name for c in calls]

    # No span says a credential: not the API key, nor the runtime's token, nor a command.
    for span in spans.get_finished_spans():
        said = " ".join(f"{k}={v}" for k, v in (span.attributes or {}).items())
        assert KEY not in said and "token" not in said.lower(), (span.name, said)
        assert "command=" not in said, (span.name, said)


def test_the_agents_result_and_its_handling_join_the_trace_of_the_command(
    api: FlaskClient, spans: InMemorySpanExporter, project: str, unique: str
) -> None:
    """The agent publishes its result under the command's span, and the events handler (the
    stack's subscriber here, the `agent_events` target in the cloud) handles it under that."""
    results: list[Message] = []
    listener = PubSubBus(project=project, prefix=unique + "-")
    sub = listener.subscribe_events("tracing-test", results.append)
    try:
        headers = {"X-API-Key": KEY}
        created = api.post("/v1/sessions", json={"template": "shell"}, headers=headers)
        assert created.status_code == 201, created.get_json()
        session_id = created.get_json()["id"]
        traced = {**headers, "traceparent": f"00-{TRACE}-{CALLER_SPAN}-01"}
        ran = api.post(
            f"/v1/sessions/{session_id}/execute", json={"command": "true"}, headers=traced
        )
        assert ran.status_code == 200, ran.get_json()
        _, _, consumer, _ = _chain(spans, int(TRACE, 16), "exec")
        command_id = (consumer.attributes or {})["tether.command_id"]

        def result() -> Message | None:
            return next((m for m in results if m.data.get("command_id") == command_id), None)

        assert wait_for(result), [m.data.get("type") for m in results]
        message = result()
        assert message is not None
    finally:
        sub.close()
        listener.close()
    by_id = {s.context.span_id: s for s in spans.get_finished_spans()}
    carried = message.attributes["traceparent"].split("-")
    assert carried[1] == TRACE
    publish = by_id[int(carried[2], 16)]  # the agent's publish of its result
    assert publish.name == "publish agent-events" and publish.kind is SpanKind.PRODUCER
    assert publish.parent is not None and publish.parent.span_id == consumer.context.span_id

    def handled() -> list[ReadableSpan]:
        named = [s for s in spans.get_finished_spans() if s.name == "event command_result"]
        return [s for s in named if s.parent and s.parent.span_id == publish.context.span_id]

    # The stack's own events subscriber handled it under the publish, and so does the
    # `agent_events` target given the same message as Pub/Sub pushes it (idempotent: again).
    assert wait_for(lambda: len(handled()) == 1), [s.name for s in spans.get_finished_spans()]
    pushed = {"data": base64.b64encode(json.dumps(message.data).encode()).decode(),
              "attributes": message.attributes}  # fmt: skip
    targets.agent_events(SimpleNamespace(data={"message": pushed}))
    assert len(handled()) == 2
    for event in handled():
        assert event.kind is SpanKind.CONSUMER and event.context.trace_id == int(TRACE, 16)
        assert (event.attributes or {})["tether.command_id"] == command_id
