"""The relay's live calls (streamed commands, processes, files, ports, preview links) from the
outside, as an attacker and a careless app would meet them: who may call them, what reaches
the workspace of a caller's credential, what a workspace's answer may set on this origin."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from tether.core.models import utcnow

from tests.e2e.conftest import Server, start_server
from tests.waiting import wait_for

API = "/api/v1"
PASSWORD = "admin-pass-1234"

# An app in the workspace: answers every request with the headers it was sent, and tries to
# set what an app must not set on the relay's origin.
APP = r"""
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Echo(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"path": self.path, "headers": dict(self.headers)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Set-Cookie", "session=stolen; Path=/")
        self.send_header("Clear-Site-Data", '"storage"')
        self.send_header("X-App", "yes")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()
"""
PORT = 8123


@dataclass
class World:
    server: Server
    alice: httpx.Client
    bob: httpx.Client
    session: str


def user(server: Server, name: str, scope: str | None = None) -> tuple[str, str]:
    """A user made by the admin, and a key of theirs (with `scope`): (key, key id)."""
    admin = {"Authorization": f"Bearer {server.key}"}
    password = f"pw-{name}-12345"
    body = {"username": name, "password": password, "email": f"{name}@example.com"}
    if httpx.get(f"{server.url}{API}/users/{name}", headers=admin, timeout=30).status_code == 404:
        made = httpx.post(f"{server.url}{API}/users", json=body, headers=admin, timeout=30)
        assert made.status_code == 201, made.text
    login = httpx.post(f"{server.url}{API}/auth/login",
                       json={"username": name, "password": password}, timeout=30)  # fmt: skip
    token = {"Authorization": f"Bearer {login.json()['token']}"}
    spec = {"name": "k", **({"scope": scope} if scope else {})}
    key = httpx.post(f"{server.url}{API}/api-keys", json=spec, headers=token, timeout=30).json()
    return key["key"], key["id"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    env = {"TETHER_ADMIN_PASSWORD": PASSWORD, "TETHER_RATE_LIMITS": "login=100"}
    srv = start_server(tmp_path_factory.mktemp("live") / "home", env)
    try:
        with keyed(srv, user(srv, "alice")[0]) as alice, keyed(srv, user(srv, "bob")[0]) as bob:
            made = alice.post("/v1/sessions", json={"template": "python"})
            assert made.status_code == 201, made.text
            sid = made.json()["id"]
            serve_app(alice, sid)
            yield World(srv, alice, bob, sid)
    finally:
        srv.stop()


def keyed(server: Server, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=60)


def serve_app(c: httpx.Client, sid: str) -> None:
    """The echoing app, written to the workspace and run there as a background process."""
    base = f"/v1/sessions/{sid}"
    assert c.put(f"{base}/files/content?path=app.py", content=APP.encode()).status_code == 201
    started = c.post(f"{base}/processes", json={"command": f"python3 app.py {PORT}"})
    assert started.status_code == 201, started.text
    assert wait_for(lambda: c.get(f"{base}/ports/{PORT}/").status_code == 200, 30)


def calls(sid: str) -> list[tuple[str, str, dict[str, Any]]]:
    """One of each kind of live call on session `sid`."""
    base = f"/v1/sessions/{sid}"
    return [
        ("POST", f"{base}/exec/stream", {"json": {"command": "echo hi"}}),
        ("GET", f"{base}/processes", {}),
        ("POST", f"{base}/processes", {"json": {"command": "sleep 1"}}),
        ("GET", f"{base}/files?path=.", {}),
        ("GET", f"{base}/files/content?path=x", {}),
        ("PUT", f"{base}/files/content?path=x", {"content": b"x"}),
        ("GET", f"{base}/ports/{PORT}/", {}),
    ]


def test_only_the_owner_reaches_a_sessions_live_calls(world: World) -> None:
    for method, path, kw in calls(world.session):
        assert world.bob.request(method, path, **kw).status_code == 404, path  # not theirs
        anonymous = httpx.request(method, world.server.url + path, timeout=30, **kw)
        assert anonymous.status_code == 401, path
        foreign = world.alice.request(
            method, path, headers={"Origin": "https://evil.example"}, **kw
        )
        assert foreign.status_code == 403, path
    # A credential in the query string is not taken: it would go on to the workspace.
    key = world.alice.headers["X-API-Key"]
    sneaky = httpx.get(f"{world.server.url}/v1/sessions/{world.session}/files?path=.&api_key={key}")
    assert sneaky.status_code == 401


def test_a_read_only_key_reads_files_and_changes_nothing(world: World) -> None:
    assert world.alice.put(f"/v1/sessions/{world.session}/files/content?path=ro.txt",
                           content=b"mine").status_code == 201  # fmt: skip
    key, _ = user(world.server, "alice", scope="read")
    with httpx.Client(base_url=world.server.url, headers={"X-API-Key": key}, timeout=30) as ro:
        base = f"/v1/sessions/{world.session}"
        assert ro.get(f"{base}/files/content?path=ro.txt").content == b"mine"
        assert ro.get(f"{base}/processes").status_code == 200
        for method, path, kw in calls(world.session):
            if method != "GET":
                refused = ro.request(method, path, **kw)
                assert refused.status_code == 403 and refused.json()["code"] == "AUTH_READ_ONLY"


def test_a_port_gets_no_credential_and_its_answer_sets_nothing_here(world: World) -> None:
    r = world.alice.get(f"/v1/sessions/{world.session}/ports/{PORT}/some/page?q=1",
                        headers={"Cookie": "tether=secret", "X-Trace": "t-1"})  # fmt: skip
    assert r.status_code == 200
    seen = {k.lower(): v for k, v in r.json()["headers"].items()}
    assert r.json()["path"] == "/some/page?q=1"
    assert "x-api-key" not in seen and "cookie" not in seen  # Tether's credential stays here
    assert world.alice.headers["X-API-Key"] not in json.dumps(r.json())
    assert seen["x-trace"] == "t-1"  # the request's own headers pass
    assert seen["x-forwarded-prefix"] == f"/v1/sessions/{world.session}/ports/{PORT}"
    assert seen["x-forwarded-host"] == world.server.url.removeprefix("http://")
    assert "set-cookie" not in r.headers and "clear-site-data" not in r.headers
    assert r.headers["x-app"] == "yes"
    assert r.headers["content-security-policy"].startswith("sandbox")
    nothing = world.alice.get(f"/v1/sessions/{world.session}/ports/9/")
    assert nothing.status_code == 502 and nothing.json()["code"] == "PORT_UNREACHABLE"
    assert world.alice.get(f"/v1/sessions/{world.session}/ports/70000/").status_code == 400


def test_a_preview_link_opens_one_port_until_its_session_or_key_ends(world: World) -> None:
    key, key_id = user(world.server, "carol")
    carol = keyed(world.server, key)
    sid = carol.post("/v1/sessions", json={"template": "python"}).json()["id"]
    serve_app(carol, sid)
    made = carol.post(f"/v1/sessions/{sid}/preview-urls", json={"port": PORT, "expires_in": 600})
    assert made.status_code == 201, made.text
    link = made.json()
    assert link["port"] == PORT and link["url"].startswith(world.server.url + "/preview/")
    left = datetime.fromisoformat(link["expires_at"]) - utcnow()
    assert timedelta(seconds=590) < left <= timedelta(seconds=600)
    opened = httpx.get(link["url"] + "x?y=1", timeout=30)  # no credential: the link is one
    assert opened.json()["path"] == "/x?y=1"
    assert "set-cookie" not in opened.headers
    assert httpx.get(link["url"].rstrip("/"), timeout=30).status_code == 302  # to the slash
    token = link["url"].split("/preview/")[1].rstrip("/")
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    assert httpx.get(f"{world.server.url}/preview/{tampered}/", timeout=30).status_code == 404
    # Another port of the session is not opened by it, nor by a link to another session.
    assert (
        world.bob.post(f"/v1/sessions/{sid}/preview-urls", json={"port": PORT}).status_code == 404
    )
    # The key that made it revoked (by its owner, with itself): the link is gone at once.
    assert carol.delete(f"{API}/api-keys/{key_id}").status_code == 204
    assert httpx.get(link["url"], timeout=30).status_code == 404
    carol.close()


def test_bodies_past_the_bound_are_refused_and_bad_ones_named(world: World) -> None:
    base = f"/v1/sessions/{world.session}"
    big = world.alice.put(f"{base}/files/content?path=big.bin", content=b"\0" * ((32 << 20) + 1))
    assert big.status_code == 413

    def chunks() -> Iterator[bytes]:
        for _ in range(33):
            yield b"\0" * (1 << 20)

    streamed = world.alice.put(f"{base}/files/content?path=big.bin", content=chunks())
    assert streamed.status_code == 413
    assert world.alice.get(f"{base}/files/stat?path=big.bin").status_code == 404  # nothing left
    for path, body, field in (
        ("exec/stream", {"command": ""}, "command"),
        ("exec/stream", {"command": "x", "timeout": "soon"}, "timeout"),
        ("processes", {"command": "x", "env": {"1": "a"}}, "env"),
        ("processes/1/kill", {"signal": "STOP"}, "signal"),
    ):
        r = world.alice.post(f"{base}/{path}", json=body)
        assert r.status_code == 400 and field in r.json()["detail"], (path, r.text)
    r = world.alice.get(f"{base}/files?path=")
    assert r.status_code == 400 and "path" in r.json()["detail"]


def test_live_calls_count_as_the_sessions_activity(world: World) -> None:
    """Each kind of call shows as what the session last did. (Activity is recorded at most
    four times an idle timeout: a 12 s one records one every 3 s.)"""
    made = world.alice.post(f"{API}/sessions", json={"user": "alice", "template": "python",
                                                     "idleTimeout": "12s"})  # fmt: skip
    assert made.status_code == 202, made.text
    sid = made.json()["id"]
    base = f"/v1/sessions/{sid}"
    assert wait_for(lambda: world.alice.get(base).json()["status"] == "running", 60)
    serve_app(world.alice, sid)
    for path, source in ((f"{base}/files?path=.", "files"), (f"{base}/ports/{PORT}/", "port"),
                         (f"{base}/processes", "process")):  # fmt: skip

        def shown(path: str = path, source: str = source) -> bool:
            world.alice.get(path)
            return bool(world.alice.get(base).json()["last_activity_source"] == source)

        assert wait_for(shown, 30, 0.5), (path, world.alice.get(base).json())


def test_calls_that_change_something_are_in_the_audit_log(world: World) -> None:
    base = f"/v1/sessions/{world.session}"
    wrote = world.alice.put(f"{base}/files/content?path=audited.txt", content=b"x")
    assert wrote.status_code == 201
    refused = world.bob.delete(f"{base}/files?path=audited.txt")
    assert refused.status_code == 404
    admin = {"X-API-Key": world.server.key}

    def records() -> list[dict[str, Any]]:
        got = httpx.get(f"{world.server.url}/v1/audit", params={"target": world.session},
                        headers=admin, timeout=30)  # fmt: skip
        found: list[dict[str, Any]] = got.json()["records"]
        return found

    def seen(action: str, result: str) -> bool:
        return any(r["action"] == action and str(r["result"]) == result for r in records())

    assert wait_for(lambda: seen("onmemos.upload_file", "201"), 10), records()
    assert wait_for(lambda: seen("onmemos.remove_file", "404"), 10), records()
    upload = next(r for r in records() if r["action"] == "onmemos.upload_file")
    assert upload["request_id"] == wrote.headers["X-Request-Id"]
    assert world.alice.headers["X-API-Key"] not in json.dumps(records())
