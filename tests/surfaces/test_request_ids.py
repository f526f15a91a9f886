"""Each surface's error body carries its request's id, the one in its `X-Request-Id` and in the
Cloud Logging line its refusal wrote, with the trace the request came in."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from flask.testing import FlaskClient
from tether import logs
from tether.local.stack import LocalStack

from tests.surfaces.conftest import target_client

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
# (function, a request it refuses: no credentials)
REFUSED = [
    ("onmemos", "/v1/sessions"),
    ("streamspace", "/api/v1/sessions"),
    ("kubently", "/debug/session/nope"),
    ("openctrol", "/openctrol/agent-1/api/v1/rd/monitors"),
    ("sentinelstacks", "/v1/agents"),
]


@pytest.fixture
def clients(stack: LocalStack) -> dict[str, FlaskClient]:
    return {name: target_client(name) for name, _ in REFUSED}


def logged(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.parametrize(("name", "path"), REFUSED)
def test_an_error_body_its_header_and_its_log_line_share_the_request_id(
    clients: dict[str, FlaskClient], json_logs: io.StringIO, name: str, path: str
) -> None:
    traceparent = f"00-{TRACE}-00f067aa0ba902b7-01"
    r = clients[name].get(path, headers={"traceparent": traceparent})
    assert r.status_code == 401, r.get_data(as_text=True)
    request_id = r.headers["X-Request-Id"]
    assert r.get_json()["request_id"] == request_id
    [line] = [e for e in logged(json_logs) if e.get("request_id") == request_id]
    assert line["severity"] == "INFO" and f"GET {path} answered 401" == line["message"]
    assert line[logs.TRACE_KEY] == f"projects/acme-prod/traces/{TRACE}"
    assert line[logs.SPAN_KEY] == "00f067aa0ba902b7" and line[logs.SAMPLED_KEY] is True


def test_a_clients_own_request_id_and_cloud_trace_header_are_kept(
    clients: dict[str, FlaskClient], json_logs: io.StringIO
) -> None:
    r = clients["onmemos"].get(
        "/v1/sessions",
        headers={"X-Request-Id": "mine-42", "X-Cloud-Trace-Context": f"{TRACE}/1;o=1"},
    )
    assert r.headers["X-Request-Id"] == "mine-42" == r.get_json()["request_id"]
    [line] = [e for e in logged(json_logs) if e.get("request_id") == "mine-42"]
    assert line[logs.TRACE_KEY].endswith(TRACE) and line[logs.SPAN_KEY] == f"{1:016x}"


def test_an_unknown_path_answers_with_the_id_it_logged(
    clients: dict[str, FlaskClient], json_logs: io.StringIO
) -> None:
    r = clients["onmemos"].get("/debug/nowhere")  # Kubently's shape, through the default backend
    assert r.status_code == 404 and r.get_json()["request_id"] == r.headers["X-Request-Id"]
    assert any(e.get("request_id") == r.headers["X-Request-Id"] for e in logged(json_logs))
