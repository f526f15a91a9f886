"""The audit log and the Prometheus metrics, against one `tether up` for the module: a user's
scripted day (sign-ins, a key made and revoked, a session made, run in, opened in a terminal
and deleted, a call refused) is in the admin's `/v1/audit` exactly, newest first, with the
answers' request ids and no secret; `/metrics` parses with prometheus-client's own parser and
moves with what was done."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Server, start_server

PASSWORD = "pw-admin-audit-0042"
API = "/api/v1"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"TETHER_ADMIN_PASSWORD": PASSWORD, "TETHER_RATE_LIMITS": "login=100"}
    srv = start_server(tmp_path_factory.mktemp("audit") / "home", env)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def admin(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"X-API-Key": server.key}, timeout=60) as c:
        yield c


def until(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.1)
    pytest.fail(f"not within {timeout}s: {what}")


async def terminal(server: Server, sid: str, key: str) -> str:
    """Opens the session's terminal, runs a line in it and closes it: the upgrade's request id."""
    url = f"{server.url.replace('http', 'ws', 1)}/v1/sessions/{sid}/terminal"
    async with (
        aiohttp.ClientSession() as client,
        client.ws_connect(url, headers={"X-API-Key": key}) as ws,
    ):
        request_id = ws._response.headers["X-Request-Id"]
        await ws.send_bytes(b"echo from-the-terminal\n")
        seen = b""
        async with asyncio.timeout(30):
            while b"from-the-terminal\r\n" not in seen:
                msg = await ws.receive()
                assert msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT), msg
                seen += msg.data if isinstance(msg.data, bytes) else msg.data.encode()
    return str(request_id)


async def shell(server: Server, sid: str, key: str) -> str:
    """Runs a command over OnMemOS' JSON shell and closes it: the upgrade's request id."""
    url = f"{server.url.replace('http', 'ws', 1)}/v1/sessions/{sid}/shell"
    async with (
        aiohttp.ClientSession() as client,
        client.ws_connect(url, headers={"X-API-Key": key}) as ws,
    ):
        await ws.send_json({"type": "command", "command": "echo over-the-shell"})
        answer = await ws.receive_json(timeout=30)
        assert answer["type"] == "command_result" and "over-the-shell" in answer["stdout"]
        return str(ws._response.headers["X-Request-Id"])


async def refused_terminal(server: Server, sid: str) -> tuple[int, str]:
    url = f"{server.url.replace('http', 'ws', 1)}/v1/sessions/{sid}/terminal"
    async with aiohttp.ClientSession() as client:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect(url, headers={"X-API-Key": "tether_nothere0001_" + "x" * 48})
    assert refused.value.headers is not None
    return refused.value.status, refused.value.headers["X-Request-Id"]


def scrape(server: Server, key: str | None = None) -> dict[tuple[str, frozenset[Any]], float]:
    """Every sample of `/metrics`, by name and labels, as prometheus-client parses it."""
    answer = httpx.get(
        f"{server.url}/metrics", headers={"Authorization": f"Bearer {key or server.key}"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, frozenset[Any]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_a_users_day_is_in_the_audit_log_exactly_and_holds_no_secret(
    server: Server, admin: httpx.Client
) -> None:
    name = f"carol{uuid.uuid4().hex[:6]}"
    password = f"pw-{name}-secret"
    made = admin.post(f"{API}/users", json={"username": name, "password": password,
                                            "email": f"{name}@example.com"})  # fmt: skip
    assert made.status_code == 201, made.text
    expected: list[tuple[str, str, str, str, str]] = []  # actor, action, target, result, id

    def did(answer: httpx.Response, action: str, target: str = "") -> httpx.Response:
        expected.append((name, action, target, str(answer.status_code),
                         answer.headers["X-Request-Id"]))  # fmt: skip
        return answer

    with httpx.Client(base_url=server.url, timeout=60) as c:
        wrong = {"username": name, "password": "not-" + password}
        did(c.post(f"{API}/auth/login", json=wrong), "streamspace.login")
        # A request id the client chose is kept (and one that is not well formed replaced).
        mine = {"X-Request-Id": f"mine-{uuid.uuid4().hex}"}
        login = did(c.post(f"{API}/auth/login", json={"username": name, "password": password},
                           headers=mine), "streamspace.login")  # fmt: skip
        assert login.status_code == 200 and login.headers["X-Request-Id"] == mine["X-Request-Id"]
        token = login.json()["token"]
        jwt = {"Authorization": f"Bearer {token}", "X-Request-Id": "not well formed!"}
        made_key = c.post(f"{API}/api-keys", json={"name": "daily"}, headers=jwt)
        assert made_key.headers["X-Request-Id"] != "not well formed!"
        key, key_id = made_key.json()["key"], made_key.json()["id"]
        did(made_key, "streamspace.create_key", key_id)
        c.headers["X-API-Key"] = key
        created = c.post("/v1/sessions", json={"template": "python"})
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        did(created, "onmemos.create_session", sid)
        ran = did(c.post(f"/v1/sessions/{sid}/execute", json={"command": "echo hi"}),
                  "onmemos.execute_session", sid)  # fmt: skip
        assert ran.status_code == 200 and "hi" in ran.text, ran.text
        opened = asyncio.run(terminal(server, sid, key))
        expected.append((name, "relay.connect", sid, "ok", opened))
        expected.append((name, "relay.disconnect", sid, "closed", opened))

        def ended() -> bool:  # the relay records it once it has seen the connection go
            got = admin.get("/v1/audit", params={"action": "relay.disconnect", "target": sid})
            return any(r["request_id"] == opened for r in got.json()["records"])

        until(ended, "the terminal's disconnect recorded")
        # Refused: not an admin (403), and a terminal for a credential that is none (no actor).
        assert did(c.post(f"{API}/users", json={"username": "mallory", "password": "x" * 12,
                                                "email": "m@example.com"}),
                   "streamspace.create_user").status_code == 403  # fmt: skip
        status, refused_id = asyncio.run(refused_terminal(server, sid))
        assert status == 401
        assert did(c.delete(f"/v1/sessions/{sid}"), "onmemos.delete_session", sid).is_success
        revoked = c.delete(f"{API}/api-keys/{key_id}", headers={"Authorization": f"Bearer {token}"})
        assert did(revoked, "streamspace.revoke_key", key_id).status_code == 204
        # Reads are not recorded.
        assert c.get(f"{API}/api-keys", headers={"Authorization": f"Bearer {token}"}).is_success

    def mine_recorded() -> list[dict[str, Any]] | None:
        got = admin.get("/v1/audit", params={"actor": name, "limit": 50}).json()["records"]
        return got if len(got) >= len(expected) else None

    records = until(mine_recorded, "every record of the day (a disconnect is written after)")
    assert [
        (r["actor"], r["action"], r["target"], r["result"], r["request_id"]) for r in records
    ] == expected[::-1]
    times = [r["time"] for r in records]
    assert times == sorted(times, reverse=True)

    # The refused terminal: recorded with no actor (its credential was none), its request id.
    refusals = admin.get("/v1/audit", params={"action": "relay.connect", "target": sid}).json()
    newest = refusals["records"][0]
    assert (newest["actor"], newest["result"], newest["request_id"]) == (
        None,
        "refused",
        refused_id,
    )

    # Filters, and pages walked with the cursor: the same records, none twice.
    by_target = admin.get("/v1/audit", params={"target": sid, "actor": name}).json()["records"]
    assert [r["action"] for r in by_target] == [
        "onmemos.delete_session", "relay.disconnect", "relay.connect",
        "onmemos.execute_session", "onmemos.create_session",
    ]  # fmt: skip
    walked: list[str] = []
    params: dict[str, Any] = {"actor": name, "limit": 3}
    while True:
        page = admin.get("/v1/audit", params=params).json()
        walked += [r["id"] for r in page["records"]]
        if not page["next_cursor"]:
            break
        params["cursor"] = page["next_cursor"]
    assert walked == [r["id"] for r in records]
    since = admin.get("/v1/audit", params={"actor": name, "since": records[2]["time"]})
    assert [r["id"] for r in since.json()["records"]] == walked[:3]

    # No secret anywhere: not the password (either), the key, the JWT, the admin's key.
    everything = admin.get("/v1/audit", params={"limit": 200}).text
    for secret in (password, wrong["password"], key, token, server.key, PASSWORD):
        assert secret not in everything
        assert secret not in json.dumps(records)


def test_the_audit_log_is_for_admins_and_cannot_be_changed(
    server: Server, admin: httpx.Client
) -> None:
    name = f"dave{uuid.uuid4().hex[:6]}"
    body = {"username": name, "password": f"pw-{name}-1", "email": f"{name}@example.com"}
    assert admin.post(f"{API}/users", json=body).status_code == 201
    token = httpx.post(f"{server.url}{API}/auth/login", json=body).json()["token"]
    user = {"Authorization": f"Bearer {token}"}
    refused = httpx.get(f"{server.url}/v1/audit", headers=user)
    assert refused.status_code == 403 and "admin" in refused.json()["detail"]
    assert httpx.get(f"{server.url}/v1/audit").status_code == 401
    for method in ("PUT", "PATCH", "DELETE", "POST"):
        changed = admin.request(method, "/v1/audit", json={})
        assert changed.status_code == 405, (method, changed.text)
        assert changed.headers["Allow"] == "GET, HEAD"
    one = admin.get("/v1/audit", params={"limit": 1}).json()["records"][0]
    assert admin.delete(f"/v1/audit/{one['id']}").status_code == 404
    assert admin.get("/v1/audit", params={"since": "yesterday"}).status_code == 400
    assert admin.get("/v1/audit", params={"cursor": "nope"}).status_code == 400
    assert admin.get("/v1/audit", params={"limit": 0}).status_code == 400
    document = admin.get("/openapi/onmemos.json").json()
    assert set(document["paths"]["/v1/audit"]) == {"get"}


def test_metrics_move_with_what_is_done_and_are_for_admins(
    server: Server, admin: httpx.Client
) -> None:
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    body = {"username": f"erin{uuid.uuid4().hex[:6]}", "password": "pw-erin-12345",
            "email": "erin@example.com"}  # fmt: skip
    assert admin.post(f"{API}/users", json=body).status_code == 201
    token = httpx.post(f"{server.url}{API}/auth/login", json=body).json()["token"]
    assert httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {token}"}
                     ).status_code == 403  # fmt: skip
    assert (
        httpx.get(f"{server.url}/metrics", headers={"X-API-Key": "tether_x_y"}).status_code == 401
    )

    before = scrape(server)
    made = admin.post("/v1/sessions", json={"template": "python"})
    assert made.status_code == 201, made.text
    sid = made.json()["id"]
    assert admin.post(f"/v1/sessions/{sid}/execute", json={"command": "true"}).is_success
    asyncio.run(terminal(server, sid, server.key))
    opened = asyncio.run(shell(server, sid, server.key))

    def moved() -> dict[tuple[str, frozenset[Any]], float] | None:
        after = scrape(server)
        closed = value(after, "tether_relay_connections_open") == 0  # the terminal's is gone
        return after if closed else None

    after = until(moved, "the terminal's connection counted closed")
    created = {"surface": "onmemos", "method": "POST", "status": "201"}
    assert value(after, "tether_http_requests_total", **created) == (
        value(before, "tether_http_requests_total", **created) + 1
    )
    latency = "tether_http_request_duration_seconds_count"
    assert value(after, latency, surface="onmemos") > value(before, latency, surface="onmemos")
    assert value(after, "tether_http_requests_total", surface="relay", method="GET",
                 status="101") >= 1  # fmt: skip
    assert value(after, "tether_sessions", state="running") >= 1
    assert value(after, "tether_agents_online") >= 1
    for kind in ("start_session", "exec"):
        done = {"type": kind, "state": "succeeded"}
        assert value(after, "tether_commands_finished_total", **done) > value(
            before, "tether_commands_finished_total", **done
        ), kind
    for direction in ("to_workspace", "to_client"):
        bytes_ = "tether_relay_bytes_total"
        assert value(after, bytes_, direction=direction) > value(
            before, bytes_, direction=direction
        ), direction
    # Every family has its help text, and every name is Tether's or the process's.
    text = httpx.get(f"{server.url}/metrics", headers={"X-API-Key": server.key}).text
    for family in text_string_to_metric_families(text):
        assert family.documentation, family.name
        assert family.name.startswith(("tether_", "process_", "python_")), family.name
    assert server.key not in text and token not in text

    # The shell's connection and the command run over it are in the audit log too, under its
    # upgrade's request id (the terminal's end may be recorded after the shell's start).
    def shell_recorded() -> list[tuple[str, str]] | None:
        got = admin.get("/v1/audit", params={"target": sid, "limit": 10}).json()["records"]
        seen = [(r["action"], r["result"]) for r in got if r["request_id"] == opened]
        return seen if len(seen) == 3 else None

    assert until(shell_recorded, "the shell's disconnect") == [
        ("relay.disconnect", "1000"),
        ("onmemos.shell_command", "200"),
        ("relay.connect", "ok"),
    ]
    assert admin.delete(f"/v1/sessions/{sid}").is_success


def test_the_session_feed_socket_is_audited_as_it_comes_and_goes(
    server: Server, admin: httpx.Client
) -> None:
    """StreamSpace's web UI's session list (a WebSocket of the relay's): its connect, its
    refusal and its disconnect, each under its upgrade's request id."""

    async def open_and_close(headers: dict[str, str]) -> int:
        async with aiohttp.ClientSession() as http:
            url = server.url.replace("http", "ws", 1) + "/api/v1/ws/sessions"
            try:
                async with http.ws_connect(url, headers=headers) as ws:
                    await ws.receive(timeout=30)  # the first update: it is open
                    return 101
            except aiohttp.WSServerHandshakeError as refused:
                return refused.status

    made, denied = f"feed-{uuid.uuid4().hex}", f"feed-{uuid.uuid4().hex}"
    opened = asyncio.run(open_and_close({"X-API-Key": server.key, "X-Request-Id": made}))
    wrong = "tether_wrongkey0001_" + "x" * 32
    refused = asyncio.run(open_and_close({"X-API-Key": wrong, "X-Request-Id": denied}))
    assert (opened, refused) == (101, 401)

    def recorded() -> list[tuple[str, str, str]] | None:
        got = admin.get("/v1/audit", params={"target": "sessions-feed", "limit": 10}).json()
        seen = [(r["action"], str(r["result"]), r["request_id"]) for r in got["records"]]
        return seen if len(seen) >= 3 else None

    assert until(recorded, "the feed's records")[:3] == [
        ("relay.connect", "refused", denied),
        ("relay.disconnect", "1000", made),
        ("relay.connect", "ok", made),
    ]
