"""OnMemOS' real clients against `tether up`, with only the base URL and the key changed.

Each test makes the calls one client makes (same paths, methods, headers, query strings and
bodies, through the HTTP library that client uses) and asserts on the fields that client reads
from each answer. The clients are those of github.com/masterFoad/memos at commit
3952b0680af0d318c0976d71ba7cd5cee1fba7ff; each test names the file it follows.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
import websocket  # websocket-client: what the starbase end-to-end script opens shells with
import websockets

from tests.bodies import sans_id
from tests.e2e.conftest import Server, start_server
from tests.waiting import wait_for

MISSING = "tether_wrongkey0001_" + "0" * 32


def ws_base(server: Server) -> str:
    return "ws" + server.url[len("http") :]


# -- sdk/python/client.py (OnMemOSClient) ------------------------------------------------------


def sdk_session(server: Server, key: str | None = None) -> requests.Session:
    """The headers OnMemOSClient.__init__ puts on its requests.Session."""
    s = requests.Session()
    s.headers.update(
        {
            "X-API-Key": key or server.key,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
    )
    return s


def sdk_wait_running(s: requests.Session, url: str, sid: str) -> dict[str, Any]:
    """_wait_for_session_ready: GET the session until its status is "running"."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        got: dict[str, Any] = s.get(f"{url}/v1/sessions/{sid}", timeout=30).json()
        if got["status"] == "running":
            return got
        assert got["status"] not in ("failed", "error", "terminated"), got["details"]
        time.sleep(0.2)
    raise AssertionError(f"{sid} did not run")


def test_python_sdk_session_context_flow(server: Server) -> None:
    """sdk/python/client.py @3952b06: health_check, session_context (create_session, the wait
    for "running"), execute_session, get_session, list_sessions, cleanup_expired_sessions and
    delete_session, as OnMemOSClient sends them."""
    health = requests.get(f"{server.url}/health", timeout=10)  # no key: a bare requests.get
    health.raise_for_status()
    assert health.json()["status"] == "healthy"

    s, url = sdk_session(server), server.url
    spec = {"workspace_id": "my-workspace", "template": "python", "namespace": "temp-work",
            "user": "developer", "ttl_minutes": 30}  # fmt: skip
    created = s.post(f"{url}/v1/sessions", json=spec, timeout=120)
    created.raise_for_status()
    session = created.json()
    sid = session["id"]
    assert session["workspace_id"] == "my-workspace" and session["namespace"] == "temp-work"
    sdk_wait_running(s, url, sid)

    payload = {"command": "python --version", "timeout": 120, "async_execution": False}
    ran = s.post(f"{url}/v1/sessions/{sid}/execute", json=payload, timeout=130)
    ran.raise_for_status()
    result = ran.json()
    assert result["success"] is True and result["stdout"].startswith("Python 3.")
    assert result["session_id"] == sid and result["command"] == "python --version"

    listed = s.get(f"{url}/v1/sessions", params={"namespace": "temp-work", "user": "developer"})
    data = listed.json()
    assert isinstance(data, dict) and [x["id"] for x in data["sessions"]] == [sid]
    # cleanup_expired_sessions reads each listed session's id and status
    assert {x["status"] for x in data["sessions"]} == {"running"}

    # delete_session: GET first (already terminated: done), else DELETE and expect a 200
    assert s.get(f"{url}/v1/sessions/{sid}").json()["status"] == "running"
    assert s.delete(f"{url}/v1/sessions/{sid}", timeout=60).status_code == 200
    assert s.get(f"{url}/v1/sessions/{sid}").json()["status"] == "terminated"


def test_python_sdk_workspace_sessions_and_errors(embedded: Server) -> None:
    """sdk/python/client.py @3952b06: create_session_in_workspace's body (resource, image,
    GPU, storage and env fields Tether does not use) with its default provider "gke", which
    the local stack's agent serves (it has no GKE agent: TETHER_LOCAL_STANDS_IN), saying so
    in the session's details; force_cleanup_session's first strategy, and the statuses
    _make_request maps to its messages (401, 404, 400)."""
    s, url = sdk_session(embedded), embedded.url
    spec: dict[str, Any] = {
        "provider": "gke", "template": "python", "namespace": "project1", "user": "developer",
        "workspace_id": "my-dev-workspace", "ttl_minutes": 60,
        "resource_spec": {"cpu_size": "small", "memory_size": "small"},
        "image_spec": {"image_type": "python_pro", "image_tag": "3.11-slim"},
        "gpu_spec": {"gpu_type": "t4", "gpu_count": 1},
        "request_persistent_storage": True, "persistent_storage_size_gb": 10,
        "env": {"MODE": "dev"},
    }  # fmt: skip
    created = s.post(f"{url}/v1/sessions", json=spec, timeout=120)
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    assert created.json()["workspace_id"] == "my-dev-workspace"
    # Where it runs, told as it is: the local agent, standing in for the GKE asked for.
    assert created.json()["provider"] == "local" and created.json()["status"] == "running"
    details = created.json()["details"]
    assert details["requested_provider"] == "gke" and details["stand_in_for"] == "gke"

    bad = s.post(f"{url}/v1/sessions/{sid}/execute", json={"command": "true", "timeout": 0})
    assert bad.status_code == 400 and "timeout" in bad.json()["detail"]
    bad = s.post(f"{url}/v1/sessions/{sid}/execute", json={"timeout": 5})
    assert bad.status_code == 400 and "command" in bad.json()["detail"]
    assert s.get(f"{url}/v1/sessions/ws-nope").status_code == 404  # "Endpoint not found"
    assert sdk_session(embedded, MISSING).get(f"{url}/v1/sessions").status_code == 401

    assert s.delete(f"{url}/v1/sessions/{sid}", timeout=30).status_code == 200


# -- sdk/python/client.py: server info, force cleanup, workspaces, persistent storage ----------


def test_python_sdk_server_info_and_force_cleanup(embedded: Server) -> None:
    """sdk/python/client.py @3952b06: get_server_info (`GET /` with the client's headers),
    and force_cleanup_session's strategies one by one: DELETE, then `POST .../terminate`,
    then `POST .../force-delete`, each done when it answers 200 or 204; an unknown session is
    a 404 for each ("Endpoint not found")."""
    s, url = sdk_session(embedded), embedded.url
    info = s.get(f"{url}/", timeout=30)
    assert info.status_code == 200 and info.json()["status"] == "running"
    assert info.json()["endpoints"]["health"] == "/health" and info.json()["version"]
    assert sdk_session(embedded, MISSING).get(f"{url}/").status_code == 401

    spec = {"template": "python", "namespace": "cleanup", "user": "developer"}
    ids = [s.post(f"{url}/v1/sessions", json=spec, timeout=120).json()["id"] for _ in range(2)]
    terminated = s.post(f"{url}/v1/sessions/{ids[0]}/terminate", timeout=30)
    assert terminated.status_code in (200, 204), terminated.text
    assert s.get(f"{url}/v1/sessions/{ids[0]}").json()["status"] == "terminated"
    forced = s.post(f"{url}/v1/sessions/{ids[1]}/force-delete", timeout=30)
    assert forced.status_code in (200, 204), forced.text
    assert forced.json()["status"] == "terminated"
    for strategy in ("terminate", "force-delete"):
        assert s.post(f"{url}/v1/sessions/ws-nope/{strategy}").status_code == 404
        again = s.post(f"{url}/v1/sessions/{ids[0]}/{strategy}", timeout=30)
        assert again.status_code == 200  # already ended: done
    other = sdk_session(embedded, MISSING)
    assert other.post(f"{url}/v1/sessions/{ids[1]}/terminate").status_code == 401


def test_python_sdk_workspaces(server: Server) -> None:
    """sdk/python/client.py @3952b06: create_workspace (a JSON body: user_id, workspace_id,
    name, resource_package as the enum's value, description), get_workspace
    (`/v1/workspaces/{user}/{id}`), list_workspaces (`/v1/workspaces/{user}`, read as a JSON
    array), create_session_in_workspace in it, delete_workspace (done when 200). A workspace
    with live sessions is not deleted (409); another user's is not found (404)."""
    s, url = sdk_session(server), server.url
    payload = {"user_id": "developer", "workspace_id": "my-dev-workspace",
               "name": "Development Environment", "resource_package": "dev_medium",
               "description": "My main development workspace"}  # fmt: skip
    made = s.post(f"{url}/v1/workspaces", json=payload, timeout=30)
    assert made.status_code // 100 == 2, made.text
    workspace = made.json()
    assert (workspace["workspace_id"], workspace["id"], workspace["user_id"]) == (
        "my-dev-workspace", "my-dev-workspace", "developer")  # fmt: skip
    assert workspace["resource_package"] == "dev_medium" and workspace["status"] == "active"
    assert s.post(f"{url}/v1/workspaces", json=payload).status_code == 409  # made already
    ml = {**payload, "workspace_id": "ml-workspace", "name": "Machine Learning Lab",
          "resource_package": "ml_t4_medium", "description": None}  # fmt: skip
    assert s.post(f"{url}/v1/workspaces", json=ml).status_code == 201
    bad = s.post(f"{url}/v1/workspaces", json={**payload, "resource_package": "huge"})
    assert bad.status_code == 400 and "resource_package" in bad.json()["detail"]

    got = s.get(f"{url}/v1/workspaces/developer/my-dev-workspace")
    assert got.status_code == 200 and got.json()["name"] == "Development Environment"
    listed = s.get(f"{url}/v1/workspaces/developer").json()
    assert isinstance(listed, list)
    assert [w["workspace_id"] for w in listed] == ["my-dev-workspace", "ml-workspace"]
    assert s.get(f"{url}/v1/workspaces/nobody").json() == []

    spec = {"provider": "gke", "template": "python", "namespace": "project1",
            "user": "developer", "workspace_id": "my-dev-workspace", "ttl_minutes": 60}  # fmt: skip
    sid = s.post(f"{url}/v1/sessions", json=spec, timeout=120).json()["id"]
    assert s.get(f"{url}/v1/workspaces/developer/my-dev-workspace").json()[
        "current_sessions"] == 1  # fmt: skip
    busy = s.delete(f"{url}/v1/workspaces/developer/my-dev-workspace")
    assert busy.status_code == 409 and "live session" in busy.json()["detail"]
    assert s.delete(f"{url}/v1/sessions/{sid}", timeout=60).status_code == 200

    # Another user (their own key) sees none of them.
    bob = sdk_session(server, user_key(server, "bob"))
    assert bob.get(f"{url}/v1/workspaces/developer/my-dev-workspace").status_code == 404
    assert bob.get(f"{url}/v1/workspaces/developer").json() == []
    assert bob.delete(f"{url}/v1/workspaces/developer/ml-workspace").status_code == 404

    assert s.delete(f"{url}/v1/workspaces/developer/my-dev-workspace").status_code == 200
    assert s.get(f"{url}/v1/workspaces/developer/my-dev-workspace").status_code == 404
    assert s.delete(f"{url}/v1/workspaces/developer/my-dev-workspace").status_code == 404


def user_key(server: Server, username: str) -> str:
    """A new user's API key (the user made by the admin, the key by the user, through the
    StreamSpace API)."""
    password = f"pw-{username}-12345"
    admin = {"Authorization": f"Bearer {server.key}"}
    user = {"username": username, "password": password, "email": f"{username}@example.com"}
    made = requests.post(f"{server.url}/api/v1/users", json=user, headers=admin, timeout=30)
    assert made.status_code == 201, made.text
    login = {"username": username, "password": password}
    token = requests.post(f"{server.url}/api/v1/auth/login", json=login, timeout=30).json()
    made = requests.post(f"{server.url}/api/v1/api-keys", json={"name": "sdk"}, timeout=30,
                         headers={"Authorization": f"Bearer {token['token']}"})  # fmt: skip
    assert made.status_code == 201, made.text
    key: str = made.json()["key"]
    return key


def upload_persist(
    s: requests.Session, url: str, src: Path, dst: str = "", user: str = "analyst"
) -> requests.Response:
    """OnMemOSClient.upload_persist: the file opened and sent as `files={"file": f}` through
    the client's requests.Session, whose `Content-Type: application/json` stays on the
    multipart body (requests keeps a header the session sets)."""
    params = {"namespace": "data", "user": user}
    if dst:
        params["dst"] = dst
    with src.open("rb") as f:
        return s.request("POST", f"{url}/v1/fs/persist/upload", timeout=30, params=params,
                         files={"file": f})  # fmt: skip


def download_persist(s: requests.Session, url: str, path: str, dst: Path) -> requests.Response:
    """OnMemOSClient.download_persist: streamed, written 8 KiB at a time."""
    params = {"namespace": "data", "user": "analyst", "path": path}
    r = s.request("GET", f"{url}/v1/fs/persist/download", timeout=30, params=params,
                  stream=True)  # fmt: skip
    if r.status_code == 200:
        with dst.open("wb") as f:
            for chunk in r.iter_content(chunk_size=8192):
                f.write(chunk)
    return r


def test_python_sdk_persistent_storage(server: Server, tmp_path: Path) -> None:
    """sdk/python/client.py @3952b06: upload_persist, list_persist and download_persist,
    by namespace and user: the files go to ~/persist in the caller's running session of that
    namespace and user, where its commands see them. A file of several steps' size makes the
    round trip byte for byte; without such a session the calls are a 404."""
    s, url = sdk_session(server), server.url
    src = tmp_path / "results.csv"
    src.write_text("a,b\n1,2\n")
    assert upload_persist(s, url, src).status_code == 404  # no session of that namespace yet
    spec = {"template": "python", "namespace": "data", "user": "analyst"}
    sid = s.post(f"{url}/v1/sessions", json=spec, timeout=120).json()["id"]

    up = upload_persist(s, url, src)
    assert up.status_code == 200, up.text
    assert (
        up.json()["ok"] is True and up.json()["bytes"] == 8 and up.json()["path"] == "results.csv"
    )
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 4096 + b"tail")  # 1 MiB and a bit: many steps
    up = upload_persist(s, url, blob, dst="runs/1/blob.bin")
    assert up.status_code == 200 and up.json()["bytes"] == blob.stat().st_size

    ran = s.post(
        f"{url}/v1/sessions/{sid}/execute",
        json={"command": "cat persist/results.csv; wc -c < ~/persist/runs/1/blob.bin"},
    )
    assert ran.json()["stdout"] == f"a,b\n1,2\n{blob.stat().st_size}\n"

    listed = s.get(f"{url}/v1/fs/persist/list", params={"namespace": "data", "user": "analyst"})
    assert listed.status_code == 200
    files = {f["path"]: f for f in listed.json()["files"]}
    assert set(files) == {"results.csv", "runs/1/blob.bin"}
    assert files["runs/1/blob.bin"]["name"] == "blob.bin"
    assert files["results.csv"]["size"] == 8 and files["results.csv"]["modified"] > 0
    assert listed.json()["total"] == 2
    assert listed.json()["total_size"] == 8 + blob.stat().st_size

    back = tmp_path / "back.bin"
    got = download_persist(s, url, "runs/1/blob.bin", back)
    assert got.status_code == 200 and back.read_bytes() == blob.read_bytes()
    missing = download_persist(s, url, "nope.csv", tmp_path / "x")
    assert missing.status_code == 404 and "nope.csv" in missing.json()["detail"]
    folder = download_persist(s, url, "runs/1", tmp_path / "x")
    assert folder.status_code == 400 and "directory" in folder.json()["detail"]
    s.delete(f"{url}/v1/sessions/{sid}", timeout=60)
    gone = s.get(f"{url}/v1/fs/persist/list", params={"namespace": "data", "user": "analyst"})
    assert gone.status_code == 404 and "running session" in gone.json()["detail"]


def test_persistent_storage_stays_in_the_callers_session(embedded: Server, tmp_path: Path) -> None:
    """sdk/python/client.py @3952b06's persistent-storage calls with hostile paths: `..`,
    absolute paths and symbolic links the workspace planted (to /etc, to /, `persist` itself
    made a link) are refused, never followed; nothing is written or read outside ~/persist.
    Another user's session of the same namespace and user is never the one used."""
    s, url = sdk_session(embedded), embedded.url
    spec = {"template": "shell", "namespace": "data", "user": "analyst"}
    sid = s.post(f"{url}/v1/sessions", json=spec, timeout=120).json()["id"]
    src = tmp_path / "evil.txt"
    src.write_text("evil\n")
    for dst in ("../evil.txt", "../../../../etc/evil.txt", "/etc/evil.txt", "a/../../evil.txt",
                "dir/", "bad\nname"):  # fmt: skip
        r = upload_persist(s, url, src, dst=dst)
        assert r.status_code == 400, (dst, r.text)
    for path in ("../.bashrc", "/etc/passwd", "x/../../.profile"):
        r = download_persist(s, url, path, tmp_path / "x")
        assert r.status_code == 400, (path, r.text)

    plant = ("mkdir -p persist/sub && ln -s /etc persist/etc && ln -s / persist/root && "
             "ln -s /etc/hostname persist/sub/host && ln -s .. persist/up && echo ok")  # fmt: skip
    assert s.post(f"{url}/v1/sessions/{sid}/execute", json={"command": plant}).json()[
        "stdout"] == "ok\n"  # fmt: skip
    for dst in ("etc/evil.txt", "root/tmp/evil.txt", "sub/host", "up/evil.txt"):
        r = upload_persist(s, url, src, dst=dst)
        assert r.status_code == 400 and "symbolic link" in r.json()["detail"], (dst, r.text)
    for path in ("etc/hostname", "root/etc/passwd", "sub/host", "up/.bashrc"):
        r = download_persist(s, url, path, tmp_path / "x")
        assert r.status_code == 400 and "symbolic link" in r.json()["detail"], (path, r.text)
    listed = s.get(f"{url}/v1/fs/persist/list", params={"namespace": "data", "user": "analyst"})
    assert listed.json()["files"] == []  # links are neither listed nor followed
    check = "ls /etc/evil.txt /tmp/evil.txt ~/evil.txt 2>&1 | grep -c 'No such file'"
    assert s.post(f"{url}/v1/sessions/{sid}/execute", json={"command": check}).json()[
        "stdout"] == "3\n"  # fmt: skip

    # `persist` itself a link (to the home's parent): refused too.
    relink = "rm -rf persist && ln -s / persist && echo ok"
    s.post(f"{url}/v1/sessions/{sid}/execute", json={"command": relink})
    r = upload_persist(s, url, src, dst="evil.txt")
    assert r.status_code == 400 and "symbolic link" in r.json()["detail"]
    r = s.get(f"{url}/v1/fs/persist/list", params={"namespace": "data", "user": "analyst"})
    assert r.status_code == 400 and "symbolic link" in r.json()["detail"]
    assert not any(p.name == "evil.txt" for p in embedded.home.rglob("evil.txt"))

    # Bob has a session of the same namespace and user: his calls reach his, never this one.
    bob = sdk_session(embedded, user_key(embedded, "bob"))
    assert upload_persist(bob, url, src, dst="mine.txt").status_code == 404
    bob_sid = bob.post(f"{url}/v1/sessions", json=spec, timeout=120).json()["id"]
    up = upload_persist(bob, url, src, dst="mine.txt")
    assert up.status_code == 200 and up.json()["session_id"] == bob_sid
    theirs = {"namespace": "data", "user": "analyst", "session_id": sid}
    assert bob.get(f"{url}/v1/fs/persist/list", params=theirs).status_code == 404


# -- sdk/python/session_client.py (SessionClient, WebSocketSession) ----------------------------


def test_session_client_cloud_run_flow(embedded: Server) -> None:
    """sdk/python/session_client.py @3952b06: the Cloud Run workspace calls SessionClient
    makes (create, get through the unified API, execute, execute_python, list, delete; its
    OnMemOSClient helpers are those server/api/cloudrun.py serves: fields in the query
    string) and the fields it reads, `service_url` among them."""
    s, url = sdk_session(embedded), embedded.url
    body = {"template": "python", "namespace": "advanced", "user": "developer",
            "ttl_minutes": 180, "storage_options": {}}  # fmt: skip
    created = s.post(f"{url}/v1/cloudrun/workspaces", json=body, timeout=120)
    assert created.status_code == 201, created.text
    ws = created.json()
    wid = ws["id"]
    assert (ws["namespace"], ws["user"], ws["status"]) == ("advanced", "developer", "running")
    assert ws["ttl_minutes"] == 180 and datetime.fromisoformat(ws["created_at"])
    # The URL is one a client can use: this API's own, for that workspace.
    assert ws["service_url"].startswith(url)
    assert s.get(ws["service_url"]).json()["id"] == wid
    assert "bucket_name" in ws and "workdir" not in ws["details"]

    got = s.get(f"{url}/v1/sessions/{wid}").json()  # get_session: the unified API first
    assert got["provider"] == "local" and got["id"] == wid
    assert (got["namespace"], got["user"], got["status"]) == ("advanced", "developer", "running")
    assert got["url"].startswith(url) and got["websocket"].endswith(f"/{wid}/shell")
    assert isinstance(got["details"], dict)
    legacy = s.get(f"{url}/v1/cloudrun/workspaces/{wid}").json()
    assert legacy["service_url"] == ws["service_url"] and legacy["status"] == "running"

    ran = s.post(f"{url}/v1/cloudrun/workspaces/{wid}/execute",
                 params={"command": "echo 'Hello from Cloud Run!'", "timeout": 60})  # fmt: skip
    out = ran.json()
    assert (out["success"], out["stdout"], out["stderr"], out["returncode"]) == (
        True, "Hello from Cloud Run!\n", "", 0)  # fmt: skip
    assert out["workspace_id"] == wid
    code = "import os\nimport sys\nprint(f'{sys.version_info[0]}:{os.getcwd()}')\n"
    py = s.post(f"{url}/v1/cloudrun/workspaces/{wid}/runpython", params={"code": code}).json()
    assert py["success"] is True and py["stdout"] == "3:/home/tether\n"

    listed = s.get(f"{url}/v1/cloudrun/workspaces",
                   params={"namespace": "advanced", "user": "developer"}).json()  # fmt: skip
    (item,) = listed["workspaces"]
    assert (item["id"], item["status"]) == (wid, "running")
    assert item["service_url"] == ws["service_url"]

    deleted = s.delete(f"{url}/v1/cloudrun/workspaces/{wid}")
    assert deleted.status_code == 200 and deleted.json()["status"] == "terminated"
    gone = s.post(f"{url}/v1/cloudrun/workspaces/{wid}/execute", params={"command": "true"})
    assert gone.status_code == 409 and "terminated" in gone.json()["detail"]


def test_websocket_session_commands(embedded: Server) -> None:
    """sdk/python/session_client.py @3952b06: _connect_cloudrun_websocket opens the legacy
    shell with the key in `api_key`; WebSocketSession.send_command sends a command and reads
    the next message as its answer; send_slash_command gets a JSON answer too; a wrong key
    is refused before the upgrade."""
    s = sdk_session(embedded)
    body = {"template": "shell", "namespace": "interactive", "user": "user"}
    created = s.post(f"{embedded.url}/v1/cloudrun/workspaces", json=body)
    wid = created.json()["id"]
    shell = f"{ws_base(embedded)}/v1/cloudrun/workspaces/{wid}/shell"

    async def session() -> list[dict[str, Any]]:
        answers = []
        async with websockets.connect(f"{shell}?api_key={embedded.key}") as ws:
            for message in (
                {"type": "command", "command": "echo 'Interactive session!'"},
                {"type": "slash_command", "command": "/help"},
                {"type": "command", "command": "exit 3"},
            ):
                await ws.send(json.dumps(message))
                answers.append(json.loads(await ws.recv()))
        return answers

    echoed, slash, failed = asyncio.run(session())
    assert echoed["type"] == "command_result" and echoed["success"] is True
    assert echoed["stdout"] == "Interactive session!\n"
    assert slash["type"] == "error" and slash["detail"]
    assert (failed["success"], failed["returncode"]) == (False, 3)

    async def refused() -> int:
        with pytest.raises(websockets.InvalidStatus) as info:
            async with websockets.connect(f"{shell}?api_key={MISSING}"):
                pass
        return info.value.response.status_code

    assert asyncio.run(refused()) == 401
    s.delete(f"{embedded.url}/v1/cloudrun/workspaces/{wid}")


# -- starbase_local/starbase (Starbase: shuttles, missions) ------------------------------------


def starbase(server: Server, method: str, path: str, *, key: str | None = None,
             params: dict[str, str] | None = None, body: dict[str, Any] | None = None,
             ) -> requests.Response:  # fmt: skip
    """HttpClient.request: requests.request with its headers, `params`, and the body as
    `data=json.dumps(...)` (none at all when there is no body)."""
    headers = {"Content-Type": "application/json", "User-Agent": "starbase/0.1",
               "X-API-Key": key or server.key}  # fmt: skip
    data = None if body is None else json.dumps(body)
    return requests.request(method, f"{server.url}{path}", headers=headers, params=params,
                            data=data, timeout=(5, 60))  # fmt: skip


def shuttle(res: dict[str, Any]) -> dict[str, Any]:
    """The fields Shuttles.launch/get/list read (`res.get("session") or res`)."""
    data = res.get("session") or res
    return {
        "id": data.get("id") or data.get("session_id"),
        "dock_id": data.get("workspace_id"),
        "provider": (data.get("provider") or "").lower(),
        "status": data.get("status") or data.get("state") or "unknown",
        "launchpad": data.get("k8s_namespace") or (data.get("details") or {}).get("k8s_ns"),
        "created_at": data.get("created_at"),
    }


def test_starbase_shuttle_flow(embedded: Server) -> None:
    """starbase_local/starbase/shuttles.py @3952b06 (and sdk_e2e.py's wait for "running"):
    launch with its defaults (provider "gke", which the local stack's agent serves: it has no
    GKE agent, TETHER_LOCAL_STANDS_IN), get, list, execute (fields in the query string, no
    body), ws_token and a shell opened with it at /v1/gke/shell (sdk_e2e.py), terminate."""
    dock = str(uuid.uuid4())  # a dock (OnMemOS workspace) id, as the admin API makes them
    launch = {"workspace_id": dock, "provider": "gke", "template": "python",
              "template_id": "dev-python", "namespace": dock, "ttl_minutes": 60,
              "env": {}}  # fmt: skip
    r = starbase(embedded, "POST", "/v1/sessions", body=launch)
    assert r.status_code // 100 == 2, r.text
    launched = shuttle(r.json())
    sid = launched["id"]
    assert launched["dock_id"] == dock and launched["provider"] == "local"
    assert launched["status"] == "running" and launched["created_at"]
    assert r.json()["details"]["stand_in_for"] == "gke"  # where it runs, told as it is
    # The other provider launch offers, "cloud_run", is served the same way.
    other = starbase(embedded, "POST", "/v1/sessions", body={**launch, "provider": "cloud_run"})
    assert other.status_code == 201 and other.json()["details"]["stand_in_for"] == "cloud_run"
    starbase(embedded, "DELETE", f"/v1/sessions/{other.json()['id']}")

    assert shuttle(starbase(embedded, "GET", f"/v1/sessions/{sid}").json())["status"] == "running"
    items = starbase(embedded, "GET", "/v1/sessions").json().get("sessions") or []
    assert sid in {shuttle(x)["id"] for x in items}

    params = {"command": "echo out; echo err >&2", "timeout": "120", "async_execution": "false"}
    res = starbase(embedded, "POST", f"/v1/sessions/{sid}/execute", params=params)
    assert res.status_code == 200, res.text
    out = res.json()
    assert (out.get("stdout"), out.get("stderr"), int(out.get("returncode") or 0)) == (
        "out\n", "err\n", 0)  # fmt: skip

    token = starbase(embedded, "POST", f"/v1/sessions/{sid}/ws-token").json()
    assert token.get("token") and int(token.get("expires_in") or 0) > 0
    # sdk_e2e.py opens it at the GKE shell path, naming the pod (a local session has none).
    pod = "k8s_ns=onmemos&pod=ws-pod"
    url = f"{ws_base(embedded)}/v1/gke/shell/{sid}?{pod}&token={token['token']}"
    conn = websocket.create_connection(url, timeout=30)
    try:
        conn.send(json.dumps({"type": "command", "command": "echo ticket"}))
        answer = json.loads(conn.recv())
    finally:
        conn.close()
    assert answer["type"] == "command_result" and answer["stdout"] == "ticket\n"
    with pytest.raises(websocket.WebSocketBadStatusException) as used:
        websocket.create_connection(url, timeout=30)  # a ticket is good for one use
    assert used.value.status_code == 401

    assert starbase(embedded, "DELETE", f"/v1/sessions/{sid}").status_code == 200
    assert shuttle(starbase(embedded, "GET", f"/v1/sessions/{sid}").json())["status"] == (
        "terminated"
    )


def test_starbase_errors(embedded: Server, tmp_path: Path) -> None:
    """starbase_local/starbase/shuttles.py, missions.py and http.py @3952b06: the statuses
    HttpClient maps (401 AuthError, 404 NotFoundError, 400 ValidationError, 503 retried then
    raised), each with an OnMemOS error body naming what was wrong: the default provider
    "gke" where no agent serves it (a stack whose local agent stands in for nothing, as a
    deployment's), a bad execute timeout."""
    launch = {"workspace_id": "dock-1", "provider": "gke", "template": "python",
              "template_id": "dev-python", "namespace": "dock-1", "ttl_minutes": 60,
              "env": {}}  # fmt: skip
    alone = start_server(tmp_path / "alone", {"TETHER_LOCAL_STANDS_IN": "none"})
    try:
        r = starbase(alone, "POST", "/v1/sessions", body=launch)
    finally:
        alone.stop()
    assert r.status_code == 503
    assert sans_id(r.json()) == {"detail": "No online agents available for provider 'gke'"}
    assert starbase(embedded, "GET", "/v1/sessions", key=MISSING).status_code == 401
    missing = starbase(embedded, "GET", "/v1/sessions/ws-nope")
    assert missing.status_code == 404 and sans_id(missing.json()) == {"detail": "Session not found"}

    r = starbase(embedded, "POST", "/v1/sessions", body=launch)
    sid = r.json()["id"]
    bad = {"command": "true", "timeout": "soon", "async_execution": "false"}
    r = starbase(embedded, "POST", f"/v1/sessions/{sid}/execute", params=bad)
    assert r.status_code == 400 and "timeout" in r.json()["detail"]
    starbase(embedded, "DELETE", f"/v1/sessions/{sid}")


def test_starbase_missions(embedded: Server) -> None:
    """starbase_local/starbase/missions.py @3952b06: submit is an execute with
    `async_execution=true` in the query string, reading `job_id` (or `id`) and `job_name`;
    status polls /jobs/{id}/status?job_name= and reads status, stdout, stderr, returncode.
    Another session's job, or an id never given, is not found."""
    launch = {"workspace_id": "dock-m", "provider": "gke", "template": "python"}
    sid = starbase(embedded, "POST", "/v1/sessions", body=launch).json()["id"]
    mission = {"command": "sleep 1; echo done; echo warn >&2; exit 3",
               "async_execution": "true", "timeout": "120"}  # fmt: skip
    r = starbase(embedded, "POST", f"/v1/sessions/{sid}/execute", params=mission)
    assert r.status_code == 200, r.text
    job_id, job_name = r.json().get("job_id") or r.json().get("id"), r.json().get("job_name")
    assert job_id and job_name and r.json()["status"] in ("submitted", "running")
    status = f"/v1/sessions/{sid}/jobs/{job_id}/status"

    def ended() -> dict[str, Any] | None:
        res = starbase(embedded, "GET", status, params={"job_name": job_name}).json()
        return res if res["status"] in ("completed", "failed") else None

    assert wait_for(ended, timeout=60, step=0.2)
    res = ended()
    assert res is not None
    assert (res["status"], res["stdout"], res["stderr"], res["returncode"]) == (
        "failed", "done\n", "warn\n", 3)  # fmt: skip
    other = starbase(embedded, "POST", "/v1/sessions", body=launch).json()["id"]
    jobs = f"/v1/sessions/{sid}/jobs"
    for path in (f"/v1/sessions/{other}/jobs/{job_id}/status", f"{jobs}/cmd-{'0' * 32}/status",
                 f"{jobs}/%2E%2E/status", f"{jobs}/x/status"):  # fmt: skip
        missing = starbase(embedded, "GET", path, params={"job_name": "j"})
        assert missing.status_code == 404 and "detail" in missing.json(), path
    for s in (sid, other):
        starbase(embedded, "DELETE", f"/v1/sessions/{s}")


def test_starbase_vaults_and_drives(embedded: Server) -> None:
    """starbase_local/starbase/vaults.py and drives.py @3952b06 (with http.py's error
    mapping): Tether keeps no reusable vaults or drives, each session having its own storage.
    list answers none; create_vault and create_drive are a 501 naming that (ServerError);
    set_default, update_flags and delete name a resource that is not there (404,
    NotFoundError); a launch naming a vault or drive (shuttles.py) is a 404 too. Every error
    is OnMemOS's `{"detail": ...}`."""
    dock = str(uuid.uuid4())
    for kind, path, mount in (("vault", "buckets", "/workspace"), ("drive", "filestores", "/data")):
        body = {"workspace_id": dock, "name": f"my-{kind}", "size_gb": 10, "auto_mount": True,
                "mount_path": mount, "access_mode": "RW"}  # fmt: skip
        made = starbase(embedded, "POST", f"/v1/storage/{path}", body=body)
        assert made.status_code == 501, made.text
        assert "not supported" in made.json()["detail"] and "vault" in made.json()["detail"]
        bad = starbase(embedded, "POST", f"/v1/storage/{path}", body={**body, "size_gb": "big"})
        assert bad.status_code == 400 and "size_gb" in bad.json()["detail"]

        listed = starbase(embedded, "GET", "/v1/storage", params={"workspace_id": dock})
        assert listed.status_code == 200
        assert listed.json() == {"workspace_id": dock, "resources": [],
                                 "defaults": {"bucket_id": None, "filestore_id": None}}  # fmt: skip

        field = "bucket_id" if kind == "vault" else "filestore_id"
        default = starbase(embedded, "POST", f"/v1/storage/workspaces/{dock}/defaults",
                           body={field: "res-1"})  # fmt: skip
        assert default.status_code == 404 and "res-1" in default.json()["detail"]
        flags = {"is_default": True, "auto_mount": False, "mount_path": mount, "access_mode": "RO"}
        for method, sent in (("PATCH", flags), ("PATCH", {}), ("DELETE", None)):
            r = starbase(embedded, method, "/v1/storage/res-1", body=sent)
            assert r.status_code == 404 and "res-1" in r.json()["detail"], (method, r.text)

        launch = {"workspace_id": dock, "provider": "gke", "template": "python",
                  "template_id": "dev-python", "namespace": dock, "ttl_minutes": 60, "env": {},
                  f"{kind}_id": "res-1", f"{kind}_name": None}  # fmt: skip
        refused = starbase(embedded, "POST", "/v1/sessions", body=launch)
        assert refused.status_code == 404 and f"{kind.title()} not found" in refused.json()[
            "detail"]  # fmt: skip
    unset = starbase(embedded, "POST", f"/v1/storage/workspaces/{dock}/defaults", body={})
    none = {"bucket_id": None, "filestore_id": None}
    assert unset.status_code == 200 and unset.json()["defaults"] == none
    assert starbase(embedded, "GET", "/v1/storage", params={"workspace_id": dock},
                    key=MISSING).status_code == 401  # fmt: skip
    # use_vault / use_drive: every session has storage of its own, so the launch works.
    launch = {"workspace_id": dock, "provider": "gke", "template": "python",
              "template_id": "dev-python", "namespace": dock, "ttl_minutes": 60, "env": {},
              "request_bucket": True, "bucket_size_gb": 5, "request_persistent_storage": True,
              "persistent_storage_size_gb": 5}  # fmt: skip
    launched = starbase(embedded, "POST", "/v1/sessions", body=launch)
    assert launched.status_code == 201, launched.text
    starbase(embedded, "DELETE", f"/v1/sessions/{launched.json()['id']}")


# -- onmemos-sdk/src/onmemos (OnMemOSClient: sessions, shell) ----------------------------------

# What the onmemos-sdk's Session and SessionList models require of an answer.
SESSION_REQUIRED = {"id": str, "provider": str, "namespace": str, "user": str,
                    "workspace_id": str, "status": str}  # fmt: skip
SESSION_LIST_REQUIRED = {"sessions": list, "total": int, "page": int, "per_page": int,
                         "has_next": bool, "has_prev": bool}  # fmt: skip


def has(answer: dict[str, Any], required: dict[str, type]) -> bool:
    return all(isinstance(answer.get(k), t) for k, t in required.items())


def test_onmemos_sdk_flow(embedded: Server) -> None:
    """onmemos-sdk/src/onmemos @3952b06 (core/http.py, core/auth.py, services/sessions.py,
    services/shell.py, models/sessions.py): aiohttp with X-API-Key and the same key as a
    Bearer token; create_session's full body, wait_for_ready, get, list (limit/offset),
    shell execute and status, logs, pause and resume, delete, health, and the errors its
    HTTPClient turns into HTTPError (JSON `detail`)."""

    async def flow() -> None:
        headers = {"User-Agent": "onmemos-sdk/0.1.0", "Accept": "application/json"}
        auth = {"X-API-Key": embedded.key, "Authorization": f"Bearer {embedded.key}",
                "Content-Type": "application/json", "Accept": "application/json"}  # fmt: skip
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as http:

            async def call(method: str, path: str, **kw: Any) -> tuple[int, Any]:
                kw["headers"] = {**auth, **kw.get("headers", {})}
                async with http.request(method, embedded.url + path, **kw) as r:
                    return r.status, await r.json()

            status, health = await call("GET", "/health")
            assert status == 200 and health["status"] == "healthy"  # test_connection

            body = {  # CreateSessionRequest.model_dump(exclude_none=True), its defaults
                "template": "python", "namespace": "sdk-demo", "user": "sdk-test-user",
                "workspace_id": "5e3f6ebb-6656-4301-be47-5436646ba44e", "provider": "auto",
                "resource_tier": "medium", "storage_type": "ephemeral", "storage_size_gb": 0,
                "gpu_type": "none", "image_type": "alpine_basic", "ttl_minutes": 60,
                "env_vars": {}, "labels": {}, "long_lived": False, "needs_ssh": False,
                "request_bucket": False, "request_persistent_storage": False,
            }  # fmt: skip
            status, session = await call("POST", "/v1/sessions", json=body)
            assert status == 201 and has(session, SESSION_REQUIRED), session
            sid = session["id"]
            assert session["workspace_id"] == body["workspace_id"]
            assert datetime.fromisoformat(session["created_at"])
            assert session["status"] in ("running", "ready")  # wait_for_ready's goal

            status, got = await call("GET", f"/v1/sessions/{sid}")
            assert status == 200 and has(got, SESSION_REQUIRED) and got["status"] == "running"

            status, page = await call("GET", "/v1/sessions", params={"limit": 10, "offset": 0})
            assert status == 200 and has(page, SESSION_LIST_REQUIRED), page
            assert all(has(s, SESSION_REQUIRED) for s in page["sessions"])
            assert sid in {s["id"] for s in page["sessions"]} and page["page"] == 1

            status, ran = await call("POST", f"/v1/sessions/{sid}/shell/execute",
                                     json={"command": "echo shell", "timeout": 30})  # fmt: skip
            assert status == 200 and ran["stdout"] == "shell\n" and ran["success"] is True
            status, shell = await call("GET", f"/v1/sessions/{sid}/shell/status")
            assert status == 200 and shell["websocket"].endswith(f"/v1/sessions/{sid}/shell")
            # get_connection_info: a plain GET on the shell's WebSocket path (no Upgrade).
            status, info = await call("GET", f"/v1/sessions/{sid}/shell")
            assert status == 200 and info == shell, info
            status, info = await call("GET", f"/v1/cloudrun/workspaces/{sid}/shell")
            assert status == 200 and info["session_id"] == sid and info["status"] == "running"
            status, error = await call("GET", "/v1/sessions/ws-nope/shell")
            assert status == 404 and sans_id(error) == {"detail": "Session not found"}
            ws_url = embedded.url.replace("http", "ws", 1) + f"/v1/sessions/{sid}/shell"
            async with http.ws_connect(ws_url, headers=auth) as ws:  # the same path's WebSocket
                await ws.send_json({"type": "command", "command": "echo still-a-shell"})
                answer = await ws.receive_json(timeout=30)
            assert answer["type"] == "command_result" and answer["stdout"] == "still-a-shell\n"

            status, logs = await call("GET", f"/v1/sessions/{sid}/logs",
                                      params={"type": "stdout", "lines": 100})  # fmt: skip
            assert status == 200 and logs["session_id"] == sid and logs["log_type"] == "stdout"
            assert isinstance(logs["logs"], list) and logs["total_lines"] == len(logs["logs"])
            assert isinstance(logs["has_more"], bool) and datetime.fromisoformat(logs["timestamp"])

            status, paused = await call("POST", f"/v1/sessions/{sid}/pause")
            assert status == 200 and has(paused, SESSION_REQUIRED), paused
            assert paused["status"] == "hibernated"
            status, resumed = await call("POST", f"/v1/sessions/{sid}/resume")
            assert status == 200 and resumed["status"] == "running"
            status, ran = await call("POST", f"/v1/sessions/{sid}/shell/execute",
                                     json={"command": "echo back", "timeout": 30})  # fmt: skip
            assert ran["stdout"] == "back\n"

            status, _ = await call("DELETE", f"/v1/sessions/{sid}", timeout=60)
            assert status == 200
            status, error = await call("GET", "/v1/sessions/ws-nope")
            assert status == 404 and sans_id(error) == {"detail": "Session not found"}
            status, error = await call("GET", "/v1/sessions", params={"limit": 0})
            assert status == 400 and "limit" in error["detail"]
            wrong = {"X-API-Key": MISSING, "Authorization": f"Bearer {MISSING}"}
            status, _ = await call("GET", "/v1/sessions", headers=wrong)
            assert status == 401

    asyncio.run(flow())


def sdk_auth(server: Server) -> dict[str, str]:
    """The headers onmemos-sdk's AuthManager adds to each request (core/auth.py)."""
    return {"X-API-Key": server.key, "Authorization": f"Bearer {server.key}",
            "Content-Type": "application/json", "Accept": "application/json"}  # fmt: skip


async def sdk_call(http: aiohttp.ClientSession, server: Server, method: str, path: str,
                   **kw: Any) -> tuple[int, Any]:  # fmt: skip
    """HTTPClient._make_request: the auth headers merged with any given, the answer as JSON."""
    kw["headers"] = {**sdk_auth(server), **kw.get("headers", {})}
    async with http.request(method, server.url + path, **kw) as r:
        return r.status, await r.json()


def sdk_http() -> aiohttp.ClientSession:
    """HTTPClient.__aenter__'s session."""
    return aiohttp.ClientSession(
        headers={"User-Agent": "onmemos-sdk/0.1.0", "Accept": "application/json"},
        timeout=aiohttp.ClientTimeout(total=60),
    )


# What onmemos-sdk's SessionMetrics requires, and the enums its SessionTemplate checks.
METRICS_REQUIRED = {"session_id": str, "cpu_usage_percent": (int, float),
                    "memory_usage_mb": int, "memory_limit_mb": int,
                    "disk_usage_gb": (int, float), "network_rx_mb": (int, float),
                    "network_tx_mb": (int, float), "timestamp": str}  # fmt: skip
TEMPLATE_CATEGORIES = {"development", "data_science", "web_development", "machine_learning",
                       "testing", "custom"}  # fmt: skip
USER_TYPES = {"free", "pro", "enterprise", "admin"}
IMAGE_TYPES = {"alpine_basic", "python_basic", "ubuntu_pro", "python_pro", "nodejs_pro",
               "go_pro", "rust_pro", "python_enterprise", "jupyter_enterprise",
               "cuda_enterprise", "java_enterprise", "custom"}  # fmt: skip
STORAGE_TYPES = {"ephemeral", "gcs_fuse", "persistent_volume"}


def is_sdk_template(t: dict[str, Any]) -> bool:
    """Whether onmemos-sdk's SessionTemplate takes `t`: its required fields, and its enums."""
    return (
        all(isinstance(t.get(k), str) for k in ("template_id", "name", "description"))
        and t["category"] in TEMPLATE_CATEGORIES
        and set(t.get("user_types", ["free"])) <= USER_TYPES
        and t.get("image_type", "alpine_basic") in IMAGE_TYPES
        and t.get("storage_type", "ephemeral") in STORAGE_TYPES
    )


def test_onmemos_sdk_update_metrics_and_what_is_unsupported(embedded: Server) -> None:
    """onmemos-sdk/src/onmemos @3952b06, services/sessions.py and services/storage.py (models
    in models/sessions.py): update_session (PATCH with SessionUpdateRequest's fields, none
    unset), get_session_metrics (SessionMetrics' fields, measured in the workspace),
    scale_session and unmount_storage (501 naming what Tether does not do, which the SDK's
    HTTPClient raises as ServerError), and the 404 and 409 it raises as HTTPError."""

    async def flow() -> None:
        async with sdk_http() as http:
            body = {"template": "python", "namespace": "sdk-demo", "user": "sdk-test-user",
                    "workspace_id": "5e3f6ebb-6656-4301-be47-5436646ba44e", "provider": "auto",
                    "resource_tier": "medium", "ttl_minutes": 60, "env_vars": {},
                    "labels": {"team": "ml"}, "long_lived": False}  # fmt: skip
            status, session = await sdk_call(http, embedded, "POST", "/v1/sessions", json=body)
            assert status == 201 and session["labels"] == {"team": "ml"}, session
            sid = session["id"]

            update = {"ttl_minutes": 120, "labels": {"team": "data", "stage": "dev"}}
            status, updated = await sdk_call(http, embedded, "PATCH", f"/v1/sessions/{sid}",
                                             json=update)  # fmt: skip
            assert status == 200 and has(updated, SESSION_REQUIRED), updated
            assert updated["ttl_minutes"] == 120 and updated["status"] == "running"
            assert updated["labels"] == {"team": "data", "stage": "dev"}
            made = datetime.fromisoformat(updated["created_at"])
            assert (datetime.fromisoformat(updated["expires_at"]) - made).total_seconds() == 7200
            assert updated["workspace_id"] == body["workspace_id"]  # other tags kept
            status, error = await sdk_call(http, embedded, "PATCH", f"/v1/sessions/{sid}",
                                           json={"ttl_minutes": 0})  # fmt: skip
            assert status == 400 and "ttl_minutes" in error["detail"]
            status, error = await sdk_call(http, embedded, "PATCH", f"/v1/sessions/{sid}",
                                           json={"env_vars": {"MODE": "dev"}})  # fmt: skip
            assert status == 501 and "environment is not supported" in error["detail"]

            status, metrics = await sdk_call(http, embedded, "GET", f"/v1/sessions/{sid}/metrics")
            assert status == 200 and has(metrics, METRICS_REQUIRED), metrics
            assert metrics["session_id"] == sid and metrics["memory_limit_mb"] == 1024
            assert 0 < metrics["memory_usage_mb"] < 1024 and metrics["cpu_usage_percent"] >= 0
            assert metrics["gpu_usage_percent"] is None and metrics["disk_usage_gb"] >= 0
            assert datetime.fromisoformat(metrics["timestamp"])

            status, error = await sdk_call(http, embedded, "PATCH", f"/v1/sessions/{sid}/scale",
                                           json={"resource_tier": "large"})  # fmt: skip
            assert status == 501 and "Scaling a running session" in error["detail"]
            status, error = await sdk_call(http, embedded, "DELETE",
                                           f"/v1/sessions/{sid}/storage/mounts",
                                           json={"mount_path": "/workspace"})  # fmt: skip
            assert status == 501 and "unmounting storage" in error["detail"]

            for method, path, sent in (
                ("PATCH", "/v1/sessions/ws-nope", {"ttl_minutes": 30}),
                ("GET", "/v1/sessions/ws-nope/metrics", None),
                ("PATCH", "/v1/sessions/ws-nope/scale", {"resource_tier": "large"}),
                ("DELETE", "/v1/sessions/ws-nope/storage/mounts", {"mount_path": "/x"}),
            ):
                status, error = await sdk_call(http, embedded, method, path, json=sent)
                assert status == 404 and sans_id(error) == {"detail": "Session not found"}, path

            await sdk_call(http, embedded, "DELETE", f"/v1/sessions/{sid}", timeout=60)
            status, error = await sdk_call(http, embedded, "GET", f"/v1/sessions/{sid}/metrics")
            assert status == 409 and "terminated" in error["detail"]
            status, error = await sdk_call(http, embedded, "PATCH", f"/v1/sessions/{sid}",
                                           json={"ttl_minutes": 30})  # fmt: skip
            assert status == 409 and "terminated" in error["detail"]

    asyncio.run(flow())


def test_onmemos_sdk_templates(embedded: Server) -> None:
    """onmemos-sdk/src/onmemos @3952b06, services/templates.py (models/templates.py):
    list_templates (limit, category, user_type, tags, popular), get_template,
    get_popular_templates, search_templates, get_template_categories, get_template_by_name,
    get_templates_by_category and by tags, get_template_usage_stats and
    validate_template_config, with the fields and enums its models read."""

    async def flow() -> None:
        async with sdk_http() as http:

            async def get(path: str, **params: Any) -> tuple[int, Any]:
                return await sdk_call(http, embedded, "GET", path, params=params)

            status, listed = await get("/v1/templates", limit=10)
            assert status == 200 and isinstance(listed["total"], int)
            assert all(is_sdk_template(t) for t in listed["templates"]), listed
            ids = {t["template_id"] for t in listed["templates"]}
            assert {"python", "shell", "firefox-browser"} <= ids
            status, dev = await get("/v1/templates", limit=100, category="development")
            assert {t["template_id"] for t in dev["templates"]} == {"python", "shell"}
            status, tagged = await get("/v1/templates", limit=100, tags="browser,gpu")
            assert [t["template_id"] for t in tagged["templates"]] == ["firefox-browser"]
            status, mine = await get("/v1/templates", limit=10, user_type="pro")
            assert status == 200 and mine["total"] == listed["total"]
            status, error = await get("/v1/templates", limit=10, user_type="vip")
            assert status == 400 and "user_type" in error["detail"]
            status, popular = await get("/v1/templates", popular="true", limit=2)
            assert status == 200 and len(popular["templates"]) == 2

            status, python = await get("/v1/templates/python")
            assert status == 200 and is_sdk_template(python) and python["name"] == "Python"
            assert python["category"] == "development" and python["image"] == "python:3.11-slim"
            status, error = await get("/v1/templates/cobol")
            assert status == 404 and "cobol" in error["detail"]
            # get_template_by_name: a list of 100, matched by name without case
            status, every = await get("/v1/templates", limit=100)
            assert [t for t in every["templates"] if t["name"].lower() == "python"] == [python]

            status, found = await get("/v1/templates/search", q="browser", limit=10)
            assert [t["template_id"] for t in found["templates"]] == ["firefox-browser"]
            status, found = await get("/v1/templates/search", q="python", category="testing",
                                      limit=10)  # fmt: skip
            assert status == 200 and found["templates"] == []
            status, categories = await get("/v1/templates/categories")
            assert status == 200 and isinstance(categories.get("categories"), list)
            counts = {c["id"]: c["template_count"] for c in categories["categories"]}
            assert set(counts) == TEMPLATE_CATEGORIES and counts["development"] == 2

            status, stats = await get("/v1/templates/python/stats")
            assert status == 200 and stats["template_id"] == "python"
            assert isinstance(stats["total_usage"], int)
            status, checked = await sdk_call(http, embedded, "POST",
                                             "/v1/templates/python/validate",
                                             json={"ttl_minutes": 30, "resource_tier": "large",
                                                   "namespace": "x"})  # fmt: skip
            assert status == 200 and checked["is_valid"] is True and checked["errors"] == []
            assert any("resource_tier" in w for w in checked["warnings"])
            status, checked = await sdk_call(http, embedded, "POST",
                                             "/v1/templates/python/validate",
                                             json={"ttl_minutes": 0})  # fmt: skip
            assert status == 200 and checked["is_valid"] is False
            assert any("ttl_minutes" in e for e in checked["errors"])

    asyncio.run(flow())


def test_onmemos_sdk_info_and_cost_estimation(embedded: Server) -> None:
    """onmemos-sdk/src/onmemos @3952b06: get_api_info (`GET /info`), and
    services/cost_estimation.py's calls, each a 501 saying Tether does not price sessions
    (the SDK raises CostEstimationError)."""

    async def flow() -> None:
        async with sdk_http() as http:
            status, info = await sdk_call(http, embedded, "GET", "/info")
            assert status == 200 and info["status"] == "running" and info["service"]
            calls: list[tuple[str, str, dict[str, Any]]] = [
                ("GET", "/v1/cost-estimation/template/python",
                 {"params": {"duration_hours": 1.0}}),
                ("POST", "/v1/cost-estimation/estimate",
                 {"json": {"duration_hours": 1.0, "storage_size_gb": 0, "gpu_type": "none",
                           "template_id": "python", "resource_tier": "medium"}}),
                ("POST", "/v1/cost-estimation/compare",
                 {"json": {"configurations": [{"resource_tier": "small"}],
                           "duration_hours": 1.0}}),
                ("GET", "/v1/cost-estimation/rates", {}),
                ("GET", "/v1/cost-estimation/calculator",
                 {"params": {"resource_tier": "small", "storage_type": "ephemeral",
                             "storage_size_gb": 0, "gpu_type": "none", "duration_hours": 2.0}}),
            ]  # fmt: skip
            for method, path, kw in calls:
                status, error = await sdk_call(http, embedded, method, path, **kw)
                assert status == 501, (path, error)
                assert error["detail"].startswith("Cost estimation is not supported"), path
            wrong = {"X-API-Key": MISSING, "Authorization": f"Bearer {MISSING}"}
            status, _ = await sdk_call(http, embedded, "GET", "/v1/cost-estimation/rates",
                                       headers=wrong)  # fmt: skip
            assert status == 401

    asyncio.run(flow())


def test_persistent_storage_refuses_malformed_uploads(embedded: Server) -> None:
    """sdk/python/client.py @3952b06's upload_persist, sent wrong: a body with no file part,
    with too many parts, with no boundary to be found, or a file with no name and no `dst`,
    is a 400 naming what is wrong, never a 500."""
    s, url = sdk_session(embedded), embedded.url
    s.post(f"{url}/v1/sessions", json={"template": "shell", "namespace": "data", "user": "u"})
    params = {"namespace": "data", "user": "u"}
    many = b"".join(b'--b\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nx\r\n' % i
                    for i in range(300)) + b"--b--\r\n"  # fmt: skip
    nameless = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename=""\r\n\r\nx\r\n--b--\r\n'
    )
    for body, said in (
        (b'--b\r\nContent-Disposition: form-data; name="other"\r\n\r\nx\r\n--b--\r\n', "file"),
        (many, "too many parts"),
        (b"not a form", "multipart/form-data"),
        (nameless, "Name the file"),
    ):
        r = s.post(f"{url}/v1/fs/persist/upload", params=params, data=body)
        assert r.status_code == 400 and said in r.json()["detail"], r.text
    r = s.post(f"{url}/v1/fs/persist/upload", params={**params, "session_id": "../x"},
               files={"file": ("a.txt", b"x")})  # fmt: skip
    assert r.status_code == 400 and "session_id" in r.json()["detail"]
