"""Kubently through its function target on the local stack, with a third-party executor that
takes commands over the document's long poll and answers them (the executor is this test,
speaking HTTP): sessions, sync and async kubectl, the policy, the approval gate, tokens,
the audit trail, errors and limits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from tether.core.models import Role
from tether.local.stack import LocalStack
from tether.settings import Settings

from tests.conftest import emulator
from tests.surfaces.conftest import ADMIN_KEY, ALICE_KEY, BOB_KEY, target_client

CLUSTER = "prod-1"
ADMIN = {"X-API-Key": ADMIN_KEY}
ALICE = {"X-API-Key": ALICE_KEY}
BOB = {"Authorization": f"Bearer {BOB_KEY}"}  # the document's header


@pytest.fixture(params=["sqlite", "emulators"])
def stack(
    request: pytest.FixtureRequest, tmp_path: Path, project: str, unique: str
) -> Iterator[LocalStack]:
    """Each test on both backends: the SQLite store and local bus, and the Firestore and
    Pub/Sub emulators (where the store checks every query has its declared index)."""
    store, bus = None, None
    if request.param == "emulators":
        emulator("FIRESTORE_EMULATOR_HOST")
        emulator("PUBSUB_EMULATOR_HOST")
        from tether.bus.pubsub import PubSubBus
        from tether.store.firestore import FirestoreStore

        store = FirestoreStore(project=project, prefix=unique + "_")
        bus = PubSubBus(project=project, prefix=unique + "-")
    settings = Settings(home=tmp_path / "home", api_key=ADMIN_KEY, heartbeat_interval=0.5)
    s = LocalStack(settings, sweep_interval=0.2, store=store, bus=bus)
    s.start()
    for name, key in (("alice", ALICE_KEY), ("bob", BOB_KEY)):
        s.services.auth.ensure_user(name, Role.USER)
        s.services.auth.add_key(name, key)
    yield s
    s.stop()


@pytest.fixture
def kb(stack: LocalStack) -> FlaskClient:
    return target_client("kubently")


@pytest.fixture
def token(kb: FlaskClient) -> str:
    r = kb.post(f"/admin/agents/{CLUSTER}/token", headers=ADMIN)
    assert r.status_code == 200, r.json
    assert r.json["clusterId"] == CLUSTER
    return str(r.json["token"])


class Executor:
    """A third-party executor on the long poll: answers each command with `answer(args)`."""

    def __init__(self, token: str, answer: Callable[[list[str]], dict[str, Any]]) -> None:
        self.client = target_client("kubently")
        self.headers = {"Authorization": f"Bearer {token}", "X-Cluster-ID": CLUSTER}
        self.answer = answer
        self.seen: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            r = self.client.get("/agent/commands?wait=1", headers=self.headers)
            if r.status_code == 204:
                continue
            assert r.status_code == 200, r.json
            for command in r.json["commands"]:
                self.seen.append(command)
                result = self.answer(command["args"])
                if result:
                    posted = self.client.post(
                        "/agent/results",
                        headers=self.headers,
                        json={"command_id": command["id"], "result": result},
                    )
                    assert posted.status_code == 200, posted.json

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


def pods(args: list[str]) -> dict[str, Any]:
    return {
        "success": True,
        "output": "NAME READY\nnginx 1/1\n",
        "exit_code": 0,
        "execution_time_ms": 12,
    }


@pytest.fixture
def executor(token: str) -> Iterator[Executor]:
    e = Executor(token, pods)
    yield e
    e.close()


def wait_for(check: Callable[[], Any], timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.02)
    raise AssertionError("condition never held")


def test_a_session_on_a_cluster_counts_its_commands(kb: FlaskClient, executor: Executor) -> None:
    r = kb.post(
        "/debug/session",
        headers=ALICE,
        json={"cluster_id": CLUSTER, "correlation_id": "trace-1", "ttl_seconds": 600},
    )
    assert r.status_code == 201, r.json
    session = r.json
    assert session["status"] == "active" and session["ttl_seconds"] == 600
    assert session["correlation_id"] == "trace-1"
    assert r.headers["X-API-Version"] == "1.0.0"

    r = kb.post(
        "/debug/execute",
        headers=ALICE,
        json={
            "cluster_id": CLUSTER,
            "session_id": session["session_id"],
            "command_type": "get",
            "args": ["pods", "-o", "wide"],
            "timeout_seconds": 10,
        },
    )
    assert r.status_code == 200, r.json
    assert r.json["status"] == "success" and r.json["success"] is True
    assert "nginx" in r.json["output"]
    assert r.json["execution_time_ms"] == 12
    # The executor got the verb first and the request's namespace, never `kubectl`.
    args = executor.seen[-1]["args"]
    assert args[0] == "get" and "pods" in args and "--namespace=default" in args

    got = kb.get(f"/debug/session/{session['session_id']}", headers=ALICE).json
    assert got["command_count"] == 1 and got["last_activity"]
    # Another user's session does not exist for them.
    assert kb.get(f"/debug/session/{session['session_id']}", headers=BOB).status_code == 404

    # The real server's DELETE answers 204; a client asking for JSON gets the document's 200.
    assert kb.delete(f"/debug/session/{session['session_id']}", headers=ALICE).status_code == 204
    again = kb.delete(
        f"/debug/session/{session['session_id']}", headers={**ALICE, "Accept": "application/json"}
    )
    assert again.status_code == 200 and again.json["session_id"] == session["session_id"]
    assert (
        kb.get(f"/debug/session/{session['session_id']}", headers=ALICE).json["status"] == "ended"
    )
    ended = kb.post(
        "/debug/execute",
        headers=ALICE,
        json={"cluster_id": CLUSTER, "session_id": session["session_id"], "args": ["get", "pods"]},
    )
    assert ended.status_code == 409


def test_the_cli_form_no_command_type_and_the_verb_first(
    kb: FlaskClient, executor: Executor
) -> None:
    r = kb.post(
        "/debug/execute", headers=ALICE, json={"cluster_id": CLUSTER, "args": ["get", "pods"]}
    )
    assert r.status_code == 200 and r.json["success"] is True
    assert executor.seen[-1]["args"][:2] == ["get", "pods"]
    # No command_type and no verb: Kubently's server reads `get`.
    r = kb.post("/debug/execute", headers=ALICE, json={"cluster_id": CLUSTER, "args": ["nodes"]})
    assert r.status_code == 200 and executor.seen[-1]["args"][:2] == ["get", "nodes"]
    # A namespace of null adds none (Kubently's A2A agent sends it with -A).
    r = kb.post(
        "/debug/execute",
        headers=ALICE,
        json={
            "cluster_id": CLUSTER,
            "command_type": "get",
            "args": ["pods", "-A"],
            "namespace": None,
        },
    )
    assert r.status_code == 200
    assert not any(a.startswith("--namespace") for a in executor.seen[-1]["args"])


@pytest.mark.parametrize(
    ("args", "argument"),
    [
        (["delete", "pod", "x"], "delete"),
        (["get", "secrets"], "secrets"),
        (["get", "pods", "-A", "--no-headers", "|", "wc", "-l"], "|"),
        (["exec", "-it", "x", "--", "sh"], "exec"),
        (["get", "pods", "--kubeconfig=/etc/x"], "--kubeconfig"),
    ],
)
def test_a_refused_command_names_its_argument_and_never_reaches_the_cluster(
    kb: FlaskClient, executor: Executor, args: list[str], argument: str
) -> None:
    r = kb.post("/debug/execute", headers=ALICE, json={"cluster_id": CLUSTER, "args": args})
    assert r.status_code == 422, r.json
    assert r.json["details"]["code"] == "COMMAND_FORBIDDEN"
    assert r.json["details"]["argument"] == argument
    assert r.json["details"]["field"] == "args"
    assert executor.seen == []
    audit = kb.get("/audit", headers=ADMIN).json
    assert audit["entries"][0]["type"] == "command_refused"
    assert audit["entries"][0]["outcome"] == "forbidden"


def test_async_operations_go_from_pending_to_completed(kb: FlaskClient, token: str) -> None:
    r = kb.post(
        "/debug/execute/async",
        headers=ALICE,
        json={"cluster_id": CLUSTER, "command_type": "logs", "args": ["pod/nginx", "--tail=5"]},
    )
    assert r.status_code == 202, r.json
    op = r.json
    assert op["status"] == "pending" and op["poll_url"] == f"/debug/operations/{op['operation_id']}"
    assert kb.get(op["poll_url"], headers=ALICE).json["status"] == "pending"
    assert kb.get(op["poll_url"], headers=BOB).status_code == 404  # not theirs
    executor = Executor(token, pods)  # an executor comes online later: nothing was lost
    try:
        done = wait_for(
            lambda: (o := kb.get(op["poll_url"], headers=ALICE).json)["status"] == "completed" and o
        )
    finally:
        executor.close()
    assert done["result"]["status"] == "success" and "nginx" in done["result"]["output"]
    assert done["completed_at"]


def test_a_command_that_runs_out_of_time_is_a_408(kb: FlaskClient, token: str) -> None:
    silent = Executor(token, lambda args: {})  # takes the command, never answers
    try:
        started = time.monotonic()
        r = kb.post(
            "/debug/execute",
            headers=ALICE,
            json={"cluster_id": CLUSTER, "args": ["get", "pods"], "timeout_seconds": 1},
        )
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert r.status_code == 408, r.json
    assert r.json["details"]["code"] == "TIMEOUT"
    assert elapsed < 5
    assert kb.get("/audit", headers=ALICE).json["entries"][0]["outcome"] == "timeout"


def test_the_approval_gate_holds_a_command_until_an_admin_decides(
    kb: FlaskClient, executor: Executor
) -> None:
    # Only an admin sets the rules.
    assert (
        kb.put("/admin/approval-rules", headers=ALICE, json={"verbs": ["logs"]}).status_code == 403
    )
    r = kb.put(
        "/admin/approval-rules", headers=ADMIN, json={"verbs": ["logs"], "namespaces": ["payments"]}
    )
    assert r.status_code == 200 and r.json["verbs"] == ["logs"]

    held = kb.post(
        "/debug/execute", headers=ALICE, json={"cluster_id": CLUSTER, "args": ["logs", "pod/api"]}
    )
    assert held.status_code == 202 and held.json["status"] == "awaiting_approval"
    also = kb.post(
        "/debug/execute",
        headers=ALICE,
        json={"cluster_id": CLUSTER, "args": ["get", "pods"], "namespace": "payments"},
    )
    assert also.status_code == 202
    free = kb.post(
        "/debug/execute", headers=ALICE, json={"cluster_id": CLUSTER, "args": ["get", "pods"]}
    )
    assert free.status_code == 200
    # All namespaces include the gated one.
    everywhere = kb.post(
        "/debug/execute", headers=ALICE, json={"cluster_id": CLUSTER, "args": ["get", "pods", "-A"]}
    )
    assert everywhere.status_code == 202
    assert len(executor.seen) == 1  # the held ones never reached the cluster

    waiting = kb.get("/admin/approvals", headers=ADMIN).json
    assert waiting["count"] == 3
    assert (
        kb.post(f"/debug/operations/{held.json['operation_id']}/approve", headers=ALICE).status_code
        == 403
    )
    approved = kb.post(f"/debug/operations/{held.json['operation_id']}/approve", headers=ADMIN)
    assert approved.status_code == 200 and approved.json["decided_by"] == "admin"
    denied = kb.post(f"/debug/operations/{also.json['operation_id']}/deny", headers=ADMIN)
    assert denied.json["status"] == "denied"
    assert (
        kb.post(f"/debug/operations/{also.json['operation_id']}/approve", headers=ADMIN).status_code
        == 409
    )  # decided already

    poll = f"/debug/operations/{held.json['operation_id']}"
    wait_for(lambda: kb.get(poll, headers=ALICE).json["status"] == "completed")
    assert len(executor.seen) == 2
    entries = kb.get("/audit", headers=ADMIN).json["entries"]
    assert {e["decided_by"] for e in entries if e["command"].startswith("logs")} == {"admin"}


def test_tokens_are_the_admins_and_revocation_takes_effect(kb: FlaskClient, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}", "X-Cluster-ID": CLUSTER}
    assert kb.get("/agent/commands?wait=0", headers=headers).status_code == 204
    # A result for a command this cluster never had: the document's 404, the executor's 403.
    nested = {"command_id": "cmd-nope", "result": {"success": True}}
    assert kb.post("/agent/results", headers=headers, json=nested).status_code == 404
    flat = {"command_id": "cmd-nope", "success": True}
    assert kb.post("/executor/results", headers=headers, json=flat).status_code == 403
    assert (
        kb.get("/agent/commands?wait=0", headers={**headers, "X-Cluster-ID": "other"}).status_code
        == 401
    )
    assert kb.post(f"/admin/agents/{CLUSTER}/token", headers=ALICE).status_code == 403
    assert kb.post(f"/admin/agents/{CLUSTER}/token", headers=ADMIN).status_code == 409
    listed = kb.get("/admin/agents", headers=ADMIN).json
    assert listed["clusters"] == [
        {"id": CLUSTER, "connected": True, "lastSeen": listed["clusters"][0]["lastSeen"]}
    ]
    assert kb.get("/debug/clusters", headers=ALICE).json == {"clusters": [CLUSTER], "count": 1}
    assert kb.delete(f"/admin/agents/{CLUSTER}/token", headers=ADMIN).status_code == 204
    assert kb.get("/agent/commands?wait=0", headers=headers).status_code == 401
    assert kb.get(f"/admin/agents/{CLUSTER}/status", headers=ADMIN).status_code == 404
    r = kb.post(
        "/debug/execute", headers=ALICE, json={"cluster_id": CLUSTER, "args": ["get", "pods"]}
    )
    assert r.status_code == 404 and r.json["details"]["field"] == "cluster_id"


def test_errors_are_in_the_documents_shape(kb: FlaskClient, token: str) -> None:
    r = kb.post(
        "/debug/session", headers=ALICE, json={"cluster_id": "Bad_Cluster", "ttl_seconds": 5}
    )
    assert r.status_code == 400
    body = r.json
    assert body["error"] == "Validation failed" and body["details"]["code"] == "VALIDATION_ERROR"
    assert {e["field"] for e in body["details"]["errors"]} == {"cluster_id", "ttl_seconds"}
    assert body["request_id"] and body["timestamp"] and body["detail"]
    r = kb.get("/debug/clusters")
    assert r.status_code == 401 and r.json["details"]["code"] == "UNAUTHORIZED"
    r = kb.get("/debug/nowhere", headers=ALICE)
    assert r.status_code == 404 and r.json["details"]["code"] == "NOT_FOUND"


def test_commands_a_minute_per_cluster_are_limited(
    kb: FlaskClient, stack: LocalStack, executor: Executor, rate_window: Callable[[], None]
) -> None:
    stack.services.settings.rate_limits["commands"] = 2
    rate_window()
    for _ in range(2):
        r = kb.post(
            "/debug/execute", headers=ALICE, json={"cluster_id": CLUSTER, "args": ["get", "pods"]}
        )
        assert r.status_code == 200
    r = kb.post(
        "/debug/execute", headers=BOB, json={"cluster_id": CLUSTER, "args": ["get", "pods"]}
    )
    assert r.status_code == 429
    assert r.json["details"]["code"] == "RATE_LIMITED" and r.json["details"]["limit"] == 2
    reset_at = datetime.fromisoformat(r.json["details"]["reset_at"].replace("Z", "+00:00"))
    assert reset_at.timestamp() == int(r.headers["X-RateLimit-Reset"])
    assert r.headers["X-RateLimit-Remaining"] == "0" and int(r.headers["Retry-After"]) >= 1


def test_health_answers_kubently_and_onmemos_alike(
    health_api: FlaskClient, kb: FlaskClient, token: str
) -> None:
    kb.post("/debug/session", headers=ALICE, json={"cluster_id": CLUSTER})
    body = health_api.get("/health").json
    assert body["status"] == "healthy" and body["redis"] == "connected"
    assert body["active_sessions"] == 1 and isinstance(body["uptime_seconds"], int)
    assert body["store"]["status"] == "ok"  # OnMemOS's part
    assert kb.get("/healthz").json == {"status": "ok"}


def test_the_long_poll_wakes_for_a_command_and_answers_204_when_none_comes(
    kb: FlaskClient, token: str
) -> None:
    headers = {"Authorization": f"Bearer {token}", "X-Cluster-ID": CLUSTER}
    started = time.monotonic()
    assert kb.get("/agent/commands?wait=1", headers=headers).status_code == 204
    assert time.monotonic() - started >= 1  # it waited the `wait` asked for

    poller = target_client("kubently")
    for _ in range(3):
        got: dict[str, Any] = {}

        def poll(got: dict[str, Any] = got) -> None:
            r = poller.get("/agent/commands?wait=30", headers=headers)
            got["at"], got["r"] = time.monotonic(), r

        waiting = threading.Thread(target=poll)
        waiting.start()
        # Most likely waiting by now; if not, the command waits for it (the test holds).
        time.sleep(0.2)
        kb.post(
            "/debug/execute/async",
            headers=ALICE,
            json={"cluster_id": CLUSTER, "args": ["get", "pods"]},
        )
        sent = time.monotonic()
        waiting.join(30)
        assert got["r"].status_code == 200
        assert got["r"].json["commands"][0]["args"][:2] == ["get", "pods"]
        # Woken by the command, not by the end of its wait (the figure is in tests/bench).
        assert got["at"] - sent < 5


def test_a_command_whose_delivery_was_lost_is_handed_out_again(
    kb: FlaskClient, stack: LocalStack, token: str
) -> None:
    """An executor that took a command and vanished (its answer lost on the way, say): once
    the command's lease passes with no result, the sweeper publishes it again, and the next
    poll has it; its result completes the operation once."""
    stack.services.executors.lease_margin = 0.5
    stack.services.sweeper.republish_after = 0.2
    headers = {"Authorization": f"Bearer {token}", "X-Cluster-ID": CLUSTER}
    op = kb.post(
        "/debug/execute/async",
        headers=ALICE,
        json={"cluster_id": CLUSTER, "args": ["get", "pods"], "timeout_seconds": 1},
    ).json
    lost = kb.get("/agent/commands?wait=10", headers=headers).json["commands"][0]
    again = wait_for(
        lambda: (
            (r := kb.get("/agent/commands?wait=1", headers=headers)).status_code == 200
            and r.json["commands"][0]
        )
    )
    assert again["id"] == lost["id"]
    result = {"command_id": again["id"], "result": pods(again["args"])}
    assert kb.post("/agent/results", headers=headers, json=result).status_code == 200
    poll = op["poll_url"]
    done = wait_for(lambda: (o := kb.get(poll, headers=ALICE).json)["status"] == "completed" and o)
    assert done["result"]["status"] == "success"
