"""The StreamSpace surface through its function target, on a local stack with a real agent."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import jwt
from flask.testing import FlaskClient
from tether.local.stack import LocalStack

from tests.surfaces.conftest import ADMIN_KEY, ADMIN_PASSWORD, ALICE_KEY, BOB_KEY
from tests.waiting import wait_for

API = "/api/v1"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def login(ss: FlaskClient, username: str = "admin", password: str = ADMIN_PASSWORD) -> str:
    r = ss.post(f"{API}/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.get_json()
    token: str = r.get_json()["token"]
    return token


def assert_error(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.get_json()
    body: dict[str, Any] = r.get_json()
    assert body["code"] == code, body
    assert {"error", "message", "code", "details", "timestamp", "request_id"} <= set(body)
    assert body["request_id"].startswith("req-") and body["timestamp"].endswith("Z")
    return body


def wait_state(
    ss: FlaskClient, sid: str, token: str, state: str, timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = ss.get(f"{API}/sessions/{sid}", headers=bearer(token)).get_json()
        if body["state"] == state or time.monotonic() > deadline:
            assert body["state"] == state, body
            return body
        time.sleep(0.1)


# -- auth ---------------------------------------------------------------------------------------


def test_login_returns_a_24h_jwt_and_the_user(ss: FlaskClient) -> None:
    r = ss.post(f"{API}/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    body = r.get_json()
    assert r.status_code == 200
    assert body["user"]["username"] == "admin" and body["user"]["role"] == "admin"
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 24 * 3600
    assert claims["iss"] and claims["aud"] and claims["jti"]
    assert body["expires_at"].endswith("Z")
    me = ss.get(f"{API}/sessions", headers=bearer(body["token"]))
    assert me.status_code == 200


def test_bad_credentials_and_missing_token(ss: FlaskClient) -> None:
    r = ss.post(f"{API}/auth/login", json={"username": "admin", "password": "wrong"})
    body = assert_error(r, 401, "AUTH_INVALID_CREDENTIALS")
    assert body["message"] == "Invalid username or password"
    r = ss.post(f"{API}/auth/login", json={"username": "nobody", "password": "wrong"})
    assert_error(r, 401, "AUTH_INVALID_CREDENTIALS")
    assert_error(ss.get(f"{API}/sessions"), 401, "AUTH_TOKEN_MISSING")
    body = assert_error(ss.post(f"{API}/auth/login", json={"username": "admin"}), 400,
                        "MISSING_REQUIRED_FIELD")  # fmt: skip
    assert body["details"]["field"] == "password"


def test_logout_revokes_the_token_at_once(ss: FlaskClient) -> None:
    token = login(ss)
    other = login(ss)
    assert ss.post(f"{API}/auth/logout", headers=bearer(token)).get_json() == {
        "message": "Logout successful"
    }
    assert_error(ss.get(f"{API}/templates", headers=bearer(token)), 401, "AUTH_TOKEN_INVALID")
    assert ss.get(f"{API}/templates", headers=bearer(other)).status_code == 200


def test_tokens_are_validated_strictly(ss: FlaskClient, stack: LocalStack) -> None:
    token = login(ss)
    claims = jwt.decode(token, options={"verify_signature": False})
    none_alg = jwt.encode(claims, key=None, algorithm="none")  # type: ignore[arg-type]
    assert_error(ss.get(f"{API}/templates", headers=bearer(none_alg)), 401, "AUTH_TOKEN_INVALID")
    head, payload, sig = token.split(".")
    tampered = f"{head}.{payload}.{sig[:-2]}{'AA' if sig[-2:] != 'AA' else 'BB'}"
    assert_error(ss.get(f"{API}/templates", headers=bearer(tampered)), 401, "AUTH_TOKEN_INVALID")
    secret = stack.services.tokens.secret
    for change in ({"aud": "someone-else"}, {"iss": "evil"}, {"sub": "ghost"}):
        forged = jwt.encode(claims | change, secret, algorithm="HS256")
        assert_error(ss.get(f"{API}/templates", headers=bearer(forged)), 401, "AUTH_TOKEN_INVALID")
    expired = jwt.encode(claims | {"exp": claims["iat"] - 10}, secret, algorithm="HS256")
    assert_error(ss.get(f"{API}/templates", headers=bearer(expired)), 401, "AUTH_TOKEN_EXPIRED")
    wrong_key = jwt.encode(claims, "not-the-secret-" * 3, algorithm="HS256")
    assert_error(ss.get(f"{API}/templates", headers=bearer(wrong_key)), 401, "AUTH_TOKEN_INVALID")


def test_jwt_and_api_keys_work_on_every_surface(ss: FlaskClient, api: FlaskClient) -> None:
    token = login(ss)
    assert api.get("/v1/sessions", headers=bearer(token)).status_code == 200
    assert ss.get(f"{API}/sessions", headers=bearer(ALICE_KEY)).status_code == 200
    assert ss.get(f"{API}/sessions", headers={"X-API-Key": ALICE_KEY}).status_code == 200


# -- users --------------------------------------------------------------------------------------


def test_admin_manages_users(ss: FlaskClient) -> None:
    token = login(ss)
    r = ss.post(f"{API}/users", headers=bearer(token),
                json={"username": "john.doe", "email": "john.doe@example.com",
                      "password": "secure-password", "role": "user"})  # fmt: skip
    assert r.status_code == 201
    created = r.get_json()
    assert (created["username"], created["role"], created["active"]) == ("john.doe", "user", True)
    assert "password" not in str(created)
    dup = ss.post(f"{API}/users", headers=bearer(token),
                  json={"username": "john.doe", "password": "another-password"})  # fmt: skip
    assert_error(dup, 409, "USER_EXISTS")
    short = ss.post(f"{API}/users", headers=bearer(token), json={"username": "x", "password": "1"})
    assert_error(short, 400, "VALIDATION_FAILED")
    users = ss.get(f"{API}/users?role=user&limit=2", headers=bearer(token)).get_json()
    assert users["pagination"]["total"] == 3  # alice, bob, john.doe
    assert [u["username"] for u in users["users"]] == ["alice", "bob"]
    page2 = ss.get(f"{API}/users?role=user&limit=2&page=2", headers=bearer(token)).get_json()
    assert [u["username"] for u in page2["users"]] == ["john.doe"]
    admins = ss.get(f"{API}/users?role=admin", headers=bearer(token)).get_json()["users"]
    assert [u["username"] for u in admins] == ["admin"]
    john = login(ss, "john.doe", "secure-password")
    assert_error(ss.get(f"{API}/users", headers=bearer(john)), 403, "AUTH_INSUFFICIENT_PERMISSIONS")
    last = ss.get(f"{API}/users?role=user", headers=bearer(token)).get_json()["users"]
    assert next(u for u in last if u["username"] == "john.doe")["last_login"]


def test_admin_edits_a_users_email_and_full_name(ss: FlaskClient) -> None:
    """The web UI's user page sends its whole form back (email, fullName, role, active)."""
    admin = bearer(ADMIN_KEY)
    r = ss.post(f"{API}/users", headers=admin,
                json={"username": "jane", "email": "jane@example.com", "fullName": "Jane Roe",
                      "password": "secure-password", "role": "user"})  # fmt: skip
    made = r.get_json()
    assert r.status_code == 201 and (made["fullName"], made["full_name"]) == ("Jane Roe",) * 2
    form = {"email": "jane.doe@example.com", "fullName": "Jane Doe", "role": "user",
            "active": True}  # fmt: skip
    r = ss.patch(f"{API}/users/jane", json=form, headers=admin)
    assert r.status_code == 200, r.get_json()
    for shown in (r.get_json(), ss.get(f"{API}/users/jane", headers=admin).get_json()):
        assert shown["email"] == "jane.doe@example.com"
        assert shown["fullName"] == shown["full_name"] == "Jane Doe"
    # Unset fields stay; "" clears (a full name then shows the username, as before one is set).
    r = ss.patch(f"{API}/users/jane", json={"email": None, "full_name": "J. Doe"}, headers=admin)
    assert (r.get_json()["email"], r.get_json()["fullName"]) == ("jane.doe@example.com", "J. Doe")
    cleared = ss.patch(f"{API}/users/jane", json={"email": "", "fullName": ""}, headers=admin)
    assert (cleared.get_json()["email"], cleared.get_json()["fullName"]) == (None, "jane")
    bad = ss.patch(f"{API}/users/jane", json={"email": "not an email"}, headers=admin)
    assert assert_error(bad, 400, "VALIDATION_FAILED")["details"]["field"] == "email"
    assert_error(ss.patch(f"{API}/users/jane", json={"fullName": "x"}, headers=bearer(ALICE_KEY)),
                 403, "AUTH_INSUFFICIENT_PERMISSIONS")  # fmt: skip
    jane = login(ss, "jane", "secure-password")
    assert ss.get(f"{API}/users/me", headers=bearer(jane)).get_json()["fullName"] == "jane"


# -- templates and agents -----------------------------------------------------------------------


def test_templates_catalog(ss: FlaskClient) -> None:
    h = bearer(ALICE_KEY)
    names = {t["name"] for t in ss.get(f"{API}/templates", headers=h).get_json()["templates"]}
    assert {"python", "shell", "firefox-browser"} <= names
    browsers = ss.get(f"{API}/templates?category=Web%20Browsers", headers=h).get_json()
    assert [t["name"] for t in browsers["templates"]] == ["firefox-browser"]
    ff = ss.get(f"{API}/templates/firefox-browser", headers=h).get_json()
    assert ff["vnc"]["enabled"] is True and ff["display_name"] == "Firefox Web Browser"
    assert_error(ss.get(f"{API}/templates/nope", headers=h), 404, "TEMPLATE_NOT_FOUND")
    paged = ss.get(f"{API}/templates?limit=1&page=2", headers=h).get_json()
    assert len(paged["templates"]) == 1 and paged["pagination"]["total"] == len(names)


def test_agents_registry_and_draining(ss: FlaskClient, stack: LocalStack) -> None:
    admin, user = bearer(ADMIN_KEY), bearer(ALICE_KEY)
    agent_id = stack.agent.agent_id
    listed = ss.get(f"{API}/agents?platform=local&status=online", headers=user).get_json()
    assert [a["agent_id"] for a in listed["agents"]] == [agent_id]
    assert listed["pagination"] == {"page": 1, "limit": 20, "total": 1, "total_pages": 1}
    assert ss.get(f"{API}/agents?status=offline", headers=user).get_json()["agents"] == []
    s = ss.post(f"{API}/sessions", json={"user": "alice", "template": "shell"}, headers=user)
    sid = s.get_json()["id"]
    wait_state(ss, sid, ALICE_KEY, "running")
    other = ss.post(f"{API}/sessions", json={"user": "bob", "template": "shell"},
                    headers=bearer(BOB_KEY)).get_json()["id"]  # fmt: skip
    wait_state(ss, other, BOB_KEY, "running")
    detail = ss.get(f"{API}/agents/{agent_id}", headers=user).get_json()
    assert detail["capacity"]["current_sessions"] == 2
    assert [x["id"] for x in detail["sessions"]] == [sid]  # bob's is not alice's to see
    seen = ss.get(f"{API}/agents/{agent_id}", headers=admin).get_json()["sessions"]
    assert {x["id"] for x in seen} == {sid, other}
    ss.delete(f"{API}/sessions/{other}", headers=bearer(BOB_KEY))
    assert_error(ss.get(f"{API}/agents/ghost", headers=user), 404, "AGENT_NOT_FOUND")

    def stats_now() -> dict[str, Any]:
        got: dict[str, Any] = ss.get(f"{API}/agents/stats", headers=user).get_json()
        return got

    # Bob's capacity is given back a moment after his session is recorded terminated.
    assert wait_for(lambda: stats_now()["total_capacity"]["current_sessions"] == 1)
    stats = stats_now()
    assert (stats["total_agents"], stats["online_agents"], stats["draining_agents"]) == (1, 1, 0)
    assert stats["total_capacity"]["current_sessions"] == 1
    assert stats["by_platform"] == {"local": 1}

    assert_error(ss.patch(f"{API}/agents/{agent_id}", json={"status": "draining"}, headers=user),
                 403, "AUTH_INSUFFICIENT_PERMISSIONS")  # fmt: skip
    r = ss.patch(f"{API}/agents/{agent_id}", json={"status": "draining"}, headers=admin)
    assert r.get_json()["status"] == "draining"
    refused = ss.post(f"{API}/sessions", json={"user": "alice", "template": "shell"}, headers=user)
    assert_error(refused, 503, "NO_AGENTS_AVAILABLE")
    time.sleep(1.2)  # heartbeats keep coming and must not undo the drain
    assert ss.get(f"{API}/agents/stats", headers=user).get_json()["draining_agents"] == 1
    assert wait_state(ss, sid, ALICE_KEY, "running")["state"] == "running"  # existing go on
    bad = ss.patch(f"{API}/agents/{agent_id}", json={"status": "sleepy"}, headers=admin)
    assert_error(bad, 400, "VALIDATION_FAILED")
    ss.patch(f"{API}/agents/{agent_id}", json={"status": "online"}, headers=admin)
    again = ss.post(f"{API}/sessions", json={"user": "alice", "template": "shell"}, headers=user)
    assert again.status_code == 202


def test_admin_removes_an_agent_without_live_sessions(ss: FlaskClient, stack: LocalStack) -> None:
    """The web UI's Remove button: DELETE /admin/agents/{id}."""
    admin, user = bearer(ADMIN_KEY), bearer(ALICE_KEY)
    busy = stack.agent.agent_id
    sid = ss.post(f"{API}/sessions", json={"user": "alice", "template": "shell"},
                  headers=user).get_json()["id"]  # fmt: skip
    wait_state(ss, sid, ALICE_KEY, "running")
    stack.services.events.handle({"type": "register", "agent_id": "spare-one", "platform": "gke"})
    listed = ss.get(f"{API}/admin/agents", headers=admin).get_json()["agents"]
    assert {a["agentId"] for a in listed} == {busy, "spare-one"}

    assert_error(ss.delete(f"{API}/admin/agents/spare-one", headers=user), 403,
                 "AUTH_INSUFFICIENT_PERMISSIONS")  # fmt: skip
    assert_error(ss.delete(f"{API}/admin/agents/ghost", headers=admin), 404, "AGENT_NOT_FOUND")
    refused = assert_error(ss.delete(f"{API}/admin/agents/{busy}", headers=admin), 409,
                           "AGENT_HAS_SESSIONS")  # fmt: skip
    assert sid in refused["message"] and refused["error"] == "Agent has live sessions"
    assert wait_state(ss, sid, ALICE_KEY, "running")["agent_id"] == busy, "nothing changed"

    r = ss.delete(f"{API}/admin/agents/spare-one", headers=admin)
    assert r.status_code == 200 and r.get_json()["agentId"] == "spare-one"
    listed = ss.get(f"{API}/admin/agents", headers=admin).get_json()["agents"]
    assert [a["agentId"] for a in listed] == [busy]
    assert_error(ss.get(f"{API}/agents/spare-one", headers=user), 404, "AGENT_NOT_FOUND")
    assert_error(ss.delete(f"{API}/admin/agents/spare-one", headers=admin), 404,
                 "AGENT_NOT_FOUND")  # fmt: skip


def test_an_agent_that_stops_heartbeating_goes_offline(ss: FlaskClient, stack: LocalStack) -> None:
    services = stack.services
    services.agents.grace = 1.0
    services.events.handle({"type": "register", "agent_id": "quiet-one", "platform": "gke"})
    assert services.agents.is_online(services.agents.repo.get("quiet-one"))
    time.sleep(0.5)
    services.sweeper.run()  # within the grace: still online, no flapping
    assert services.agents.repo.get("quiet-one").status.value == "online"
    time.sleep(0.7)
    services.sweeper.run()
    assert services.agents.repo.get("quiet-one").status.value == "offline"
    r = ss.post(f"{API}/sessions", headers=bearer(ALICE_KEY),
                json={"user": "alice", "template": "shell", "platform": "gke"})  # fmt: skip
    assert_error(r, 503, "NO_AGENTS_AVAILABLE")
    services.events.handle({"type": "heartbeat", "agent_id": "quiet-one"})
    assert services.agents.is_online(services.agents.repo.get("quiet-one"))  # at once
    services.sweeper.run()  # and its record follows
    assert services.agents.repo.get("quiet-one").status.value == "online"


# -- sessions -----------------------------------------------------------------------------------


def test_session_lifecycle(ss: FlaskClient, stack: LocalStack) -> None:
    h = bearer(ALICE_KEY)
    r = ss.post(f"{API}/sessions", headers=h,
                json={"user": "alice", "template": "shell", "resources": {"memory": "2Gi"},
                      "tags": ["project-alpha", "dev"], "idle_timeout": "30m"})  # fmt: skip
    assert r.status_code == 202
    created = r.get_json()
    assert created["state"] == "pending" and created["status"]["phase"] == "Pending"
    assert created["resources"]["memory"] == "2Gi" and created["idle_timeout"] == "30m"
    sid = created["id"]
    running = wait_state(ss, sid, ALICE_KEY, "running")
    assert running["status"]["started_at"] and running["platform_metadata"]["service_name"]
    assert not any(str(v).startswith("/") for v in running["platform_metadata"].values())
    assert running["status"]["vnc_url"] is None  # a shell has no desktop
    stack.services.sessions.execute(
        stack.services.auth.principal_for_key(ALICE_KEY), sid, "echo kept > note", 10
    )

    slept = ss.patch(f"{API}/sessions/{sid}", json={"state": "hibernated"}, headers=h).get_json()
    assert slept["state"] == "hibernated" and slept["status"]["phase"] == "Hibernated"
    bad = ss.patch(f"{API}/sessions/{sid}", json={"state": "hibernated"}, headers=h)
    assert_error(bad, 400, "INVALID_STATE_TRANSITION")
    woke = ss.patch(f"{API}/sessions/{sid}", json={"state": "running"}, headers=h).get_json()
    assert woke["state"] == "running"
    out = stack.services.sessions.execute(
        stack.services.auth.principal_for_key(ALICE_KEY), sid, "cat note", 10
    )
    assert out.stdout == "kept\n", "the home survives hibernate and wake"

    logs = ss.get(f"{API}/sessions/{sid}/logs?tail=5", headers=h)
    assert logs.status_code == 200 and isinstance(logs.get_json()["logs"], list)

    user_kill = ss.patch(f"{API}/sessions/{sid}", json={"state": "terminated"}, headers=h)
    assert_error(user_kill, 403, "AUTH_INSUFFICIENT_PERMISSIONS")
    assert ss.delete(f"{API}/sessions/{sid}", headers=h).status_code == 204
    gone = ss.get(f"{API}/sessions/{sid}", headers=h).get_json()
    assert gone["state"] == "terminated"
    again = ss.patch(f"{API}/sessions/{sid}", json={"state": "running"}, headers=h)
    body = assert_error(again, 400, "INVALID_STATE_TRANSITION")
    assert body["message"] == "Cannot transition from 'terminated' to 'running'"


def test_sessions_are_found_by_name_too(ss: FlaskClient, stack: LocalStack) -> None:
    """StreamSpace's web UI names sessions by `name` (ui/src/lib/api.ts at c4fc0352893c):
    every session path takes it as well as the id; someone else's name is not found."""
    from tether.store.indexes import missing

    h = bearer(ALICE_KEY)
    created = ss.post(f"{API}/sessions", headers=h,
                      json={"user": "alice", "template": "shell"}).get_json()  # fmt: skip
    sid, name = created["id"], created["name"]
    assert name != sid
    assert ss.get(f"{API}/sessions/{name}", headers=h).get_json()["id"] == sid
    assert ss.get(f"{API}/sessions/{name}", headers=bearer(ADMIN_KEY)).get_json()["id"] == sid
    for call in (ss.get, ss.delete):
        assert_error(call(f"{API}/sessions/{name}", headers=bearer(BOB_KEY)), 404,
                     "SESSION_NOT_FOUND")  # fmt: skip
    ticket = ss.post(f"{API}/sessions/{name}/tickets", headers=h).get_json()
    assert ticket["session_id"] == sid  # a ticket names the id, which the relay checks
    wait_state(ss, name, ALICE_KEY, "running")
    assert ss.get(f"{API}/sessions/{name}/logs?tail=5", headers=h).status_code == 200
    slept = ss.patch(f"{API}/sessions/{name}", json={"state": "hibernated"}, headers=h)
    assert slept.get_json()["id"] == sid and slept.get_json()["state"] == "hibernated"
    assert ss.delete(f"{API}/sessions/{name}", headers=h).status_code == 204
    assert ss.get(f"{API}/sessions/{sid}", headers=h).get_json()["state"] == "terminated"
    # The lookup is one equality query on name (and owner): no composite index, no scan.
    assert missing("sessions", [("name", "==", name), ("owner", "==", "alice")], None,
                    False) is None  # fmt: skip


def test_web_ui_field_names_in_bodies_and_answers(ss: FlaskClient) -> None:
    """The web UI's camelCase names (ui/src/lib/api.ts at c4fc0352893c) next to the
    reference document's: accepted in bodies, present in answers."""
    h = bearer(ALICE_KEY)
    r = ss.post(f"{API}/sessions", headers=h, json={
        "user": "alice", "template": "shell", "persistentHome": False, "idleTimeout": "45m",
        "maxSessionDuration": "2h", "name": "ignored", "namespace": "streamspace",
    })  # fmt: skip
    body = r.get_json()
    assert r.status_code == 202, body
    assert body["persistent_home"] is body["persistentHome"] is False
    assert body["idle_timeout"] == body["idleTimeout"] == "45m"
    assert body["maxSessionDuration"] == "120m" and body["createdAt"] == body["created_at"]
    assert body["status"]["url"] is None and body["streamingProtocol"] is None
    listed = ss.get(f"{API}/sessions", headers=h).get_json()
    assert listed["total"] == listed["pagination"]["total"] == 1
    templates = ss.get(f"{API}/templates", headers=h).get_json()
    assert templates["total"] == len(templates["templates"])
    firefox = next(t for t in templates["templates"] if t["name"] == "firefox-browser")
    assert firefox["displayName"] == firefox["display_name"] and firefox["appType"] == "desktop"
    ss.delete(f"{API}/sessions/{body['id']}", headers=h)


def test_non_persistent_home_is_fresh_after_wake(ss: FlaskClient, stack: LocalStack) -> None:
    h = bearer(ALICE_KEY)
    sid = ss.post(f"{API}/sessions", headers=h, json={"user": "alice", "template": "shell",
                  "persistent_home": False}).get_json()["id"]  # fmt: skip
    wait_state(ss, sid, ALICE_KEY, "running")
    who = stack.services.auth.principal_for_key(ALICE_KEY)
    stack.services.sessions.execute(who, sid, "echo gone > note", 10)
    ss.patch(f"{API}/sessions/{sid}", json={"state": "hibernated"}, headers=h)
    assert ss.patch(f"{API}/sessions/{sid}", json={"state": "running"}, headers=h).get_json()[
        "state"] == "running"  # fmt: skip
    assert stack.services.sessions.execute(who, sid, "cat note", 10).returncode != 0


def test_create_hibernated_then_wake(ss: FlaskClient) -> None:
    h = bearer(ALICE_KEY)
    r = ss.post(f"{API}/sessions", headers=h,
                json={"user": "alice", "template": "shell", "state": "hibernated"})  # fmt: skip
    assert r.status_code == 202 and r.get_json()["state"] == "hibernated"
    woke = ss.patch(f"{API}/sessions/{r.get_json()['id']}", json={"state": "running"}, headers=h)
    assert woke.get_json()["state"] == "running"


def test_create_errors(ss: FlaskClient) -> None:
    h = bearer(ALICE_KEY)
    r = ss.post(
        f"{API}/sessions", json={"user": "alice", "template": "invalid-template"}, headers=h
    )
    body = assert_error(r, 400, "TEMPLATE_NOT_FOUND")
    assert body["message"] == "Template 'invalid-template' does not exist"
    missing = assert_error(ss.post(f"{API}/sessions", json={"template": "shell"}, headers=h), 400,
                           "MISSING_REQUIRED_FIELD")  # fmt: skip
    assert missing["details"]["field"] == "user"
    for bad, field in [
        ({"user": "alice", "template": "shell", "state": "sleeping"}, "state"),
        ({"user": "alice", "template": "shell", "idle_timeout": "soon"}, "idle_timeout"),
        (
            {"user": "alice", "template": "shell", "resources": {"memory": "lots"}},
            "resources.memory",
        ),
    ]:
        body = assert_error(
            ss.post(f"{API}/sessions", json=bad, headers=h), 400, "VALIDATION_FAILED"
        )
        assert body["details"]["field"] == field
    r = ss.post(f"{API}/sessions", headers=h,
                json={"user": "alice", "template": "shell", "platform": "kubernetes"})  # fmt: skip
    assert_error(r, 503, "NO_AGENTS_AVAILABLE")


def test_list_filters_sort_and_pagination(ss: FlaskClient) -> None:
    h = bearer(ALICE_KEY)
    ids = []
    for user, tags in [("ann", ["a"]), ("bea", ["a", "b"]), ("cid", ["b"])]:
        r = ss.post(
            f"{API}/sessions", headers=h, json={"user": user, "template": "shell", "tags": tags}
        )
        ids.append(r.get_json()["id"])
        time.sleep(0.01)
    for sid in ids:
        wait_state(ss, sid, ALICE_KEY, "running")

    def listed(query: str) -> list[str]:
        return [
            s["id"] for s in ss.get(f"{API}/sessions?{query}", headers=h).get_json()["sessions"]
        ]

    assert listed("") == ids[::-1]  # newest first by default
    assert listed("order=asc") == ids
    assert listed("sort=user&order=desc") == ids[::-1]
    assert listed("user=bea") == [ids[1]]
    # Any of the tags, as StreamSpace's own server filters (api/internal/api/handlers.go,
    # ListSessionsByTags, at 583a9f95d5dd).
    assert listed("tags=a,b&order=asc") == ids
    assert listed("tags=a") == [ids[1], ids[0]]
    many = ",".join(f"t{i}" for i in range(31))
    assert_error(ss.get(f"{API}/sessions?tags={many}", headers=h), 400, "INVALID_PARAMETER")
    assert listed("tags=b&order=asc") == [ids[1], ids[2]]
    assert listed("state=running&template=shell&order=asc") == ids
    assert listed("state=hibernated") == []
    page = ss.get(f"{API}/sessions?limit=2&page=2&order=asc", headers=h).get_json()
    assert [s["id"] for s in page["sessions"]] == [ids[2]]
    assert page["pagination"] == {"page": 2, "limit": 2, "total": 3, "total_pages": 2}
    assert_error(ss.get(f"{API}/sessions?sort=colour", headers=h), 400, "INVALID_PARAMETER")
    assert_error(ss.get(f"{API}/sessions?limit=500", headers=h), 400, "INVALID_PARAMETER")


def test_force_delete_is_immediate(ss: FlaskClient) -> None:
    h = bearer(ALICE_KEY)
    sid = ss.post(
        f"{API}/sessions", json={"user": "alice", "template": "shell"}, headers=h
    ).get_json()["id"]
    wait_state(ss, sid, ALICE_KEY, "running")
    assert ss.delete(f"{API}/sessions/{sid}?force=true", headers=h).status_code == 204
    assert ss.get(f"{API}/sessions/{sid}", headers=h).get_json()["state"] == "terminated"


def test_idle_sessions_hibernate(ss: FlaskClient, stack: LocalStack) -> None:
    h = bearer(ALICE_KEY)
    body = {"user": "alice", "template": "shell", "idle_timeout": "1m"}
    sid = ss.post(f"{API}/sessions", headers=h, json=body).get_json()["id"]
    wait_state(ss, sid, ALICE_KEY, "running")

    def idle(s: Any) -> Any:
        s.last_activity = s.last_activity - timedelta(minutes=2)
        return s

    stack.services.sessions.repo.mutate(sid, idle)
    assert wait_state(ss, sid, ALICE_KEY, "hibernated")["status"]["message"] == (
        "Session hibernated successfully"
    )


# -- who may do what ----------------------------------------------------------------------------


def test_authorization_matrix(ss: FlaskClient) -> None:
    alice, bob = bearer(ALICE_KEY), bearer(BOB_KEY)
    sid = ss.post(
        f"{API}/sessions", json={"user": "alice", "template": "shell"}, headers=alice
    ).get_json()["id"]
    wait_state(ss, sid, ALICE_KEY, "running")
    for method, path, body in [
        ("get", f"/sessions/{sid}", None),
        ("patch", f"/sessions/{sid}", {"state": "hibernated"}),
        ("patch", f"/sessions/{sid}", {"state": "terminating"}),
        ("delete", f"/sessions/{sid}", None),
        ("delete", f"/sessions/{sid}?force=true", None),
        ("get", f"/sessions/{sid}/logs", None),
    ]:
        r = getattr(ss, method)(API + path, json=body, headers=bob)
        assert_error(r, 404, "SESSION_NOT_FOUND")
    assert sid not in str(ss.get(f"{API}/sessions", headers=bob).get_json())
    assert wait_state(ss, sid, ALICE_KEY, "running")
    for method, path, body in [
        ("get", "/users", None),
        ("post", "/users", {"username": "mallory", "password": "password123"}),
        ("patch", "/agents/any", {"status": "draining"}),
        ("patch", f"/sessions/{sid}", {"state": "terminated"}),
    ]:
        r = getattr(ss, method)(API + path, json=body, headers=alice)
        assert_error(r, 403, "AUTH_INSUFFICIENT_PERMISSIONS")


# -- rate limits --------------------------------------------------------------------------------


def test_rate_limit_headers_and_429(ss: FlaskClient, rate_window: Callable[[], None]) -> None:
    rate_window()
    r = ss.get(f"{API}/templates", headers=bearer(ALICE_KEY))
    assert r.headers["X-RateLimit-Limit"] == "100"
    assert int(r.headers["X-RateLimit-Remaining"]) == 99
    assert int(r.headers["X-RateLimit-Reset"]) > time.time()
    for _ in range(5):
        r = ss.post(f"{API}/auth/login", json={"username": "admin", "password": "wrong"})
        assert r.status_code == 401 and r.headers["X-RateLimit-Limit"] == "5"
    r = ss.post(f"{API}/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    body = assert_error(r, 429, "RATE_LIMIT_EXCEEDED")
    assert 0 < body["retry_after"] <= 60 and int(r.headers["Retry-After"]) == body["retry_after"]
    assert body["message"].startswith("Too many requests. Please try again in")
    # a forged forwarding header does not buy a fresh allowance
    r = ss.post(f"{API}/auth/login", headers={"X-Forwarded-For": "203.0.113.9"},
                json={"username": "admin", "password": ADMIN_PASSWORD})  # fmt: skip
    assert r.status_code == 429


def test_session_creation_is_limited_per_principal(
    ss: FlaskClient, rate_window: Callable[[], None]
) -> None:
    h = bearer(ALICE_KEY)
    rate_window()
    codes = [
        ss.post(
            f"{API}/sessions",
            json={"user": "alice", "template": "shell", "state": "hibernated"},
            headers=h,
        ).status_code
        for _ in range(11)
    ]
    assert codes == [202] * 10 + [429]
    other = ss.post(f"{API}/sessions", headers=bearer(BOB_KEY),
                    json={"user": "bob", "template": "shell", "state": "hibernated"})  # fmt: skip
    assert other.status_code == 202, "another principal has its own allowance"


def test_admin_manages_templates(ss: FlaskClient) -> None:
    admin, user = bearer(ADMIN_KEY), bearer(ALICE_KEY)
    body = {"name": "notes", "display_name": "Notes", "category": "Office",
            "command": "echo notes-ready; sleep 600", "tags": ["office"]}  # fmt: skip
    assert_error(ss.post(f"{API}/templates", json=body, headers=user), 403,
                 "AUTH_INSUFFICIENT_PERMISSIONS")  # fmt: skip
    r = ss.post(f"{API}/templates", json=body, headers=admin)
    assert r.status_code == 201 and r.get_json()["category"] == "Office"
    assert_error(ss.post(f"{API}/templates", json=body, headers=admin), 409, "TEMPLATE_EXISTS")
    sid = ss.post(f"{API}/sessions", json={"user": "alice", "template": "notes"}, headers=user)
    sid = sid.get_json()["id"]
    wait_state(ss, sid, ALICE_KEY, "running")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        logs = ss.get(f"{API}/sessions/{sid}/logs?timestamps=false", headers=user).get_json()
        if "notes-ready" in logs["logs"]:
            break
        time.sleep(0.2)
    assert "notes-ready" in logs["logs"], logs
    stamped = ss.get(f"{API}/sessions/{sid}/logs?tail=1000", headers=user).get_json()["logs"]
    assert any(line.endswith(" notes-ready") and line[:4].isdigit() for line in stamped)

    changed = ss.put(
        f"{API}/templates/notes", json=body | {"display_name": "Notes 2"}, headers=admin
    )
    assert changed.get_json()["display_name"] == "Notes 2"
    mismatch = ss.put(f"{API}/templates/notes", json=body | {"name": "other"}, headers=admin)
    assert_error(mismatch, 400, "VALIDATION_FAILED")
    # In use by a running session (a hibernated one too: it wakes from its template): refused.
    in_use = assert_error(ss.delete(f"{API}/templates/notes", headers=admin), 409,
                          "TEMPLATE_IN_USE")  # fmt: skip
    assert sid in in_use["message"] and in_use["error"] == "Template in use"
    ss.patch(f"{API}/sessions/{sid}", json={"state": "hibernated"}, headers=user)
    wait_state(ss, sid, ALICE_KEY, "hibernated")
    assert_error(ss.delete(f"{API}/templates/notes", headers=admin), 409, "TEMPLATE_IN_USE")
    assert ss.get(f"{API}/templates/notes", headers=user).status_code == 200, "still there"
    assert ss.delete(f"{API}/sessions/{sid}", headers=user).status_code == 204
    wait_state(ss, sid, ALICE_KEY, "terminated")
    assert ss.delete(f"{API}/templates/notes", headers=admin).status_code == 204
    assert_error(ss.get(f"{API}/templates/notes", headers=user), 404, "TEMPLATE_NOT_FOUND")
    assert_error(ss.delete(f"{API}/templates/notes", headers=admin), 404, "TEMPLATE_NOT_FOUND")


def test_specific_validation_codes(ss: FlaskClient) -> None:
    h = bearer(ALICE_KEY)
    body = assert_error(ss.post(f"{API}/sessions", json={"user": "a"}, headers=h), 400,
                        "MISSING_REQUIRED_FIELD")  # fmt: skip
    assert body["details"]["field"] == "template"
    assert_error(ss.get(f"{API}/sessions?page=0", headers=h), 400, "INVALID_PARAMETER")
    sid = ss.post(f"{API}/sessions", json={"user": "alice", "template": "shell"}, headers=h)
    sid = sid.get_json()["id"]
    wait_state(ss, sid, ALICE_KEY, "running")
    ss.patch(f"{API}/sessions/{sid}", json={"state": "terminating"}, headers=h)
    r = ss.patch(f"{API}/sessions/{sid}", json={"state": "hibernated"}, headers=h)
    if r.status_code != 400:  # still terminating (not yet terminated): say so
        assert_error(r, 409, "SESSION_TERMINATING")
