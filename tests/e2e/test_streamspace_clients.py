"""StreamSpace v2's real clients against `tether up`, base URL and credential changed only.

Each test makes the calls one client makes (paths, methods, headers, query and body shapes)
and asserts on what that client reads from the answers. The clients are in the StreamSpace
repository (github.com/streamspace-dev/streamspace) at commit
c4fc0352893c2dbb41c33ffda902e47bfe723176 (branch feature/streamspace-v2-agent-refactor):
the web UI's API client `ui/src/lib/api.ts` (axios, base `/api/v1`, `Authorization: Bearer`)
and the pages that use it, the shell tests under `tests/scripts/`, the Playwright API tests
`ui/e2e/api/api-integration.spec.ts`, and the Go handlers under `api/internal/` whose answers
those clients were written against.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import pytest

from tests.e2e.conftest import Server, start_server

COMMIT = "c4fc0352893c2dbb41c33ffda902e47bfe723176"
PASSWORD = "clients-admin-password"
JSON = {"Content-Type": "application/json"}  # what the UI's axios instance always sends


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("clients") / "home",
        # One server for the module: room for its creates (the limits have tests of their own).
        {"TETHER_ADMIN_PASSWORD": PASSWORD,
         "TETHER_RATE_LIMITS": "login=1000,create=1000,api=10000"},
    )  # fmt: skip
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def admin_token(server: Server) -> str:
    r = httpx.post(f"{server.url}/api/v1/auth/login", headers=JSON,
                   json={"username": "admin", "password": PASSWORD})  # fmt: skip
    assert r.status_code == 200, r.text
    token: str = r.json()["token"]
    return token


def ui(server: Server, token: str | None) -> httpx.Client:
    """The web UI's axios instance: base /api/v1, JSON, the stored token as a Bearer."""
    headers = dict(JSON)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(base_url=f"{server.url}/api/v1", headers=headers, timeout=60)


def is_streamspace_error(r: httpx.Response, status: int, code: str | None = None) -> None:
    """The UI shows `message` (and `error`); the spec's shape has `code` and `details`."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["error"] and body["message"] and body["request_id"].startswith("req-"), body
    if code is not None:
        assert body["code"] == code, body


@pytest.fixture(scope="module")
def desktop(server: Server, admin_token: str) -> str:
    """A light desktop template (a solid colour on a VNC display), made with Tether's fields
    since the UI's template form has no desktop command."""
    from tether.core.models import Vnc
    from tether.service.templates import desktop_command

    vnc = Vnc(enabled=True, resolution="640x480")
    body = {
        "name": "ui-desktop",
        "display_name": "UI desktop",
        "vnc": vnc.model_dump(),
        "command": desktop_command(vnc, "xsetroot -solid '#336699'; sleep infinity"),
    }
    with ui(server, admin_token) as c:
        assert c.post("/templates", json=body).status_code == 201
    return "ui-desktop"


def wait_listed(c: httpx.Client, user: str, name: str, ready: Any, timeout: float = 180) -> Any:
    """Poll the UI's session list (`listSessions(user)`) until `ready(session)`; wait for a
    state, with room for a loaded machine."""
    deadline = time.monotonic() + timeout
    while True:
        r = c.get("/sessions", params={"user": user})
        assert r.status_code == 200, r.text
        found = [s for s in r.json()["sessions"] if s["name"] == name]
        assert len(found) == 1, r.json()
        if ready(found[0]):
            return found[0]
        assert time.monotonic() < deadline, found[0]
        time.sleep(0.2)


# -- the web UI (ui/src/lib/api.ts and the pages that call it) ---------------------------------


def test_ui_login_and_current_user(server: Server) -> None:
    """ui/src/pages/Login.tsx -> api.login(), then api.getCurrentUser() (ui/src/lib/api.ts at
    c4fc0352893c): `LoginResponse` is {token, expiresAt, user}; a failed sign-in shows the
    answer's `message`."""
    with ui(server, None) as c:
        r = c.post("/auth/login", json={"username": "admin", "password": PASSWORD})
        assert r.status_code == 200
        body = r.json()
        assert body["token"] and body["expiresAt"].endswith("Z")
        user = body["user"]
        assert (user["id"], user["username"], user["role"], user["active"]) == (
            "admin", "admin", "admin", True,
        )  # fmt: skip
        assert user["createdAt"] and user["provider"] == "local"
        bad = c.post("/auth/login", json={"username": "admin", "password": "wrong"})
        is_streamspace_error(bad, 401, "AUTH_INVALID_CREDENTIALS")
    with ui(server, body["token"]) as c:
        me = c.get("/users/me")
        assert me.status_code == 200 and me.json()["username"] == "admin"
        assert me.json()["createdAt"]


@pytest.mark.timeout(600)
def test_ui_session_lifecycle_by_name(server: Server, admin_token: str, desktop: str) -> None:
    """ui/src/hooks/useApi.ts, ui/src/pages/Sessions.tsx, ui/src/components/SessionCard.tsx
    and ui/src/pages/SessionViewer.tsx over ui/src/lib/api.ts (c4fc0352893c): sessions are
    addressed by `name`; Connect needs state 'running', status.phase 'Running' and a
    status.url; the viewer calls connect, then heartbeats, then disconnects."""
    with ui(server, admin_token) as c:
        templates = c.get("/templates")  # api.listTemplates(): response.data.templates
        assert templates.status_code == 200
        t = next(t for t in templates.json()["templates"] if t["name"] == desktop)
        assert t["displayName"] == "UI desktop" and t["appType"] == "desktop"
        assert "baseImage" in t and "defaultResources" in t and t["createdAt"]

        # api.createSession(CreateSessionRequest): the UI's field names.
        r = c.post("/sessions", json={"user": "admin", "template": desktop,
                                      "persistentHome": False, "idleTimeout": "30m",
                                      "maxSessionDuration": "8h", "tags": ["ui"]})  # fmt: skip
        assert r.status_code == 202, r.text
        created = r.json()
        name = created["name"]
        assert created["persistentHome"] is False and created["idleTimeout"] == "30m"
        assert created["maxSessionDuration"] == "480m"

        # Sessions.tsx: the card's Connect is enabled by phase Running and status.url.
        s = wait_listed(c, "admin", name, lambda s: s["state"] in ("running", "failed"))
        assert s["state"] == "running", s
        assert s["status"]["phase"] == "Running" and s["status"]["url"]
        assert s["createdAt"] and s["template"] == desktop and s["streamingProtocol"] == "vnc"

        # SessionViewer.tsx: api.getSession(name), then api.connectSession(name, username).
        got = c.get(f"/sessions/{name}")
        assert got.status_code == 200
        one = got.json()
        assert one["user"] == "admin" and one["state"] == "running"
        assert one["status"]["phase"] == "Running" and one["status"]["url"]
        assert one["activeConnections"] == 0 and "podName" in one["status"]
        connected = c.get(f"/sessions/{name}/connect", params={"user": "admin"})
        assert connected.status_code == 200
        conn = connected.json()
        assert conn["connectionId"] and conn["ready"] is True
        assert conn["sessionUrl"] == one["status"]["url"] and conn["state"] == "running"
        beat = c.post(f"/sessions/{name}/heartbeat", params={"connectionId": conn["connectionId"]})
        assert beat.status_code == 200 and beat.json() == {"status": "ok"}

        # The viewer's iframe: /vnc-viewer/{name}?token=<the JWT> is a page.
        page = httpx.get(f"{server.url}/vnc-viewer/{name}", params={"token": admin_token})
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert page.headers.get("x-frame-options", "sameorigin").lower() != "deny"
        # ... whose desktop WebSocket (Tether's page: the same path; StreamSpace's own page:
        # /api/v1/vnc/{id}) speaks RFB, with the session named by its name.
        ws = server.url.replace("http", "ws", 1)
        for path in (f"/vnc-viewer/{name}", f"/api/v1/vnc/{name}"):
            assert asyncio.run(rfb_banner(f"{ws}{path}?token={admin_token}")).startswith(b"RFB ")

        # Sessions.tsx: hibernate and wake by name (api.updateSessionState).
        r = c.patch(f"/sessions/{name}", json={"state": "hibernated"})
        assert r.status_code == 200 and r.json()["state"] == "hibernated", r.text
        assert r.json()["status"]["url"] is None  # Connect is disabled while it sleeps
        not_ready = c.get(f"/sessions/{name}/connect", params={"user": "admin"}).json()
        assert not_ready["ready"] is False and not_ready["sessionUrl"] == ""
        r = c.patch(f"/sessions/{name}", json={"state": "running"})
        assert r.status_code == 200 and r.json()["state"] in ("waking", "running"), r.text
        wait_listed(c, "admin", name, lambda s: s["state"] == "running" and s["status"]["url"])

        gone = c.post(f"/sessions/{name}/disconnect",
                      params={"connectionId": conn["connectionId"]})  # fmt: skip
        assert gone.status_code == 200 and gone.json()["activeConnections"] == 0

        # Sessions.tsx's delete dialog: api.deleteSession(name).
        assert c.delete(f"/sessions/{name}").status_code in (200, 202, 204)
        assert c.get(f"/sessions/{name}").json()["state"] == "terminated"


async def rfb_banner(url: str) -> bytes:
    """What noVNC reads first: the RFB version, over the subprotocol it offers ("binary")."""
    async with (
        aiohttp.ClientSession() as client,
        client.ws_connect(url, protocols=("binary",)) as ws,
    ):
        assert ws.protocol == "binary"
        msg = await ws.receive(timeout=30)
        assert msg.type is aiohttp.WSMsgType.BINARY, msg
        data: bytes = msg.data
        return data


def test_ui_sessions_are_the_callers_own(server: Server, admin_token: str) -> None:
    """ui/src/pages/admin/CreateUser.tsx -> api.createUser() and ui/src/lib/api.ts session calls
    (c4fc0352893c): a user addressing another user's session by its name is told it is not
    found; the owner is the credential's, whatever the body's `user` says."""
    with ui(server, admin_token) as c:
        r = c.post("/users", json={"username": "carol", "email": "carol@example.com",
                                   "fullName": "Carol", "role": "user", "provider": "local",
                                   "password": "carol-password", "active": True})  # fmt: skip
        assert r.status_code == 201, r.text
        theirs = c.post("/sessions", json={"user": "admin", "template": "shell"}).json()["name"]
    login = httpx.post(f"{server.url}/api/v1/auth/login",
                       json={"username": "carol", "password": "carol-password"})  # fmt: skip
    with ui(server, login.json()["token"]) as c:
        for call in (
            lambda: c.get(f"/sessions/{theirs}"),
            lambda: c.patch(f"/sessions/{theirs}", json={"state": "hibernated"}),
            lambda: c.delete(f"/sessions/{theirs}"),
            lambda: c.get(f"/sessions/{theirs}/connect", params={"user": "carol"}),
        ):
            is_streamspace_error(call(), 404, "SESSION_NOT_FOUND")
        mine = c.post("/sessions", json={"user": "admin", "template": "shell"})
        assert mine.status_code == 202
        listed = c.get("/sessions", params={"user": "admin"}).json()["sessions"]
        assert [s["name"] for s in listed] == [mine.json()["name"]]
        assert c.delete(f"/sessions/{mine.json()['name']}").status_code == 204
    with ui(server, admin_token) as c:
        assert c.delete(f"/sessions/{theirs}").status_code == 204


def test_ui_admin_agents_page(server: Server, admin_token: str) -> None:
    """ui/src/pages/admin/Agents.tsx -> api.listAgents(), approveAgent(), rejectAgent()
    (ui/src/lib/api.ts at c4fc0352893c): GET /admin/agents?... answers {agents, total, page,
    limit}; each row is read as agentId, platform, region, status, approvalStatus,
    capacity.active_sessions / max_sessions and lastHeartbeat."""
    with ui(server, admin_token) as c:
        r = c.get("/admin/agents?platform=local&status=online&page=1&limit=20")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["total"] >= 1 and (body["page"], body["limit"]) == (1, 20)
        agent = body["agents"][0]
        assert agent["agentId"] and agent["platform"] == "local" and agent["status"] == "online"
        assert agent["approvalStatus"] == "approved" and agent["region"]
        assert agent["capacity"]["max_sessions"] >= 1 and agent["capacity"]["active_sessions"] >= 0
        assert agent["lastHeartbeat"].endswith("Z")
        assert c.get("/admin/agents?approval_status=pending").json()["agents"] == []
        is_streamspace_error(c.get("/admin/agents?status=asleep"), 400, "INVALID_PARAMETER")
        ok = c.post(f"/admin/agents/{agent['agentId']}/approve")
        assert ok.status_code == 200 and ok.json()["message"]
        is_streamspace_error(c.post(f"/admin/agents/{agent['agentId']}/reject"), 409)
        is_streamspace_error(c.post("/admin/agents/no-such-agent/approve"), 404, "AGENT_NOT_FOUND")
    with ui(server, None) as c:
        is_streamspace_error(c.get("/admin/agents"), 401, "AUTH_TOKEN_MISSING")


def test_ui_admin_removes_an_agent(server: Server, admin_token: str) -> None:
    """ui/src/pages/admin/Agents.tsx's Remove -> api.deleteAgent(agentId): DELETE
    /admin/agents/{agentId} (c4fc0352893c); a 4xx shows the answer's message."""
    from tether.service.agents import Agents
    from tether.store.sqlite import SqliteStore

    Agents(SqliteStore(server.home / "tether.db")).register("retired-one", "gke", "eu", 2)
    with ui(server, admin_token) as c:
        listed = {a["agentId"] for a in c.get("/admin/agents").json()["agents"]}
        assert "retired-one" in listed
        assert c.delete("/admin/agents/retired-one").status_code == 200
        listed = {a["agentId"] for a in c.get("/admin/agents").json()["agents"]}
        assert "retired-one" not in listed and listed, "the others stay"
        is_streamspace_error(c.delete("/admin/agents/retired-one"), 404, "AGENT_NOT_FOUND")


def test_ui_admin_edits_a_user(server: Server, admin_token: str) -> None:
    """ui/src/pages/admin/UserDetail.tsx (c4fc0352893c): createUser's CreateUserRequest, then
    Edit/Save sends the form (email, fullName, role, active) with api.updateUser -> PATCH
    /users/{id}; the page shows `email` and `fullName` of getUser's answer."""
    with ui(server, admin_token) as c:
        made = c.post("/users", json={"username": "ui-edited", "email": "ui@example.com",
                                      "fullName": "UI User", "role": "user",
                                      "password": "ui-password-1"})  # fmt: skip
        assert made.status_code == 201, made.text
        form = {"email": "ui.user@example.com", "fullName": "UI User Renamed", "role": "user",
                "active": True}  # fmt: skip
        saved = c.patch("/users/ui-edited", json=form)
        assert saved.status_code == 200, saved.text
        shown = c.get("/users/ui-edited").json()
        assert (shown["email"], shown["fullName"]) == ("ui.user@example.com", "UI User Renamed")
        is_streamspace_error(c.patch("/users/ui-edited", json={"email": "nope"}), 400)


def test_ui_error_cases_name_the_field(server: Server, admin_token: str) -> None:
    """The calls of ui/src/lib/api.ts (c4fc0352893c) with what the Go handlers under
    api/internal/api/handlers.go refuse: a create without `user`, or with neither `template`
    nor `applicationId`, or naming an application that does not exist (404, whose `message`
    Dashboard.tsx shows); connect without `user`; heartbeat and disconnect without
    `connectionId`; an unknown state. Each a 400 in StreamSpace's shape naming the field."""
    with ui(server, admin_token) as c:
        r = c.post("/sessions", json={"user": "admin", "applicationId": "app-1"})
        is_streamspace_error(r, 404, "APPLICATION_NOT_FOUND")
        assert "app-1" in r.json()["message"] and r.json()["details"]["field"] == "applicationId"
        cases = [
            (c.post("/sessions", json={"template": "shell"}), "user"),
            (c.post("/sessions", json={"user": "admin"}), "template"),
            (c.post("/sessions", json={"user": "admin", "template": "shell",
                                       "persistentHome": "yes"}), "persistentHome"),
            (c.post("/sessions", json={"user": "admin", "template": "shell",
                                       "maxSessionDuration": "9999d"}), "maxSessionDuration"),
        ]  # fmt: skip
        name = c.post("/sessions", json={"user": "admin", "template": "shell"}).json()["name"]
        cases += [
            (c.get(f"/sessions/{name}/connect"), "user"),
            (c.post(f"/sessions/{name}/heartbeat"), "connectionId"),
            (c.post(f"/sessions/{name}/disconnect"), "connectionId"),
            (c.patch(f"/sessions/{name}", json={"state": "asleep"}), "state"),
        ]
        for r, field in cases:
            assert r.status_code == 400, (field, r.text)
            assert r.json()["details"]["field"] == field, r.json()
        is_streamspace_error(c.get("/sessions/nonexistent-session-12345"), 404,
                             "SESSION_NOT_FOUND")  # fmt: skip
        assert c.delete(f"/sessions/{name}").status_code == 204


async def feed(url: str, until: Any, timeout: float = 180) -> list[dict[str, Any]]:
    """useSessionsWebSocket (ui/src/hooks/useWebSocket.ts, c4fc0352893c): the pages' session
    list, from `sessions_update` messages on /api/v1/ws/sessions?token=; the sessions of the
    first message for which `until(sessions)` holds."""
    async with aiohttp.ClientSession() as client, client.ws_connect(url) as ws:
        deadline = time.monotonic() + timeout
        while True:
            msg = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
            assert msg.type is aiohttp.WSMsgType.TEXT, msg
            data = json.loads(msg.data)
            if data.get("type") != "sessions_update":
                continue
            sessions: list[dict[str, Any]] = data["sessions"]
            assert data["count"] == len(sessions) and data["timestamp"]
            if until(sessions):
                return sessions


@pytest.mark.timeout(600)
def test_ui_dashboard_launches_an_application_and_the_sessions_page_lists_it(
    server: Server, admin_token: str
) -> None:
    """ui/src/pages/Dashboard.tsx (c4fc0352893c): useUserApplications() -> GET
    /applications/user, api.getFavorites(), addFavorite/removeFavorite(templateName), and
    launchApp -> api.createSession({name, namespace, user, applicationId, state,
    persistentHome}); then ui/src/pages/Sessions.tsx lists it from the sessions feed (filtered
    by `user`), its tag manager calls api.updateSessionTags(name, tags) and its QuotaAlert
    api.getCurrentUserQuota() (a 404 shows no alert)."""
    with ui(server, admin_token) as c:
        carol = c.post("/users", json={"username": "dana", "email": "dana@example.com",
                                       "fullName": "Dana", "role": "user",
                                       "password": "dana-password"})  # fmt: skip
        assert carol.status_code == 201, carol.text
    login = httpx.post(f"{server.url}/api/v1/auth/login",
                       json={"username": "dana", "password": "dana-password"})  # fmt: skip
    token = login.json()["token"]
    with ui(server, token) as c:
        r = c.get("/applications/user")
        assert r.status_code == 200, r.text
        apps = r.json()["applications"]
        assert r.json()["total"] == len(apps)
        shell = next(a for a in apps if a["templateName"] == "shell")
        assert shell["enabled"] is True and shell["displayName"] and shell["id"]
        assert {"description", "category", "icon", "appType"} <= set(shell)
        assert c.get(f"/applications/{shell['id']}").json()["templateName"] == "shell"

        # The star on an application's card.
        assert c.get("/preferences/favorites").json() == {"favorites": [], "total": 0}
        for name in ("python", "shell", "shell"):
            added = c.post(f"/preferences/favorites/{name}")
            assert added.status_code == 200 and added.json()["templateName"] == name
        favorites = c.get("/preferences/favorites").json()
        assert [f["templateName"] for f in favorites["favorites"]] == ["shell", "python"]
        assert favorites["total"] == 2 and all(f["addedAt"] for f in favorites["favorites"])
        assert c.delete("/preferences/favorites/python").json()["templateName"] == "python"
        assert c.get("/preferences/favorites").json()["total"] == 1

        # launchApp: the UI names the session itself and sends the application's id.
        r = c.post("/sessions", json={
            "name": f"dana-shell-{int(time.time() * 1000)}", "namespace": "streamspace",
            "user": "dana", "applicationId": shell["id"], "state": "running",
            "persistentHome": True,
        })  # fmt: skip
        assert r.status_code == 202, r.text
        name = r.json()["name"]
        assert r.json()["template"] == "shell"
        quota = c.get("/users/me/quota")
        is_streamspace_error(quota, 404, "QUOTA_NOT_FOUND")

    url = f"{server.url.replace('http', 'ws', 1)}/api/v1/ws/sessions?token={token}"
    listed = asyncio.run(feed(url, lambda ss: any(
        s["name"] == name and s["state"] == "running" for s in ss)))  # fmt: skip
    assert {s["user"] for s in listed} == {"dana"}  # the caller's own, nobody else's
    mine = next(s for s in listed if s["name"] == name)
    assert mine["template"] == "shell" and mine["status"]["phase"] == "Running"
    assert mine["createdAt"] and "activeConnections" in mine

    with ui(server, token) as c:
        tagged = c.patch(f"/sessions/{name}/tags", json={"tags": ["work", "urgent"]})
        assert tagged.status_code == 200 and tagged.json()["tags"] == ["work", "urgent"]
        r = c.patch(f"/sessions/{name}/tags", json={"tags": [""]})
        assert r.status_code == 400 and r.json()["details"]["field"] == "tags.0"
        assert c.delete(f"/sessions/{name}").status_code == 204
        is_streamspace_error(c.patch(f"/sessions/{name}/tags", json={"tags": ["late"]}), 409)
    # A terminated session leaves the feed, as StreamSpace's own leaves it out.
    asyncio.run(feed(url, lambda ss: all(s["name"] != name for s in ss)))


def test_the_sessions_feed_refuses_and_ends_like_a_relay(server: Server, admin_token: str) -> None:
    """useSessionsWebSocket opens /api/v1/ws/sessions?token=<the JWT>: without a valid one the
    upgrade is refused in StreamSpace's error shape (401), a plain GET is a 400, and a user
    deactivated while the page is open loses the feed (closed with 4401)."""
    base = server.url.replace("http", "ws", 1) + "/api/v1/ws/sessions"
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
               "Sec-WebSocket-Version": "13"}  # fmt: skip
    http_base = f"{server.url}/api/v1/ws/sessions"
    for query in ("", "?token=", "?token=invalid"):
        r = httpx.get(http_base + query, headers=upgrade)
        is_streamspace_error(r, 401)
    is_streamspace_error(httpx.get(http_base, params={"token": admin_token}), 400)
    with ui(server, admin_token) as c:
        made = c.post("/users", json={"username": "erin", "password": "erin-password"})
        assert made.status_code == 201, made.text
    token = httpx.post(
        f"{server.url}/api/v1/auth/login", json={"username": "erin", "password": "erin-password"}
    ).json()["token"]

    async def cut_off() -> int | None:
        async with (
            aiohttp.ClientSession() as client,
            client.ws_connect(f"{base}?token={token}") as ws,
        ):
            first = await ws.receive(timeout=60)
            assert json.loads(first.data)["type"] == "sessions_update"
            with ui(server, admin_token) as c:
                assert c.patch("/users/erin", json={"active": False}).status_code == 200
            while (await ws.receive(timeout=60)).type is aiohttp.WSMsgType.TEXT:
                pass
            return ws.close_code

    assert asyncio.run(cut_off()) == 4401


def test_ui_setup_wizard_and_token_refresh(server: Server, admin_token: str) -> None:
    """ui/src/pages/SetupWizard.tsx -> api.getSetupStatus() (no credential): the admin exists
    with a password, so no setup is required; api.refreshToken(token) -> POST /auth/refresh
    gives a LoginResponse whose token works, and refuses a bad one with 401."""
    status = httpx.get(f"{server.url}/api/v1/auth/setup/status")
    assert status.status_code == 200
    assert status.json() | {"message": ""} == {
        "setupRequired": False, "adminExists": True, "hasPassword": True, "message": "",
    }  # fmt: skip
    with ui(server, None) as c:
        r = c.post("/auth/refresh", json={"token": admin_token})
        assert r.status_code == 200, r.text
        assert r.json()["user"]["username"] == "admin" and r.json()["expiresAt"]
        fresh = r.json()["token"]
        is_streamspace_error(c.post("/auth/refresh", json={"token": "not-a-token"}), 401)
    with ui(server, fresh) as c:
        assert c.get("/users/me").json()["username"] == "admin"


# -- the Playwright API tests (ui/e2e/api/api-integration.spec.ts) ------------------------------


def test_playwright_api_contracts(server: Server, admin_token: str) -> None:
    """ui/e2e/api/api-integration.spec.ts (c4fc0352893c): unauthenticated calls are 401 in
    JSON with an `error`; the VNC and HTTP proxy paths take the token from the query string,
    refuse none, an empty or a wrong one (401), a session that does not exist (404), and a
    desktop that is not running (409); VNC paths may be framed (no X-Frame-Options: DENY)."""
    base = f"{server.url}/api/v1"
    assert httpx.get(f"{base}/sessions").status_code == 401
    is_streamspace_error(httpx.get(f"{base}/sessions/nonexistent"), 401)
    for proxy in ("vnc/test-session", "http/test-session/"):
        for query in ("", "?token=", "?token=invalid", "?token=test"):
            r = httpx.get(f"{base}/{proxy}{query}")
            is_streamspace_error(r, 401)
            assert r.headers.get("x-frame-options", "sameorigin").lower() != "deny"
        r = httpx.get(f"{base}/{proxy.replace('test-session', 'nonexistent-session')}",
                      params={"token": admin_token})  # fmt: skip
        is_streamspace_error(r, 404, "SESSION_NOT_FOUND")
    with ui(server, admin_token) as c:
        r = c.post("/sessions", json={"user": "admin", "template": "shell", "state": "hibernated"})
        name = r.json()["name"]
        assert r.json()["state"] == "hibernated"
    # The spec finds its hibernated session by `name` and asks for its desktop by that name.
    r = httpx.get(f"{base}/vnc/{name}", params={"token": admin_token})
    is_streamspace_error(r, 409, "SESSION_NOT_RUNNING")
    with ui(server, admin_token) as c:
        assert c.delete(f"/sessions/{name}").status_code == 204


def test_refused_desktop_upgrades_answer_in_streamspace_shape(
    server: Server, admin_token: str
) -> None:
    """StreamSpace's viewer pages (api/static/vnc-viewer.html, the UI's iframe of
    ui/src/pages/SessionViewer.tsx, c4fc0352893c) open the desktop as a WebSocket with
    `?token=`; a refused upgrade is a plain answer in StreamSpace's error shape, as the Go
    handler api/internal/handlers/vnc_proxy.go refuses with 401, 404 and 409."""
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Protocol": "binary"}  # fmt: skip

    def refused(url: str) -> tuple[int, dict[str, Any]]:
        r = httpx.get(f"{server.url}{url}", headers=upgrade)
        return r.status_code, r.json()

    for path in ("/vnc-viewer/", "/api/v1/vnc/"):
        status, body = refused(f"{path}test-session")
        assert status == 401 and body["code"] == "AUTH_TOKEN_MISSING", body
        assert {"error", "message", "details", "timestamp", "request_id"} <= set(body)
        status, body = refused(f"{path}test-session?token=invalid")
        assert status == 401 and body["code"] == "AUTH_TOKEN_INVALID", body
        status, body = refused(f"{path}nope?token={admin_token}")
        assert status == 404 and body["code"] == "SESSION_NOT_FOUND", body


# -- the shell tests (tests/scripts/) ----------------------------------------------------------


def test_shell_scripts_template_crud(server: Server, admin_token: str) -> None:
    """tests/scripts/phase2/test_2.1_template_creation.sh, test_2.2_template_updates.sh and
    test_2.3_template_deletion.sh (c4fc0352893c): a template in camelCase (displayName, image,
    defaultResources, env) read back by `.id // .templateId // .name`; a PUT of only
    displayName and defaultResources answered with `.displayName`; a session from it read by
    `.sessionId // .session_id // .id`."""
    auth = {"Authorization": f"Bearer {admin_token}", **JSON}
    base = f"{server.url}/api/v1"
    r = httpx.post(f"{base}/templates", headers=auth, json={
        "name": "test-template", "displayName": "Test Template",
        "description": "A test template for integration testing", "image": "ubuntu:22.04",
        "category": "testing", "defaultResources": {"cpu": "500m", "memory": "1Gi"},
        "env": {"TEST_VAR": "test_value"},
    })  # fmt: skip
    assert r.status_code == 201, r.text
    tid = r.json().get("id") or r.json().get("templateId") or r.json()["name"]
    assert tid == "test-template"
    got = httpx.get(f"{base}/templates/{tid}", headers=auth).json()
    assert got["name"] == "test-template" and got["base_image"] == "ubuntu:22.04"
    assert got["environment"] == {"TEST_VAR": "test_value"}
    assert got["defaultResources"] == {"cpu": "500m", "memory": "1Gi"}

    r = httpx.put(f"{base}/templates/{tid}", headers=auth, json={
        "displayName": "Updated Template", "defaultResources": {"cpu": "1000m", "memory": "2Gi"},
    })  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["displayName"] == "Updated Template"
    assert r.json()["default_resources"] == {"cpu": "1000m", "memory": "2Gi"}

    s = httpx.post(f"{base}/sessions", headers=auth, json={
        "user": "delete-test", "template": tid, "resources": {"cpu": "500m", "memory": "1Gi"},
    })  # fmt: skip
    assert s.status_code == 202, s.text
    sid = s.json().get("sessionId") or s.json().get("session_id") or s.json()["id"]
    assert httpx.delete(f"{base}/sessions/{sid}", headers=auth).status_code == 204
    assert httpx.delete(f"{base}/templates/{tid}", headers=auth).status_code == 204
    assert httpx.get(f"{base}/templates/{tid}", headers=auth).status_code == 404
    missing = httpx.post(f"{base}/templates", headers=auth, json={"displayName": "No name"})
    is_streamspace_error(missing, 400, "MISSING_REQUIRED_FIELD")
    assert missing.json()["details"]["field"] == "name"


def test_shell_scripts_session_and_agent_reads(server: Server, admin_token: str) -> None:
    """tests/scripts/helpers/create_session_and_wait.sh, phase1/test_1.1a_basic_session_
    creation.sh and phase3/test_3.3_agent_heartbeat.sh, test_3.4_load_balancing.sh
    (c4fc0352893c): a session read by `.sessionId // .session_id // .id`, its agent by
    `.agentId // .agent_id`, an agent's `.lastHeartbeat // .last_heartbeat` and `.status`."""
    auth = {"Authorization": f"Bearer {admin_token}", **JSON}
    base = f"{server.url}/api/v1"
    r = httpx.post(f"{base}/sessions", headers=auth, json={
        "user": "testuser", "template": "shell", "resources": {"cpu": "1000m", "memory": "2Gi"},
    })  # fmt: skip
    assert r.status_code == 202, r.text
    sid = r.json()["id"]
    details = httpx.get(f"{base}/sessions/{sid}", headers=auth).json()
    assert details["status"] is not None or details["state"]
    agent_id = details["agentId"]
    assert agent_id and agent_id == details["agent_id"]
    agent = httpx.get(f"{base}/agents/{agent_id}", headers=auth).json()
    assert agent["lastHeartbeat"] == agent["last_heartbeat"] and agent["status"] == "online"
    assert agent["agentId"] == agent_id
    assert httpx.delete(f"{base}/sessions/{sid}", headers=auth).status_code == 204
