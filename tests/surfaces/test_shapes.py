"""An unknown path answers in the error shape of the surface whose prefix it is under: through
the function the cloud's load balancer sends unknown paths to (OnMemOS's, its default backend)
and through the local origin alike."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from tether.origin.apps import wsgi_app
from werkzeug.test import Client

from tests.bodies import sans_id
from tests.surfaces.conftest import target_client

KUBENTLY = ("/debug/sessions/nope", "/agent/nowhere", "/executor/register")
OPENCTROL = ("/openctrol/agent-1/api/v1/health", "/openctrol/agent-1/ws/desktop")
SENTINEL = ("/v1/auth/nowhere", "/v1/agents/x/nowhere", "/v1/registry/nowhere", "/v1/packages/x",
            "/api/v1/packages/x")  # fmt: skip


def answers(client: Any, path: str) -> tuple[int, dict[str, Any]]:
    """The status and error body (its request id checked against the answer's, and left out)."""
    response = client.get(path)
    body = response.get_json()
    assert body["request_id"] == response.headers["X-Request-Id"], body
    return response.status_code, sans_id(body)


@pytest.fixture(params=["load balancer default (onmemos)", "local origin"])
def front(request: pytest.FixtureRequest) -> FlaskClient | Client:
    if request.param == "local origin":
        return Client(wsgi_app)
    return target_client("onmemos")


@pytest.mark.parametrize("path", KUBENTLY)
def test_kubently_paths_answer_in_kubentlys_shape(front: Any, path: str) -> None:
    status, body = answers(front, path)
    assert status == 404
    assert body["error"] == "Not Found" and body["details"]["code"] == "NOT_FOUND"
    assert body["timestamp"].endswith("Z")
    assert body["detail"] == "Not Found"  # FastAPI's field too: Kubently's real clients read it


@pytest.mark.parametrize("path", OPENCTROL)
def test_openctrol_paths_answer_in_openctrols_shape(front: Any, path: str) -> None:
    assert answers(front, path) == (404, {"error": "not_found", "details": "Not Found"})


@pytest.mark.parametrize("path", SENTINEL)
def test_sentinelstacks_paths_answer_in_sentinelstacks_shape(front: Any, path: str) -> None:
    assert answers(front, path) == (404, {"error": "Not Found"})


def test_each_built_surface_keeps_its_own_shape(front: Any) -> None:
    assert answers(front, "/v1/sessions/x/nope") == (404, {"detail": "Not Found"})
    assert answers(front, "/nowhere") == (404, {"detail": "Not Found"})
    # /v1/authors is no SentinelStacks path: a prefix is a whole segment.
    assert answers(front, "/v1/authors") == (404, {"detail": "Not Found"})


def test_streamspace_paths_keep_streamspaces_shape() -> None:
    status, body = answers(Client(wsgi_app), "/api/v1/nowhere")
    assert status == 404 and body["code"] == "NOT_FOUND" and body["message"] == "Not Found"
