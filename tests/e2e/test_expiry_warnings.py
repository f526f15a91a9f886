"""The warning before expiry against `tether up`: a receiver on loopback (a real HTTP server in
this test) gets the signed warning of a short TTL, and of an idle timeout; a 500 from it is
tried again with the same delivery id and, once acknowledged, never sent again; the event is on
the session's events (its owner's only); the extend link extends the session with its token
alone, and the token opens nothing else."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.conftest import Server, start_server
from tests.waiting import wait_for


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0  # what the receiver answered


@dataclass
class Hooks:
    """What the receiver got; `/flaky/...` answers 500 to the first request of each delivery."""

    url: str
    got: list[Received] = field(default_factory=list)
    failed: set[str] = field(default_factory=set)

    def to(self, path: str) -> list[Received]:
        return [r for r in self.got if r.path == path]


def receiver(hooks: list[Hooks]) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            mine = hooks[0]
            body = self.rfile.read(int(self.headers["Content-Length"]))
            delivery = self.headers["X-Tether-Delivery"]
            first = self.path.startswith("/flaky/") and delivery not in mine.failed
            mine.failed.add(delivery)
            status = 500 if first else 204
            mine.got.append(Received(self.path, dict(self.headers.items()), body, status))
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture(scope="module")
def hooks() -> Iterator[Hooks]:
    box: list[Hooks] = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), receiver(box))
    box.append(Hooks(f"http://127.0.0.1:{server.server_address[1]}"))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield box[0]
    server.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("warnings") / "home"
    # The sweeper runs every 2 s here; the receiver is on loopback.
    srv = start_server(home, {"TETHER_WEBHOOK_ALLOW_PRIVATE": "true"})
    yield srv
    srv.stop()


def key(server: Server) -> dict[str, str]:
    return {"X-API-Key": server.key}


def create(server: Server, **body: Any) -> dict[str, Any]:
    made = httpx.post(f"{server.url}/v1/sessions", json=body, headers=key(server), timeout=120)
    assert made.status_code == 201, made.text
    out: dict[str, Any] = made.json()
    return out


def signed(secret: str, got: Received) -> bool:
    """The README's recipe: HMAC-SHA256 of "<t>.<body>" with the secret, and a fresh t."""
    parts = dict(p.split("=", 1) for p in got.headers["X-Tether-Signature"].split(","))
    mac = hmac.new(secret.encode(), parts["t"].encode() + b"." + got.body, hashlib.sha256)
    fresh = abs(time.time() - int(parts["t"])) < 300
    return fresh and hmac.compare_digest(mac.hexdigest(), parts["v1"])


def events(server: Server, session_id: str, **headers: str) -> httpx.Response:
    return httpx.get(f"{server.url}/v1/sessions/{session_id}/events",
                     headers=headers or key(server), timeout=30)  # fmt: skip


def test_warnings_webhooks_and_the_one_call_extend(server: Server, hooks: Hooks) -> None:
    # A template whose sessions hibernate after 10 s without activity (an admin's, by API).
    template = {"name": "idle10", "display_name": "Idle in 10 s", "idle_timeout": "10s"}
    made = httpx.post(f"{server.url}/api/v1/templates", json=template,
                      headers={"Authorization": f"Bearer {server.key}"})  # fmt: skip
    assert made.status_code == 201, made.text

    ttl = create(server, template="python", ttl_minutes=1, warn_minutes=1,
                 webhook_url=f"{hooks.url}/flaky/ttl")  # fmt: skip
    idle = create(server, template="idle10", webhook_url=f"{hooks.url}/idle")
    assert ttl["webhook_url"] == f"{hooks.url}/flaky/ttl" and ttl["warn_minutes"] == 1
    assert ttl["webhook_secret"].startswith("whsec_") and idle["webhook_secret"]
    assert idle["warn_minutes"] == 5  # TETHER_EXPIRY_WARNING's default
    again = httpx.get(f"{server.url}/v1/sessions/{ttl['id']}", headers=key(server)).json()
    assert again["webhook_url"] == ttl["webhook_url"] and "webhook_secret" not in again
    assert ttl["webhook_secret"] not in server.log.read_text()

    # The TTL's warning: a 500 first, then the same delivery again, signed each time.
    assert wait_for(lambda: len(hooks.to("/flaky/ttl")) >= 2, timeout=40), hooks.got
    first, second = hooks.to("/flaky/ttl")[:2]
    assert first.headers["X-Tether-Delivery"] == second.headers["X-Tether-Delivery"]
    assert second.headers["X-Tether-Event"] == "expiry_warning"
    assert signed(ttl["webhook_secret"], first) and signed(ttl["webhook_secret"], second)
    assert not signed(idle["webhook_secret"], second)
    warning = orjson.loads(second.body)
    deadline = datetime.fromisoformat(warning["deadline"])
    assert warning["type"] == "expiry_warning" and warning["session_id"] == ttl["id"]
    assert warning["reason"] == "ttl"
    assert deadline == datetime.fromisoformat(ttl["expires_at"])
    link = warning["extend"]
    assert link["url"] == f"{server.url}/v1/sessions/{ttl['id']}/extend"

    # On the session's events, for its owner only.
    listed = events(server, ttl["id"])
    assert listed.status_code == 200, listed.text
    shown = listed.json()["events"]
    assert [e["id"] for e in shown] == [warning["id"]] and listed.json()["next_cursor"] is None
    assert shown[0]["reason"] == "ttl" and shown[0]["extend"]["url"] == link["url"]
    other = other_user(server)
    assert events(server, ttl["id"], Authorization=f"Bearer {other}").status_code == 404

    # The token is a credential for that extend and nothing else.
    bearer = {"Authorization": f"Bearer {link['token']}"}
    assert httpx.get(f"{server.url}/v1/sessions/{ttl['id']}", headers=bearer).status_code == 401
    assert events(server, ttl["id"], **bearer).status_code == 401
    elsewhere = httpx.post(f"{server.url}/v1/sessions/{idle['id']}/extend",
                           json={"minutes": 10}, headers=bearer)  # fmt: skip
    assert elsewhere.status_code == 401
    extended = httpx.post(link["url"], json={"minutes": 10}, headers=bearer)
    assert extended.status_code == 200, extended.text
    assert datetime.fromisoformat(extended.json()["expires_at"]) == deadline + timedelta(minutes=10)

    # The idle timeout's warning, as it stands then.
    assert wait_for(lambda: hooks.to("/idle"), timeout=30), hooks.got
    idle_warning = orjson.loads(hooks.to("/idle")[0].body)
    assert idle_warning["reason"] == "idle" and idle_warning["session_id"] == idle["id"]
    assert signed(idle["webhook_secret"], hooks.to("/idle")[0])
    assert datetime.fromisoformat(idle_warning["deadline"]) < datetime.fromisoformat(
        idle["expires_at"]
    )
    # It hibernates at that deadline; the warning was for it.
    assert wait_for(lambda: status(server, idle["id"]) == "hibernated", timeout=30)

    # Acknowledged: never sent again (the sweeper has passed many times since).
    assert len(hooks.to("/flaky/ttl")) == 2
    acknowledged = [r.headers["X-Tether-Delivery"] for r in hooks.got if r.status == 204]
    assert len(acknowledged) == len(set(acknowledged))


def status(server: Server, session_id: str) -> str:
    got = httpx.get(f"{server.url}/v1/sessions/{session_id}", headers=key(server))
    return str(got.json()["status"])


def other_user(server: Server) -> str:
    """Another user's JWT."""
    admin = {"Authorization": f"Bearer {server.key}"}
    user = {"username": "mallory", "password": "pw-mallory-1", "email": "m@example.com"}
    made = httpx.post(f"{server.url}/api/v1/users", json=user, headers=admin)
    assert made.status_code == 201, made.text
    login = httpx.post(f"{server.url}/api/v1/auth/login", json=user)
    return str(login.json()["token"])


def test_the_metadata_server_is_never_a_webhook(server: Server) -> None:
    for url in ("http://169.254.169.254/computeMetadata/v1/", "http://metadata.google.internal/"):
        made = httpx.post(f"{server.url}/v1/sessions", headers=key(server),
                          json={"template": "python", "webhook_url": url})  # fmt: skip
        assert made.status_code == 400 and "webhook_url" in made.json()["detail"], made.text


def test_a_webhook_url_is_checked(server: Server) -> None:
    for url in ("ftp://example.com/", "http://user:pw@example.com/", "https://x/" + "a" * 2100):
        made = httpx.post(f"{server.url}/v1/sessions", headers=key(server),
                          json={"template": "python", "webhook_url": url})  # fmt: skip
        assert made.status_code in (400, 422) and "webhook_url" in made.text, made.text
