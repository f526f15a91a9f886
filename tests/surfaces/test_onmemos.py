"""The OnMemOS surface through its real function target, on a local stack with a real agent."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient
from tether.core.models import Session, utcnow
from tether.local.stack import LocalStack
from tether.surfaces.onmemos import session_json

from tests.bodies import sans_id
from tests.surfaces.conftest import ADMIN_KEY, ALICE_KEY, BOB_KEY


def h(key: str = ALICE_KEY) -> dict[str, str]:
    return {"X-API-Key": key}


def host_path(stack: LocalStack, session_id: str, name: str) -> Path:
    """Where the local provisioner keeps a session's files: in the store, never in an answer."""
    return Path(stack.services.sessions.repo.get(session_id).details[name])


def create(api: FlaskClient, key: str = ALICE_KEY, **body: Any) -> dict[str, Any]:
    spec = {"template": "python", "namespace": "test", "user": "developer", **body}
    r = api.post("/v1/sessions", json=spec, headers=h(key))
    assert r.status_code == 201, r.get_json()
    data: dict[str, Any] = r.get_json()
    return data


def test_create_returns_a_running_session_with_real_details(
    api: FlaskClient, stack: LocalStack
) -> None:
    s = create(api, ttl_minutes=30)
    assert s["status"] == "running"
    assert s["provider"] == "local"
    assert (s["namespace"], s["user"], s["template"]) == ("test", "developer", "python")
    assert s["id"].startswith("ws-test-developer-")
    assert s["websocket"] == f"/v1/cloudrun/workspaces/{s['id']}/shell"
    assert s["ssh"] is False
    assert host_path(stack, s["id"], "bucket_name").is_dir()
    # No host path in the answer, and a URL a client can use (the workspace's own is private).
    assert "workdir" not in s["details"] and s["bucket_name"] is None
    assert "/" not in str(s["details"]) and "http+unix" not in str(s)
    assert s["url"] == s["service_url"] == f"http://localhost/v1/sessions/{s['id']}"
    assert s["details"]["service_name"] == f"tether-{s['id']}"
    assert (s["workspace_id"], s["ttl_minutes"]) == ("test", 30)
    expires = s["expires_at"]
    assert expires is not None
    got = api.get(f"/v1/sessions/{s['id']}", headers=h()).get_json()
    assert got["status"] == "running" and got["expires_at"] == expires


def test_execute_runs_in_the_workspace(api: FlaskClient, stack: LocalStack) -> None:
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
    assert (host_path(stack, s["id"], "workdir") / "f.txt").read_text() == "hi\n"  # its own
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


def test_delete_terminates_and_frees_the_workspace(api: FlaskClient, stack: LocalStack) -> None:
    s = create(api)
    workdir = host_path(stack, s["id"], "workdir")
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
    assert r.status_code == 404 and sans_id(r.get_json()) == {"detail": "Session not found"}


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
    execute = f"/v1/sessions/{s['id']}/execute"
    for body, field in [
        ({"command": "echo a\x00b"}, "command"),  # no argument can carry a NUL
        ({"command": "env", "env": {"1A": "x"}}, "env"),
        ({"command": "env", "env": {"A": "x\x00"}}, "env"),
        ({"command": "env", "env": ["A=x"]}, "env"),
        ({"command": "pwd", "cwd": ""}, "cwd"),
    ]:
        r = api.post(execute, json=body, headers=h())
        assert r.status_code == 400 and field in r.get_json()["detail"], (body, r.get_json())
    r = api.post(f"/v1/cloudrun/workspaces/{s['id']}/execute?command=a%00b", headers=h())
    assert r.status_code == 400 and "command" in r.get_json()["detail"]


def test_execute_honours_env_and_cwd(api: FlaskClient) -> None:
    s = create(api)
    body = {"command": 'echo "$A|$B|$PWD"', "env": {"A": "it's", "B": "$HOME"}, "cwd": "/tmp"}
    r = api.post(f"/v1/sessions/{s['id']}/execute", json=body, headers=h())
    assert r.get_json()["stdout"] == "it's|$HOME|/tmp\n", r.get_json()
    body = {"command": "pwd", "cwd": "nowhere"}
    r = api.post(f"/v1/sessions/{s['id']}/execute", json=body, headers=h()).get_json()
    assert r["returncode"] == 1 and "nowhere" in r["stderr"]


def test_auth_is_required_and_checked(api: FlaskClient) -> None:
    r = api.get("/v1/sessions")
    assert r.status_code == 401 and sans_id(r.get_json()) == {"detail": "Missing API key"}
    r = api.get("/v1/sessions", headers=h("tether_abc_wrong"))
    assert r.status_code == 401 and sans_id(r.get_json()) == {"detail": "Invalid API key"}
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
        assert sans_id(r.get_json()) == {"detail": "Session not found"}
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


def test_provider_without_an_agent_is_503_unless_the_local_agent_stands_in(
    api: FlaskClient, stack: LocalStack
) -> None:
    """`tether up`'s local agent serves gke and cloud_run sessions where those providers have
    no agent (TETHER_LOCAL_STANDS_IN), and each such session says so; workstations it does not
    stand in for, nor a provider whose own agent is there but offline (it is waited for)."""
    r = api.post("/v1/sessions", json={"template": "python", "provider": "workstations"},
                 headers=h())  # fmt: skip
    assert r.status_code == 503
    assert sans_id(r.get_json()) == {
        "detail": "No online agents available for provider 'workstations'"
    }
    for provider in ("cloud_run", "gke"):
        s = create(api, provider=provider)
        assert s["provider"] == "local" and s["status"] == "running"
        assert s["details"]["requested_provider"] == provider
        assert s["details"]["stand_in_for"] == provider
    auto = create(api)  # nothing asked for: nothing stood in for
    assert "requested_provider" not in auto["details"] and "stand_in_for" not in auto["details"]

    agents = stack.services.agents
    agents.register("gke-away", "gke", "europe-west1", 4)
    stack.services.store.patch(
        "agents", "gke-away", {"last_heartbeat": utcnow() - timedelta(hours=1)}
    )
    r = api.post("/v1/sessions", json={"template": "python", "provider": "gke"}, headers=h())
    assert r.status_code == 503
    assert sans_id(r.get_json()) == {"detail": "No online agents available for provider 'gke'"}


def test_unknown_template_is_404(api: FlaskClient) -> None:
    r = api.post("/v1/sessions", json={"template": "cobol-mainframe"}, headers=h())
    assert r.status_code == 404
    assert sans_id(r.get_json()) == {"detail": "Template 'cobol-mainframe' does not exist"}


def test_shell_template_exists_from_the_first_start(api: FlaskClient) -> None:
    s = create(api, template="shell")
    out = api.post(f"/v1/sessions/{s['id']}/execute", json={"command": "echo $0"}, headers=h())
    assert out.get_json()["stdout"].strip() == "/bin/bash"


def test_expired_session_is_unusable_at_once_and_torn_down(
    api: FlaskClient, stack: LocalStack
) -> None:
    s = create(api, ttl_minutes=5)
    workdir = host_path(stack, s["id"], "workdir")

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


def test_execute_takes_its_fields_from_the_query_without_a_body(api: FlaskClient) -> None:
    """The packaged SDKs' shape (starbase `Shuttles.execute`, masterFoad/memos @3952b06): the
    fields in the query string, no body; a JSON body still wins when there is one."""
    s = create(api)
    path = f"/v1/sessions/{s['id']}/execute"
    q = "?command=echo+q&timeout=30&async_execution=false"
    out = api.post(path + q, headers={**h(), "Content-Type": "application/json"})
    assert out.status_code == 200, out.get_json()
    assert (out.get_json()["stdout"], out.get_json()["command"]) == ("q\n", "echo q")
    both = api.post(path + q, json={"command": "echo body"}, headers=h()).get_json()
    assert both["stdout"] == "body\n"
    for query, field in (("", "command"), ("?timeout=5", "command"),
                         ("?command=ls&timeout=0", "timeout"),
                         ("?command=ls&async_execution=maybe", "async_execution")):  # fmt: skip
        r = api.post(path + query, headers=h())
        assert r.status_code == 400, query
        assert field in r.get_json()["detail"], (query, r.get_json())
    r = api.post(path, json={"command": "echo job", "async_execution": True}, headers=h())
    assert r.status_code == 200 and r.get_json()["job_id"].startswith("cmd-"), r.get_json()


def test_list_pages_and_filters_by_workspace(api: FlaskClient) -> None:
    a = create(api, namespace="pages", workspace_id="dock-a")
    b = create(api, namespace="pages", workspace_id="dock-b")
    c = create(api, namespace="pages")
    first = api.get("/v1/sessions?namespace=pages&limit=2&offset=0", headers=h()).get_json()
    assert [s["id"] for s in first["sessions"]] == [a["id"], b["id"]]
    assert (first["total"], first["count"], first["page"], first["per_page"]) == (3, 3, 1, 2)
    assert (first["has_next"], first["has_prev"]) == (True, False)
    last = api.get("/v1/sessions?namespace=pages&limit=2&offset=2", headers=h()).get_json()
    assert [s["id"] for s in last["sessions"]] == [c["id"]]
    assert (last["page"], last["has_next"], last["has_prev"]) == (2, False, True)
    assert first["next_cursor"] and last["next_cursor"] is None
    # The cursor resumes after the page's last session, whatever came and went before it.
    d = create(api, namespace="pages")  # after c: in the next page, in its turn
    after = api.get(f"/v1/sessions?namespace=pages&limit=2&cursor={first['next_cursor']}",
                    headers=h()).get_json()  # fmt: skip
    assert [s["id"] for s in after["sessions"]] == [c["id"], d["id"]] and after["total"] == 4
    assert (after["has_next"], after["has_prev"]) == (False, True)
    both = api.get(f"/v1/sessions?offset=1&cursor={first['next_cursor']}", headers=h())
    assert both.status_code == 400 and "cursor" in both.get_json()["detail"]
    for cursor in ("nope", "W10", "WyJ0IiwieCIsImEiXQ"):  # not base64 JSON; [] ; a bad time
        bad = api.get(f"/v1/sessions?cursor={cursor}", headers=h())
        assert bad.status_code == 400 and "cursor" in bad.get_json()["detail"], cursor
    dock = api.get("/v1/sessions?workspace_id=dock-b", headers=h()).get_json()["sessions"]
    assert [(s["id"], s["workspace_id"]) for s in dock] == [(b["id"], "dock-b")]
    assert c["workspace_id"] == "pages"  # none given: the namespace, as OnMemOS does
    running = api.get("/v1/sessions?namespace=pages&status=running", headers=h()).get_json()
    assert running["total"] == 4
    assert api.get("/v1/sessions?namespace=pages&status=paused", headers=h()).get_json() == {
        "sessions": [], "total": 0, "count": 0, "page": 1, "per_page": 100,
        "has_next": False, "has_prev": False, "next_cursor": None,
    }  # fmt: skip
    bad = api.get("/v1/sessions?offset=-1", headers=h())
    assert bad.status_code == 400 and "offset" in bad.get_json()["detail"]
    only_ws = api.post("/v1/sessions", json={"workspace_id": "dock-c"}, headers=h()).get_json()
    assert (only_ws["namespace"], only_ws["workspace_id"]) == ("dock-c", "dock-c")
    bad = api.post("/v1/sessions", json={"workspace_id": "no spaces"}, headers=h())
    assert bad.status_code == 400 and "workspace_id" in bad.get_json()["detail"]


def test_legacy_answers_carry_the_real_servers_fields(api: FlaskClient) -> None:
    """`service_url`, `bucket_name`, `template`, `created_at`, `ttl_minutes` (server/api/
    cloudrun.py @3952b06, read by sdk/python/session_client.py); execute names its workspace;
    delete says so."""
    body = {"template": "python", "namespace": "legacy", "user": "dev", "ttl_minutes": 45}
    ws = api.post("/v1/cloudrun/workspaces", json=body, headers=h()).get_json()
    for key in ("service_url", "bucket_name", "template", "created_at", "ttl_minutes"):
        assert key in ws, key
    assert ws["service_url"] == f"http://localhost/v1/sessions/{ws['id']}"
    assert ws["ttl_minutes"] == 45
    got = api.get(f"/v1/cloudrun/workspaces/{ws['id']}", headers=h()).get_json()
    assert got["service_url"] == ws["service_url"] and got["bucket_name"] is None
    ran = api.post(f"/v1/cloudrun/workspaces/{ws['id']}/execute?command=true", headers=h())
    assert ran.get_json()["workspace_id"] == ws["id"] and ran.get_json()["command"] == "true"
    gone = api.delete(f"/v1/cloudrun/workspaces/{ws['id']}", headers=h()).get_json()
    assert gone["message"] == "Workspace deleted successfully" and gone["deleted"] is True


def test_ws_token_is_a_ticket_for_the_owner_only(api: FlaskClient) -> None:
    s = create(api)
    t = api.post(f"/v1/sessions/{s['id']}/ws-token", headers=h())
    assert t.status_code == 200
    token = t.get_json()
    assert token["token"].startswith("tkt_") and 0 < token["expires_in"] <= 60
    assert token["websocket"] == f"ws://localhost/v1/sessions/{s['id']}/shell"
    other = api.post(f"/v1/sessions/{s['id']}/ws-token", headers=h(BOB_KEY))
    assert other.status_code == 404 and sans_id(other.get_json()) == {"detail": "Session not found"}


def test_a_session_shows_names_never_host_paths_or_private_urls() -> None:
    """What starbase and onmemos-sdk read of a GKE session (`k8s_namespace`, `pod_name`,
    `service_name` at the top), and what a local one keeps to itself (its paths, its socket)."""
    gke = Session(id="ws-a", owner="alice", template="python", platform="gke", agent_id="g1",
                  url="http://ws-a.tether.svc.cluster.local:8080",
                  details={"pod_name": "ws-a-0", "k8s_namespace": "tether-ws",
                           "service_name": "ws-a", "pvc_name": "home-ws-a"})  # fmt: skip
    out = session_json(gke, "https://tether.example")
    assert (out.k8s_namespace, out.pod_name, out.service_name) == ("tether-ws", "ws-a-0", "ws-a")
    assert out.url == out.service_url == "https://tether.example/v1/sessions/ws-a"
    assert "cluster.local" not in out.model_dump_json()
    local = Session(id="ws-b", owner="alice", template="python", platform="local",
                    agent_id="l1", url="http+unix:///tmp/x/ws-b.sock",
                    details={"service_name": "tether-ws-b", "bucket_name": "/var/t/ws-b/bucket",
                             "workdir": "/var/t/ws-b/home", "sandbox": "bubblewrap"})  # fmt: skip
    shown = session_json(local, "http://127.0.0.1:8080").model_dump_json()
    assert "/var/t" not in shown and "http+unix" not in shown and "sandbox" not in shown
