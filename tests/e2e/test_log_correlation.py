"""A request's trace reaches the lines its agent logs: the function binds it from the request's
`traceparent`, Pub/Sub (the emulator) carries it to the agent as a message attribute, and the
agent's line for the command names the trace, the command and the session."""

from __future__ import annotations

import io
import json
from typing import Any

from flask.testing import FlaskClient
from tether import logs

from tests.e2e.conftest import PUBSUB_KEY
from tests.waiting import wait_for

KEY = PUBSUB_KEY
TRACE = "0af7651916cd43dd8448eb211c80319c"


def test_the_agents_line_for_an_exec_carries_the_requests_trace(
    onmemos_on_pubsub: FlaskClient, json_logs: io.StringIO
) -> None:
    headers = {"X-API-Key": KEY}
    created = onmemos_on_pubsub.post("/v1/sessions", json={"template": "shell"}, headers=headers)
    assert created.status_code == 201, created.get_json()
    session_id = created.get_json()["id"]
    traced = {**headers, "traceparent": f"00-{TRACE}-b7ad6b7169203331-01"}
    ran = onmemos_on_pubsub.post(
        f"/v1/sessions/{session_id}/execute", json={"command": "true"}, headers=traced
    )
    assert ran.status_code == 200, ran.get_json()

    def agents_line() -> dict[str, Any] | None:
        for text in json_logs.getvalue().splitlines():
            line = json.loads(text)
            if line["logger"] == "tether.agent.daemon" and line["message"].startswith("exec "):
                return dict(line)
        return None

    assert wait_for(agents_line, timeout=30), json_logs.getvalue()[-2000:]
    line = agents_line() or {}
    assert line[logs.TRACE_KEY] == f"projects/acme-prod/traces/{TRACE}"
    assert line["session_id"] == session_id and line["command_id"] in line["message"]
