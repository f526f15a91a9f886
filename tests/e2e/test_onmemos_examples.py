"""Every example in onmemos-api.md, run against `tether up` with only the base URL changed."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from tether.sdk import AsyncClient, OnMemOSClient

from tests.bodies import sans_id
from tests.e2e.conftest import Server, start_server


def curl(server: Server, script: str) -> tuple[int, Any]:
    """Run a spec curl example, with its base URL and key swapped, printing the status too."""
    script = script.replace("http://localhost:8080", server.url).replace("your-api-key", server.key)
    out = subprocess.run(
        ["bash", "-c", script.strip() + " -s -w '\\n%{http_code}'"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    body, _, status = out.rpartition("\n")
    return int(status), json.loads(body) if body.strip() else None


def test_curl_is_installed() -> None:
    assert shutil.which("curl"), "infra/apt-packages.sh installs curl"


def test_curl_examples(server: Server) -> None:
    status, created = curl(
        server,
        """
curl -X POST http://localhost:8080/v1/sessions \\
  -H "X-API-Key: your-api-key" \\
  -H "Content-Type: application/json" \\
  -d '{
    "provider": "auto",
    "template": "python",
    "namespace": "test",
    "user": "developer",
    "ttl_minutes": 30
  }'""",
    )
    assert status == 201 and created["status"] == "running"
    sid = created["id"]

    status, result = curl(
        server,
        """
curl -X POST http://localhost:8080/v1/sessions/ws-test-developer-123/execute \\
  -H "X-API-Key: your-api-key" \\
  -H "Content-Type: application/json" \\
  -d '{
    "command": "python --version",
    "timeout": 30
  }'""".replace("ws-test-developer-123", sid),
    )
    assert status == 200
    assert result["stdout"].startswith("Python 3.") and result["returncode"] == 0
    assert result["success"] is True and result["stderr"] == ""

    status, deleted = curl(
        server,
        """
curl -X DELETE http://localhost:8080/v1/sessions/ws-test-developer-123 \\
  -H "X-API-Key: your-api-key"
""".replace("ws-test-developer-123", sid),
    )
    assert status == 200 and deleted["status"] == "terminated"


CLOUD_RUN_EXAMPLE = """
curl -X POST http://localhost:8080/v1/sessions \\
  -H "X-API-Key: your-api-key" \\
  -H "Content-Type: application/json" \\
  -d '{
    "provider": "cloud_run",
    "template": "python",
    "namespace": "test",
    "user": "developer",
    "ttl_minutes": 30
  }'"""
GKE_EXAMPLE = """
curl -X POST http://localhost:8080/v1/sessions \\
  -H "X-API-Key: your-api-key" \\
  -H "Content-Type: application/json" \\
  -d '{
    "provider": "gke",
    "template": "python",
    "namespace": "ml-training",
    "user": "researcher",
    "long_lived": true
  }'"""


def test_curl_cloud_run_and_gke_examples_run_on_the_local_agent_standing_in(
    server: Server, tmp_path: Path
) -> None:
    """The local stack has no Cloud Run or GKE agent: its local agent serves those sessions
    (TETHER_LOCAL_STANDS_IN), and each says where it runs. Where the setting is off, as in a
    deployment, they are a clear 503, not a fake session."""
    for example, provider in ((CLOUD_RUN_EXAMPLE, "cloud_run"), (GKE_EXAMPLE, "gke")):
        status, body = curl(server, example)
        assert status == 201 and body["status"] == "running", body
        assert body["provider"] == "local" and body["details"]["stand_in_for"] == provider
        httpx.delete(f"{server.url}/v1/sessions/{body['id']}", headers={"X-API-Key": server.key},
                     timeout=60)  # fmt: skip

    deployed = start_server(tmp_path / "deployed", {"TETHER_LOCAL_STANDS_IN": "none"})
    try:
        status, body = curl(deployed, CLOUD_RUN_EXAMPLE)
        assert status == 503
        assert sans_id(body) == {"detail": "No online agents available for provider 'cloud_run'"}
        status, body = curl(deployed, GKE_EXAMPLE)
        assert status == 503 and "gke" in body["detail"]
    finally:
        deployed.stop()


def test_http_reference_requests(server: Server) -> None:
    """The Quick Reference requests, unified and legacy, plus the health check."""
    h = {"X-API-Key": server.key}
    with httpx.Client(base_url=server.url, headers=h, timeout=60) as c:
        s = c.post(
            "/v1/sessions",
            json={"template": "python", "namespace": "my-project", "user": "developer"},
        ).json()
        sid = s["id"]
        assert c.get(f"/v1/sessions/{sid}").json()["status"] == "running"
        assert c.get(f"/v1/sessions/{sid}/connect").json()["session_id"] == sid
        out = c.post(f"/v1/sessions/{sid}/execute", json={"command": "ls -la", "timeout": 120})
        assert "bucket" in out.json()["stdout"]
        assert c.delete(f"/v1/sessions/{sid}").json()["status"] == "terminated"

        ws = c.post(
            "/v1/cloudrun/workspaces",
            json={"template": "python", "namespace": "my-project", "user": "developer",
                  "ttl_minutes": 30},
        )  # fmt: skip
        assert ws.status_code == 201
        wid = ws.json()["id"]
        listed = c.get("/v1/cloudrun/workspaces?namespace=my-project&user=developer").json()
        assert [w["id"] for w in listed["workspaces"]] == [wid]
        assert c.get(f"/v1/cloudrun/workspaces/{wid}").json()["id"] == wid
        pwd = c.post(f"/v1/cloudrun/workspaces/{wid}/execute?command=pwd&timeout=30").json()
        assert pwd["stdout"].strip() == "/home/tether"
        hello = c.post(f'/v1/cloudrun/workspaces/{wid}/runpython?code=print("Hello World")')
        assert hello.json()["stdout"] == "Hello World\n"
        ls = c.post(f"/v1/cloudrun/workspaces/{wid}/runsh?command=ls -la").json()
        assert ls["returncode"] == 0
        assert c.delete(f"/v1/cloudrun/workspaces/{wid}").json()["status"] == "terminated"

        health = httpx.get(f"{server.url}/health").json()
        assert health["status"] == "healthy"
        assert health["store"]["status"] == health["bus"]["status"] == "ok"


def test_sdk_basic_usage(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    client = OnMemOSClient(server.url, server.key)

    # Create session
    session = client.create_session(
        {"template": "python", "namespace": "my-project", "user": "developer"}
    )

    # Execute command
    result = client.execute_session(session["id"], "python --version")
    print(result["stdout"])

    # Clean up
    client.delete_session(session["id"])

    assert capsys.readouterr().out.startswith("Python 3.")
    assert client.get_session(session["id"])["status"] == "terminated"


def test_sdk_context_manager(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    client = OnMemOSClient(server.url, server.key)

    with client.cloudrun_workspace_session("python", "test", "developer") as workspace:
        result = workspace.execute("echo 'Hello from OnMemOS!'")
        print(result["stdout"])

    assert capsys.readouterr().out == "Hello from OnMemOS!\n\n"
    assert client.get_session(workspace.id)["status"] == "terminated"


def test_sdk_session_context_manager_cleans_up_on_error(embedded: Server) -> None:
    client = OnMemOSClient(embedded.url, embedded.key)
    with pytest.raises(RuntimeError), client.session(template="shell") as s:
        assert s.execute("echo $((6*7))")["stdout"] == "42\n"
        raise RuntimeError("user code failed")
    assert client.get_session(s.id)["status"] == "terminated"


def test_async_sdk(embedded: Server) -> None:
    async def main() -> list[str]:
        client = AsyncClient(embedded.url, embedded.key)
        async with client, client.session(template="shell") as a, client.session() as b:
            ra, rb = await asyncio.gather(a.execute("echo a"), b.execute("echo b"))
            return [ra["stdout"], rb["stdout"], a.id]

    out_a, out_b, sid = asyncio.run(main())
    assert (out_a, out_b) == ("a\n", "b\n")
    assert OnMemOSClient(embedded.url, embedded.key).get_session(sid)["status"] == "terminated"


def test_cli_drives_a_session(embedded: Server) -> None:
    env = {**embedded.env, "TETHER_URL": embedded.url, "TETHER_API_KEY": embedded.key}

    def tether(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tether.cli.main", *args],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    created = tether("create", "--template", "shell", "--namespace", "cli")
    assert created.returncode == 0, created.stderr
    assert "is running" in created.stderr
    sid = json.loads(created.stdout)["id"]
    assert sid in tether("list", "--namespace", "cli").stdout
    ran = tether("exec", sid, "--", "echo out; echo err >&2; exit 7")
    assert (ran.returncode, ran.stdout, ran.stderr) == (7, "out\n", "err\n")
    assert tether("delete", sid).returncode == 0
    missing = tether("get", sid + "-nope")
    assert missing.returncode == 4 and "Session not found" in missing.stderr
    assert "usage" in tether("--help").stdout


def test_sessions_survive_a_restart(tmp_path: Any) -> None:
    """Nothing is lost when the process dies: the session and its home come back."""
    first = start_server(tmp_path / "home")
    client = OnMemOSClient(first.url, first.key)
    s = client.create_session(template="shell", long_lived=True)
    client.execute_session(s["id"], "echo kept > note")
    first.proc.kill()  # no graceful shutdown
    first.proc.wait()
    second = start_server(tmp_path / "home")
    try:
        client = OnMemOSClient(second.url, second.key)
        assert client.get_session(s["id"])["status"] == "running"
        result = client.execute_session(s["id"], "cat note")
        assert result["stdout"] == "kept\n", result
    finally:
        second.stop()


def test_workspace_cannot_read_the_servers_state(embedded: Server) -> None:
    client = OnMemOSClient(embedded.url, embedded.key)
    with client.session(template="shell") as s:
        db = embedded.home / "tether.db"
        assert db.exists()
        r = s.execute(f"cat {db} | wc -c; ls {embedded.home.parent}; touch ~/mine && echo ok")
        assert r["stdout"].splitlines()[0] == "0", r
        assert "tether-up" not in r["stdout"]  # the server's log beside its home is hidden too
        assert r["stdout"].splitlines()[-1] == "ok"


def test_generated_admin_credentials_are_printed_once_and_work(tmp_path: Any) -> None:
    env = {"TETHER_API_KEY": "", "TETHER_ADMIN_PASSWORD": ""}
    first = start_server(tmp_path / "home", env)
    try:
        printed = first.log.read_text()
        assert "Admin API key (shown once" in printed
        key = next(w for w in printed.split() if w.startswith("tether_"))
        assert OnMemOSClient(first.url, key).list_sessions() == []
        lines = printed.splitlines()
        password = lines[lines.index(next(x for x in lines if "Password of user" in x)) + 1]
        login = {"username": "admin", "password": password.strip()}
        assert httpx.post(f"{first.url}/api/v1/auth/login", json=login).status_code == 200
    finally:
        first.stop()
    second = start_server(tmp_path / "home", env)
    try:
        assert "Admin API key" not in second.log.read_text()
        assert "Password of user" not in second.log.read_text()
        assert httpx.post(f"{second.url}/api/v1/auth/login", json=login).status_code == 200
        assert OnMemOSClient(second.url, key).list_sessions() == []
    finally:
        second.stop()
