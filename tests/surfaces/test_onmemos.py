"""The OnMemOS surface through its real function target, on a local stack with a real agent."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient
from tether.core.models import utcnow
from tether.local.stack import LocalStack

from tests.surfaces.conftest import ADMIN_KEY, ALICE_KEY, BOB_KEY


def h(key: str = ALICE_KEY) -> dict[str, str]:
    return {"X-API-Key": key}


def create(api: FlaskClient, key: str = ALICE_KEY, **body: Any) -> dict[str, Any]:
    spec = {"template": "python", "namespace": "test", "user": "developer", **body}
    r = api.post("/v1/sessions", json=spec, headers=h(key))
    assert r.status_code == 201, r.get_json()
    data: dict[str, Any] = r.get_json()
    return data


def test_create_returns_a_running_session_with_real_details(api: FlaskClient) -> None:
    s = create(api, ttl_minutes=30)
    assert s["status"] == "running"
    assert s["provider"] == "local"
    assert (s["namespace"], s["user"], s["template"]) == ("test", "developer", "python")
    assert s["id"].startswith("ws-test-developer-")
    assert s["websocket"] == f"/v1/cloudrun/workspaces/{s['id']}/shell"
    assert s["ssh"] is False
    assert Path(s["details"]["bucket_name"]).is_dir()
    expires = s["expires_at"]
    assert expires is not None
    got = api.get(f"/v1/sessions/{s['id']}", headers=h()).get_json()
    assert got["status"] == "running" and got["expires_at"] == expires


def test_execute_runs_in_the_workspace(api: FlaskClient) -> None:
    s = create(api)
    r = api.post(
        f"/v1/sessions/{s['id']}/execute",
        json={"command": "python --version && echo hi > f.txt && cat f.txt && pwd", "timeout": 30},
        headers=h(),
    )
    assert r.status_code == 200
    out = r.get_json()
    assert out["returncode"] == 0 and out["success"] is True
    assert "Python 3" in out["stdout"] and "hi\n" in out["stdout"]
    assert out["stdout"].strip().endswith("/home/tether")  # the home, as the sandbox shows it
    assert (Path(s["details"]["workdir"]) / "f.txt").read_text() == "hi\n"  # the session's own
    failed = api.post(
        f"/v1/sessions/{s['id']}/execute", json={"command": "echo oops >&2; exit 3"}, headers=h()
    ).get_json()
    assert (failed["returncode"], failed["success"], failed["stderr"]) == (3, False, "oops\n")


def test_execute_timeout_is_reported_and_the_command_killed(api: FlaskClient) -> None:
    s = create(api)
    started = time.monotonic()
    out = api.post(
        f"/v1/sessions/{s['id']}/execute", json={"command": "sleep 30", "timeout": 1}, headers=h()
    ).get_json()
    assert time.monotonic() - started < 10
    assert out["timed_out"] is True and out["success"] is False and out["returncode"] == 124
    assert "timed out" in out["stderr"]


def test_list_filters_by_namespace_and_user(api: FlaskClient) -> None:
    a = create(api, namespace="alpha", user="ann")
    b = create(api, namespace="beta", user="ann")
    ids = {s["id"] for s in api.get("/v1/sessions", headers=h()).get_json()["sessions"]}
    assert {a["id"], b["id"]} <= ids
    only = api.get("/v1/sessions?namespace=alpha", headers=h()).get_json()
    assert [s["id"] for s in only["sessions"]] == [a["id"]]
    by_user = api.get("/v1/sessions?user=ann&namespace=beta", headers=h()).get_json()
    assert [s["id"] for s in by_user["sessions"]] == [b["id"]]


def test_delete_terminates_and_frees_the_workspace(api: FlaskClient) -> None:
    s = create(api)
    workdir = Path(s["details"]["workdir"])
    assert workdir.is_dir()
    r = api.delete(f"/v1/sessions/{s['id']}", headers=h())
    assert r.status_code == 200 and r.get_json()["status"] == "terminated"
    assert not workdir.exists()
    again = api.post(f"/v1/sessions/{s['id']}/execute", json={"command": "true"}, headers=h())
    assert again.status_code == 409
    assert "terminated" in again.get_json()["detail"]
    listed = api.get("/v1/sessions", headers=h()).get_json()["sessions"]
    assert s["id"] not in {x["id"] for x in listed}


def test_connect_gives_the_ways_in(api: FlaskClient) -> None:
    s = create(api)
    info = api.get(f"/v1/sessions/{s['id']}/connect", headers=h()).get_json()
    assert info["session_id"] == s["id"]
    assert info["websocket"].endswith(f"/v1/sessions/{s['id']}/shell")
    assert info["websocket"].startswith("ws://")
    assert info["execute"].endswith(f"/v1/sessions/{s['id']}/execute")


def test_unknown_session_is_404_with_detail(api: FlaskClient) -> None:
    r = api.get("/v1/sessions/ws-nope", headers=h())
    assert r.status_code == 404 and r.get_json() == {"detail": "Session not found"}


def test_bad_bodies_are_400_naming_the_field(api: FlaskClient) -> None:
    cases = [
        ({"template": "python", "ttl_minutes": -5}, "ttl_minutes"),
        ({"template": "python", "provider": "azure"}, "provider"),
        ({"template": "python", "namespace": "bad name!"}, "namespace"),
        ({"template": "python", "long_lived": "sometimes"}, "long_lived"),
    ]
    for body, field in cases:
        r = api.post("/v1/sessions", json=body, headers=h())
        assert r.status_code == 400, body
        assert field in r.get_json()["detail"], r.get_json()
    r = api.post("/v1/sessions", data="{not json", headers=h(), content_type="application/json")
    assert r.status_code == 400 and "JSON" in r.get_json()["detail"]
    r = api.post("/v1/sessions", json=["a"], headers=h())
    assert r.status_code == 400
    s = create(api)
    r = api.post(f"/v1/sessions/{s['id']}/execute", json={"timeout": 5}, headers=h())
    assert r.status_code == 400 and "command" in r.get_json()["detail"]
    r = api.post(
        f"/v1/sessions/{s['id']}/execute", json={"command": "ls", "timeout": 0}, headers=h()
    )
    assert r.status_code == 400 and "timeout" in r.get_json()["detail"]


def test_auth_is_required_and_checked(api: FlaskClient) -> None:
    r = api.get("/v1/sessions")
    assert r.status_code == 401 and r.get_json() == {"detail": "Missing API key"}
    r = api.get("/v1/sessions", headers=h("tether_abc_wrong"))
    assert r.status_code == 401 and r.get_json() == {"detail": "Invalid API key"}
    r = api.get("/v1/sessions", headers=h(ALICE_KEY[:-1] + "x"))
    assert r.status_code == 401


def test_another_users_session_is_not_found(api: FlaskClient) -> None:
    s = create(api, key=ALICE_KEY)
    sid = s["id"]
    for method, path, body in [
        ("get", f"/v1/sessions/{sid}", None),
        ("post", f"/v1/sessions/{sid}/execute", {"command": "id"}),
        ("get", f"/v1/sessions/{sid}/connect", None),
        ("delete", f"/v1/sessions/{sid}", None),
        ("get", f"/v1/cloudrun/workspaces/{sid}", None),
        ("post", f"/v1/cloudrun/workspaces/{sid}/execute?command=id", None),
        ("delete", f"/v1/cloudrun/workspaces/{sid}", None),
    ]:
        r = getattr(api, method)(path, json=body, headers=h(BOB_KEY))
        assert r.status_code == 404, (method, path)
        assert r.get_json() == {"detail": "Session not found"}
    assert sid not in {
        x["id"] for x in api.get("/v1/sessions", headers=h(BOB_KEY)).get_json()["sessions"]
    }
    # still alive for its owner, and visible to the admin
    assert api.get(f"/v1/sessions/{sid}", headers=h()).get_json()["status"] == "running"
    assert api.get(f"/v1/sessions/{sid}", headers=h(ADMIN_KEY)).status_code == 200


def test_owner_comes_from_the_key_not_the_body(api: FlaskClient, stack: LocalStack) -> None:
    s = create(api, key=BOB_KEY, user="alice")  # a label, not an identity
    assert s["user"] == "alice"
    record = stack.services.sessions.repo.get(s["id"])
    assert record.owner == "bob"
    assert api.get(f"/v1/sessions/{s['id']}", headers=h(ALICE_KEY)).status_code == 404


def test_provider_without_an_online_agent_is_503(api: FlaskClient) -> None:
    for provider in ("cloud_run", "gke", "workstations"):
        r = api.post("/v1/sessions", json={"template": "python", "provider": provider}, headers=h())
        assert r.status_code == 503
        assert r.get_json() == {"detail": f"No online agents available for provider '{provider}'"}


def test_unknown_template_is_404(api: FlaskClient) -> None:
    r = api.post("/v1/sessions", json={"template": "cobol-mainframe"}, headers=h())
    assert r.status_code == 404
    assert r.get_json() == {"detail": "Template 'cobol-mainframe' does not exist"}


def test_shell_template_exists_from_the_first_start(api: FlaskClient) -> None:
    s = create(api, template="shell")
    out = api.post(f"/v1/sessions/{s['id']}/execute", json={"command": "echo $0"}, headers=h())
    assert out.get_json()["stdout"].strip() == "/bin/bash"


def test_expired_session_is_unusable_at_once_and_torn_down(
    api: FlaskClient, stack: LocalStack
) -> None:
    s = create(api, ttl_minutes=5)
    workdir = Path(s["details"]["workdir"])

    def expire(session: Any) -> Any:
        session.expires_at = utcnow() - timedelta(seconds=1)
        return session

    stack.services.sessions.repo.mutate(s["id"], expire)
    r = api.post(f"/v1/sessions/{s['id']}/execute", json={"command": "true"}, headers=h())
    assert r.status_code == 409 and "expired" in r.get_json()["detail"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and workdir.exists():
        time.sleep(0.1)
    assert not workdir.exists(), "the sweeper should tear the expired workspace down"
    # The agent reports the stop after freeing the workspace: the record follows shortly.
    while (got := api.get(f"/v1/sessions/{s['id']}", headers=h()).get_json())["status"] != (
        "terminated"
    ) and time.monotonic() < deadline + 5:
        time.sleep(0.05)
    assert got["status"] == "terminated"


def test_legacy_cloudrun_api(api: FlaskClient) -> None:
    r = api.post(
        "/v1/cloudrun/workspaces",
        json={
            "template": "python",
            "namespace": "my-project",
            "user": "developer",
            "ttl_minutes": 30,
        },
        headers=h(),
    )
    assert r.status_code == 201
    ws = r.get_json()
    wid = ws["id"]
    listed = api.get("/v1/cloudrun/workspaces?namespace=my-project&user=developer", headers=h())
    assert [w["id"] for w in listed.get_json()["workspaces"]] == [wid]
    assert api.get(f"/v1/cloudrun/workspaces/{wid}", headers=h()).get_json()["status"] == "running"
    pwd = api.post(f"/v1/cloudrun/workspaces/{wid}/execute?command=pwd&timeout=30", headers=h())
    assert pwd.get_json()["stdout"].strip() == "/home/tether"
    py = api.post(f'/v1/cloudrun/workspaces/{wid}/runpython?code=print("Hello World")', headers=h())
    assert py.get_json()["stdout"] == "Hello World\n"
    sh = api.post(f"/v1/cloudrun/workspaces/{wid}/runsh?command=ls -la", headers=h())
    assert "bucket" in sh.get_json()["stdout"]
    missing = api.post(f"/v1/cloudrun/workspaces/{wid}/execute", headers=h())
    assert missing.status_code == 400 and "command" in missing.get_json()["detail"]
    gone = api.delete(f"/v1/cloudrun/workspaces/{wid}", headers=h())
    assert gone.get_json()["status"] == "terminated"


def test_unknown_path_and_method(api: FlaskClient) -> None:
    assert api.get("/v1/sessions/a/b/c", headers=h()).status_code == 404
    r = api.put("/v1/sessions", headers=h())
    assert r.status_code == 405 and "detail" in r.get_json()


def test_health_reports_each_backend(health_api: FlaskClient) -> None:
    r = health_api.get("/health")
    assert r.status_code == 200
    body = r.get_json()
    assert body["status"] == "healthy"
    assert body["store"] == {"status": "ok", "backend": "sqlite"}
    assert body["bus"] == {"status": "ok", "backend": "local"}
