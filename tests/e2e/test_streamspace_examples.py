"""The StreamSpace reference's example scripts against `tether up`, base URL changed only."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Server, start_server

SPEC_URL = "https://streamspace.example.com"
PASSWORD = "password"  # what the spec's script logs in with

LIFECYCLE = r"""#!/bin/bash

# 1. Login and get token
TOKEN=$(curl -s -X POST https://streamspace.example.com/api/v1/auth/login \
  -H "Content-Type: application/json" \
  -d '{"username":"admin","password":"password"}' \
  | jq -r .token)

echo "Logged in. Token: ${TOKEN:0:20}..."

# 2. List available templates
echo "\nAvailable templates:"
curl -s -H "Authorization: Bearer $TOKEN" \
  https://streamspace.example.com/api/v1/templates \
  | jq '.templates[] | {name, display_name, category}'

# 3. Create a session
echo "\nCreating session..."
SESSION_ID=$(curl -s -X POST \
  -H "Authorization: Bearer $TOKEN" \
  -H "Content-Type: application/json" \
  -d '{
    "user": "john.doe",
    "template": "firefox-browser",
    "state": "running",
    "resources": {
      "memory": "2Gi",
      "cpu": "1000m"
    }
  }' \
  https://streamspace.example.com/api/v1/sessions \
  | jq -r .id)

echo "Session created: $SESSION_ID"

# 4. Wait for session to be running
echo "\nWaiting for session to start..."
while true; do
  STATE=$(curl -s -H "Authorization: Bearer $TOKEN" \
    https://streamspace.example.com/api/v1/sessions/$SESSION_ID \
    | jq -r .state)

  if [ "$STATE" = "running" ]; then
    echo "Session is running!"
    break
  fi

  echo "Current state: $STATE"
  sleep 2
done

# 5. Get VNC URL
VNC_URL=$(curl -s -H "Authorization: Bearer $TOKEN" \
  https://streamspace.example.com/api/v1/sessions/$SESSION_ID \
  | jq -r .status.vnc_url)

echo "VNC URL: https://streamspace.example.com$VNC_URL"

# 6. Hibernate session
echo "\nHibernating session..."
curl -s -X PATCH \
  -H "Authorization: Bearer $TOKEN" \
  -H "Content-Type: application/json" \
  -d '{"state":"hibernated"}' \
  https://streamspace.example.com/api/v1/sessions/$SESSION_ID \
  | jq '{state, status}'

# 7. Wake session
echo "\nWaking session..."
curl -s -X PATCH \
  -H "Authorization: Bearer $TOKEN" \
  -H "Content-Type: application/json" \
  -d '{"state":"running"}' \
  https://streamspace.example.com/api/v1/sessions/$SESSION_ID \
  | jq '{state, status}'

# 8. Terminate session
echo "\nTerminating session..."
curl -s -X DELETE \
  -H "Authorization: Bearer $TOKEN" \
  https://streamspace.example.com/api/v1/sessions/$SESSION_ID

echo "Session terminated"

# 9. Logout
curl -s -X POST \
  -H "Authorization: Bearer $TOKEN" \
  https://streamspace.example.com/api/v1/auth/logout

echo "\nLogged out"
# (added by the test) the token is refused after logout, and the session is gone
curl -s -o /dev/null -w 'after logout: %{http_code}\n' -H "Authorization: Bearer $TOKEN" \
  https://streamspace.example.com/api/v1/sessions
echo "SESSION=$SESSION_ID"
"""

MONITOR = r"""
  # Get agent stats
  curl -s -H "Authorization: Bearer $TOKEN" \
    https://streamspace.example.com/api/v1/agents/stats \
    | jq -r '"Total Agents: \(.total_agents)\nOnline: \(.online_agents)\nOffline: \(.offline_agents)\nDraining: \(.draining_agents)\n\nUtilization: \(.utilization.percentage)%\nSessions: \(.total_capacity.current_sessions) / \(.total_capacity.max_sessions)"'

  echo ""
  echo "Agents:"
  echo "-------"

  # List all agents
  curl -s -H "Authorization: Bearer $TOKEN" \
    https://streamspace.example.com/api/v1/agents \
    | jq -r '.agents[] | "\(.agent_id) (\(.platform)) - \(.status) - Sessions: \(.capacity.current_sessions)/\(.capacity.max_sessions)"'
"""  # noqa: E501 (the spec's text, verbatim)


def run_script(server: Server, script: str, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        ["bash", "-c", script.replace(SPEC_URL, server.url)],
        capture_output=True, text=True, timeout=240, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def streamspace(tmp_path: Path) -> Server:
    srv = start_server(tmp_path / "home", {"TETHER_ADMIN_PASSWORD": PASSWORD})
    yield srv  # type: ignore[misc]
    srv.stop()


def test_complete_session_lifecycle_script(streamspace: Server) -> None:
    out = run_script(streamspace, LIFECYCLE)
    assert "Logged in. Token: eyJ" in out
    assert '"name": "firefox-browser"' in out and '"display_name": "Firefox Web Browser"' in out
    assert "Session is running!" in out
    sid = out.rsplit("SESSION=", 1)[1].strip()
    assert sid and sid != "null"
    assert f"VNC URL: {streamspace.url}/vnc-viewer/{sid}" in out
    states = [line.split('"')[3] for line in out.splitlines() if line.startswith('  "state"')]
    assert states == ["hibernated", "running"]
    assert "Session terminated" in out and "Logged out" in out
    assert "after logout: 401" in out
    # the admin's API key still sees the session, terminated
    r = httpx.get(f"{streamspace.url}/api/v1/sessions/{sid}",
                  headers={"Authorization": f"Bearer {streamspace.key}"})  # fmt: skip
    assert r.json()["state"] == "terminated"


def test_monitor_agent_health_queries(streamspace: Server) -> None:
    creds = {"username": "admin", "password": PASSWORD}
    token = httpx.post(f"{streamspace.url}/api/v1/auth/login", json=creds).json()["token"]
    out = run_script(streamspace, f'TOKEN="{token}"\n' + MONITOR)
    agent = httpx.get(f"{streamspace.url}/api/v1/agents",
                      headers={"Authorization": f"Bearer {token}"}).json()["agents"][0]  # fmt: skip
    most = agent["capacity"]["max_sessions"]  # TETHER_AGENT_CAPACITY, from the machine's memory
    assert out.splitlines()[:7] == [
        "Total Agents: 1", "Online: 1", "Offline: 0", "Draining: 0", "",
        "Utilization: 0%", f"Sessions: 0 / {most}",
    ]  # fmt: skip
    assert f"{agent['agent_id']} (local) - online - Sessions: 0/{most}" in out


def test_rate_limit_holds_across_two_server_processes(
    tmp_path: Path, rate_window: Callable[[], None]
) -> None:
    """Two servers sharing one store (as two function instances share Firestore)."""
    env = {"TETHER_ADMIN_PASSWORD": PASSWORD}
    one = start_server(tmp_path / "home", env | {"TETHER_AGENT_ID": "agent-one"})
    two = start_server(tmp_path / "home", env | {"TETHER_AGENT_ID": "agent-two"})
    try:
        rate_window()
        codes = []
        for i in range(8):
            url = (one if i % 2 == 0 else two).url
            bad = {"username": "admin", "password": "no"}
            r = httpx.post(f"{url}/api/v1/auth/login", json=bad)
            codes.append(r.status_code)
        assert codes == [401] * 5 + [429] * 3, codes
        h = {"Authorization": f"Bearer {one.key}"}
        remaining = [
            int(httpx.get(f"{s.url}/api/v1/templates", headers=h).headers["X-RateLimit-Remaining"])
            for s in (one, two, one)
        ]
        assert remaining == [99, 98, 97]
    finally:
        one.stop()
        two.stop()
