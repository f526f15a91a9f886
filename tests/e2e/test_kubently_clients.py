"""Kubently's real clients against `tether up`, base URL and credential changed only.

Each test makes the calls one client makes (paths, methods, headers, bodies) and asserts on
what that client reads from the answers. The clients are in the Kubently repository
(github.com/kubently/kubently) at commit fff2b641710dc16135698fef6823832ee8ade4e8:
- the Node CLI's admin client, `kubently-cli/nodejs/src/lib/adminClient.ts` (axios,
  `X-API-Key`), and its `cluster`, `audit` and `install` commands;
- `deployment/scripts/test_direct_api.py` (requests, `X-API-Key`);
- the A2A agent's direct calls, `kubently/modules/a2a/protocol_bindings/a2a_server/agent.py`
  (`execute_kubectl`, `list_clusters`), `fleet.py` (`build_execute_payload`) and
  `agent_executor.py` (`_ensure_session`, `_execute_kubectl_direct`) (httpx, `X-Api-Key`);
- the executor, `kubently/modules/executor/sse_executor.py` (requests with `stream=True`
  read by sseclient-py; `Authorization: Bearer <token>` and `X-Cluster-ID`).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
import sseclient

from tests.conftest import emulator
from tests.e2e.conftest import Server, start_server

COMMIT = "fff2b641710dc16135698fef6823832ee8ade4e8"
CLUSTER = "kind-dev"
CLI = {"User-Agent": "Kubently-CLI/2.0.0", "Content-Type": "application/json"}


@pytest.fixture(scope="module", params=["embedded", "cloud"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """`tether up` embedded, and on the Firestore and Pub/Sub emulators (a project of its
    own there)."""
    extra = {"TETHER_RATE_LIMITS": "create=1000,api=10000,commands=1000"}
    if request.param == "cloud":
        emulator("FIRESTORE_EMULATOR_HOST")
        emulator("PUBSUB_EMULATOR_HOST")
        extra |= {
            "TETHER_STORE": "firestore",
            "TETHER_BUS": "pubsub",
            "GOOGLE_CLOUD_PROJECT": f"kubently-{uuid.uuid4().hex[:8]}",
        }
    srv = start_server(tmp_path_factory.mktemp("kubently") / "home", extra)
    yield srv
    srv.stop()


def cli(server: Server) -> httpx.Client:
    """adminClient.ts's axios instance: X-API-Key, its User-Agent, JSON, 30 s."""
    return httpx.Client(base_url=server.url, headers={"X-API-Key": server.key, **CLI}, timeout=30)


@pytest.fixture(scope="module")
def token(server: Server) -> str:
    """`kubently cluster add kind-dev`: POST with no body; it reads `token` (a string)."""
    with cli(server) as c:
        r = c.post(f"/admin/agents/{CLUSTER}/token")
    assert r.is_success, r.text
    assert isinstance(r.json()["token"], str) and r.json()["clusterId"] == CLUSTER
    return str(r.json()["token"])


class RealExecutor:
    """sse_executor.py's loop: GET /executor/stream (stream=True, no timeout) read with
    sseclient-py; each `command` event runs (here: answered) and is posted flat to
    /executor/results with `executed_at` as Unix time and its extra keys."""

    def __init__(self, server: Server, token: str) -> None:
        self.url = server.url
        self.headers = {"Authorization": f"Bearer {token}", "X-Cluster-ID": CLUSTER}
        self.connected = threading.Event()
        self.commands: list[dict[str, Any]] = []
        self.events: list[str] = []
        self.response = requests.get(
            f"{self.url}/executor/stream", headers=self.headers, stream=True
        )
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import json

        for event in sseclient.SSEClient(self.response).events():
            self.events.append(event.event)
            if event.event == "connected":
                self.connected.set()
            elif event.event == "command":
                command = json.loads(event.data)
                self.commands.append(command)
                out = "NAME    READY   STATUS\nnginx   1/1     Running\n"
                requests.post(
                    f"{self.url}/executor/results",
                    headers=self.headers,
                    timeout=10,
                    json={
                        "command_id": command["id"],
                        "success": True,
                        "output": out,
                        "stdout": out,
                        "stderr": "",
                        "status": "SUCCESS",
                        "return_code": 0,
                        "execution_time_ms": 42,
                        "executed_at": time.time(),
                    },
                ).raise_for_status()

    def close(self) -> None:
        self.response.close()


@pytest.fixture(scope="module")
def executor(server: Server, token: str) -> Iterator[RealExecutor]:
    e = RealExecutor(server, token)
    assert e.response.status_code == 200
    assert e.response.headers["Content-Type"].startswith("text/event-stream")
    assert e.connected.wait(30)
    yield e
    e.close()


def test_the_cli_lists_and_inspects_clusters(server: Server, executor: RealExecutor) -> None:
    with cli(server) as c:
        # install.ts polls until its cluster shows as connected.
        listed = c.get("/admin/agents").json()
        assert {k: v for k, v in listed["clusters"][0].items() if k != "lastSeen"} == {
            "id": CLUSTER,
            "connected": True,
        }
        status = c.get(f"/admin/agents/{CLUSTER}/status").json()
        assert status["id"] == CLUSTER and status["connected"] is True
        assert status["status"] == "connected" and isinstance(status["mode"], str)
        # A second `cluster add` is a conflict; install.ts's probe needs no key.
        assert c.post(f"/admin/agents/{CLUSTER}/token").status_code == 409
    assert httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200
    assert httpx.get(f"{server.url}/health", headers={"X-API-Key": server.key}).is_success


def test_direct_api_script(server: Server, executor: RealExecutor) -> None:
    """test_direct_api.py, step by step."""
    headers = {"X-API-Key": server.key}
    r = requests.get(f"{server.url}/debug/clusters", headers=headers)
    assert r.status_code == 200
    cluster_id = r.json()["clusters"][0]
    assert cluster_id == CLUSTER
    r = requests.post(
        f"{server.url}/debug/session",
        headers=headers,
        json={"cluster_id": cluster_id, "correlation_id": f"test-{int(time.time())}"},
    )
    assert r.status_code == 201
    session_id = r.json()["session_id"]
    r = requests.post(
        f"{server.url}/debug/execute",
        headers=headers,
        json={
            "session_id": session_id,
            "cluster_id": cluster_id,
            "command_type": "get",
            "args": ["pods", "-A"],
            "timeout_seconds": 30,
        },
    )
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["command_id"] and result["status"] == "success"
    assert "nginx" in result.get("output", "")[:500] and result["error"] is None
    # The executor got the verb first, never `kubectl` (it adds that itself).
    assert executor.commands[-1]["args"][:3] == ["get", "pods", "--all-namespaces"]
    r = requests.post(
        f"{server.url}/debug/execute",
        headers=headers,
        json={
            "session_id": session_id,
            "cluster_id": cluster_id,
            "command_type": "get",
            "args": ["nodes"],
            "timeout_seconds": 30,
        },
    )
    assert r.status_code == 200 and isinstance(r.json()["output"], str)
    assert (
        requests.delete(f"{server.url}/debug/session/{session_id}", headers=headers).status_code
        == 204
    )


def test_the_a2a_agents_calls(server: Server, executor: RealExecutor) -> None:
    with httpx.Client(base_url=server.url, headers={"X-Api-Key": server.key}, timeout=30) as a2a:
        clusters = a2a.get("/debug/clusters").json()["clusters"]
        assert ", ".join(clusters) == CLUSTER
        # execute_kubectl: the verb as command_type, the rest as args, the -n it found.
        r = a2a.post(
            "/debug/execute",
            json={
                "cluster_id": CLUSTER,
                "command_type": "get",
                "args": ["pods"],
                "namespace": "kube-system",
                "timeout_seconds": 30,
            },
        )
        assert r.status_code == 200 and r.json()["status"] == "success" and not r.json()["error"]
        assert "--namespace=kube-system" in executor.commands[-1]["args"]
        # fleet.py for namespace "all": -A and a null namespace.
        r = a2a.post(
            "/debug/execute",
            json={
                "command_type": "get",
                "args": ["pods", "-A"],
                "namespace": None,
                "timeout_seconds": 30,
                "cluster_id": CLUSTER,
            },
        )
        assert r.status_code == 200
        assert not any(a.startswith("--namespace") for a in executor.commands[-1]["args"])
        # agent_executor.py: a session (exactly 201), then a command in it.
        r = a2a.post(
            "/debug/session", json={"cluster_id": CLUSTER, "correlation_id": "ctx-1"}, timeout=5
        )
        assert r.status_code == 201
        r = a2a.post(
            "/debug/execute",
            timeout=15,
            json={
                "session_id": r.json()["session_id"],
                "cluster_id": CLUSTER,
                "command_type": "get",
                "args": ["deployments", "-A"],
                "timeout_seconds": 10,
            },
        )
        assert r.status_code == 200 and r.json()["status"] == "success" and r.json()["output"]
        # An unknown cluster: 404, whose `detail` says so.
        r = a2a.post(
            "/debug/execute", json={"cluster_id": "nope", "command_type": "get", "args": ["pods"]}
        )
        assert r.status_code == 404 and "nope" in r.json()["detail"]


def test_the_cli_reads_the_audit_trail(server: Server, executor: RealExecutor) -> None:
    with cli(server) as c:
        c.post("/debug/execute", json={"cluster_id": CLUSTER, "args": ["get", "pods"]})
        r = c.get(
            "/audit",
            params={"event_type": "command_executed", "cluster_id": CLUSTER, "limit": "100"},
        )
    assert r.status_code == 200
    audit = r.json()
    assert audit["count"] == len(audit["entries"]) >= 1 and audit["service_identity"]
    entry = audit["entries"][0]
    assert entry["type"] == "command_executed" and entry["cluster_id"] == CLUSTER
    assert entry["command"].startswith("get pods") and entry["outcome"] == "success"


def test_revoking_the_token_ends_the_executors_stream(
    server: Server, executor: RealExecutor
) -> None:
    with cli(server) as c:
        assert c.delete(f"/admin/agents/{CLUSTER}/token").status_code == 204
        assert c.get(f"/admin/agents/{CLUSTER}/status").status_code == 404
    r = requests.get(f"{server.url}/executor/stream", headers=executor.headers, stream=True)
    assert r.status_code == 401
    executor.thread.join(60)  # its next keepalive check ends the open stream
    assert not executor.thread.is_alive()
