"""Openctrol's REST surface on an in-process stack (the origin `tether up` serves, SQLite store,
local bus; and the same on the Firestore and Pub/Sub emulators), driven as its real clients
drive it, with a small fake desktop agent on the bus answering the contract's `desktop`
commands (/work/notes/openctrol-design.md) from a dict.

The REST calls are made the way the Home Assistant integration makes them: repo
Kaando2000/openctrol, commit 447234106f672a314f8015a4367ffc3f8c1d08a9,
`homeassistant/custom_components/openctrol/api.py` (aiohttp, `X-Openctrol-Key`, `json=` bodies
in PascalCase, `ClientTimeout(total=10)`, exactly 200 and `await resp.json()`), at the base URL
its config flow makes of host `<tether>/openctrol/<agent>` and port 443 (`.../<agent>:443`).
The agent's own test script (`Agent/tools/api-tests/test_openctrol_comprehensive.py`, same
commit) creates a session in snake_case.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from tether import bootstrap
from tether.bootstrap import Services
from tether.core.models import Principal, Role, utcnow
from tether.core.ports import Message
from tether.errors import Forbidden, Invalid, NotFound, RateLimited, Unauthenticated
from tether.origin.server import Origin
from tether.service import desktops
from tether.settings import Settings

from tests.bodies import sans_id
from tests.conftest import emulator
from tests.e2e.conftest import serving

TIMEOUT = aiohttp.ClientTimeout(total=10)  # api.py's, on every call
HA_IDS = ["home-assistant", "test-script"]
SHORT_WAIT = 2.0  # seconds the stack's service waits for an agent's answer


def details(**over: Any) -> dict[str, Any]:
    """A desktop agent's heartbeat details (the contract's `openctrol` block)."""
    said: dict[str, Any] = {
        "version": "1.0.0",
        "started_at": (utcnow() - timedelta(seconds=120)).isoformat(),
        "tunnel": True,
        "remote_desktop": {"is_running": True, "last_frame_at": utcnow().isoformat(),
                           "state": "desktop", "desktop_state": "desktop", "degraded": False},
        "monitors": [{"id": "DISPLAY1", "name": "Primary Display", "width": 1280, "height": 800,
                      "is_primary": True}],
        "current_monitor_id": "DISPLAY1",
        "allowed_ha_ids": HA_IDS,
        "max_sessions": 50,
    }  # fmt: skip
    said.update(over)
    return {"openctrol": said}


@dataclass
class FakeDesktop:
    """A desktop agent as the contract has it: `desktop` commands in, `command_result` events
    out (a refusal it knows the kind of as a successful result carrying `failure`)."""

    services: Services
    agent_id: str
    seen: list[dict[str, Any]] = field(default_factory=list)
    monitors: list[dict[str, Any]] = field(default_factory=lambda: [
        {"id": "DISPLAY1", "name": "Primary Display", "width": 1280, "height": 800,
         "is_primary": True},
        {"id": "DISPLAY2", "name": "Side", "width": 1024, "height": 768, "is_primary": False},
    ])  # fmt: skip
    current: str = "DISPLAY1"
    default: str = "sink-speakers"
    devices: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "sink-speakers": {"name": "Speakers", "volume": 0.5, "muted": False},
        "sink-hdmi": {"name": "HDMI", "volume": 1.0, "muted": True},
    })  # fmt: skip
    apps: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "app-1": {"name": "Music", "volume": 0.8, "muted": False, "output_device_id": ""},
    })  # fmt: skip

    def beat(self, **over: Any) -> None:
        beat = {"type": "heartbeat", "agent_id": self.agent_id, "platform": "desktop"}
        self.services.events.handle({**beat, "details": details(**over)})

    def start(self) -> None:
        self.beat()
        self.sub = self.services.bus.subscribe_commands(self.agent_id, self.on_command)

    def on_command(self, msg: Message) -> None:
        data = msg.data
        if data.get("type") != "command":
            return  # register_ack and the like
        payload = dict(data.get("data") or {})
        self.seen.append(payload)
        try:
            result = self.run(payload)
        except KeyError as missing:
            result = {"failure": {"kind": "not_found", "message": f"{missing.args[0]} not found",
                                  "field": "device_id"}}  # fmt: skip
        event = {"type": "command_result", "agent_id": self.agent_id,
                 "command_id": data["command_id"], "epoch": data["epoch"],
                 "status": "completed", "result": result, "error": None}  # fmt: skip
        if data.get("reply_to"):
            event["reply_to"] = data["reply_to"]
        self.services.bus.publish_event(event)

    def run(self, p: dict[str, Any]) -> dict[str, Any]:
        action = p["action"]
        if action == "monitors":
            return {"monitors": self.monitors, "current_monitor_id": self.current}
        if action == "monitor_select":
            if p["monitor_id"] not in {m["id"] for m in self.monitors}:
                said = f"Monitor ID '{p['monitor_id']}' not found"
                return {"failure": {"kind": "not_found", "field": "monitor_id", "message": said}}
            self.current = p["monitor_id"]
            return {"monitor_id": self.current}
        if action == "audio_state":
            devices = [{"id": k, **v, "is_default": k == self.default}
                       for k, v in self.devices.items()]  # fmt: skip
            sessions = [{"id": k, **v} for k, v in self.apps.items()]
            return {"default_output_device_id": self.default, "devices": devices,
                    "sessions": sessions}  # fmt: skip
        if action == "audio_device":
            device = self.devices[p["device_id"]]
            for key in ("volume", "muted"):
                if p.get(key) is not None:
                    device[key] = p[key]
            if p.get("set_default"):
                self.default = p["device_id"]
            return {}
        if action == "audio_default":
            self.devices[p["device_id"]]
            self.default = p["device_id"]
            return {}
        if action == "audio_session":
            app = self.apps[p["session_id"]]
            for key in ("volume", "muted", "output_device_id"):
                if p.get(key) is not None:
                    app[key] = p[key]
            return {}
        if action == "restart":
            return {"status": "ok", "action": "restart"}
        if action == "shutdown":  # as an agent with no shutdown command configured answers
            said = "power action 'shutdown' is not configured"
            return {"failure": {"kind": "unsupported", "field": None, "message": said}}
        if action == "end_session":
            return {}
        return {"failure": {"kind": "invalid", "message": f"unknown {action}", "field": "action"}}


@dataclass
class Stack:
    url: str
    services: Services
    admin: str  # API keys
    alice: str
    bob: str
    desk: FakeDesktop  # A1, alice's
    limited: FakeDesktop  # A-one, alice's, one session at most
    alice_principal: Principal


@pytest.fixture(scope="module", params=["embedded", "cloud"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("openctrol") / "home"
    settings = Settings(home=home, trusted_proxies=("10.9.8.7",))
    if request.param == "cloud":
        emulator("FIRESTORE_EMULATOR_HOST")
        emulator("PUBSUB_EMULATOR_HOST")
        settings = Settings(home=home, trusted_proxies=("10.9.8.7",), store="firestore",
                            bus="pubsub", project=f"openctrol-{uuid.uuid4().hex[:8]}")  # fmt: skip
    services = bootstrap.build(settings)
    services.desktops.answer_wait = SHORT_WAIT  # one test waits it out
    bootstrap.install(services)
    events = services.bus.subscribe_events(
        "control-plane", lambda m: services.events.handle(m.data)
    )
    admin_key = services.auth.add_key(services.auth.ensure_user("admin", Role.ADMIN).id)
    alice = services.auth.ensure_user("alice", Role.USER)
    services.auth.ensure_user("bob", Role.USER)
    alice_key, bob_key = services.auth.add_key("alice"), services.auth.add_key("bob")
    owner = Principal.of(alice)
    desk, limited = FakeDesktop(services, "A1"), FakeDesktop(services, "A-one")
    for agent in (desk, limited):
        agent.start()
        services.desktops.claim(owner, agent.agent_id, f"tunnel-{agent.agent_id}")
    limited.beat(max_sessions=1)
    # Registered and beating, never answering (no subscription): "silent".
    FakeDesktop(services, "silent").beat()
    services.desktops.claim(owner, "silent", "tunnel-silent")
    # Beating, but its tunnel to the relay is down: the relay's connection came and went.
    FakeDesktop(services, "untunnelled").beat(tunnel=False)
    services.desktops.claim(owner, "untunnelled", "tunnel-gone")
    services.desktops.disconnected("untunnelled", "tunnel-gone")
    origin = Origin()
    with serving(origin) as url:
        yield Stack(url, services, admin_key, alice_key, bob_key, desk, limited, owner)
    for agent in (desk, limited):
        agent.sub.close()
    events.close()
    bootstrap.install(None)
    services.close()


def base(stack: Stack, agent: str = "A1", port: bool = True) -> str:
    """The integration's base URL: host `<tether>/openctrol/<agent>`, port 443 appended."""
    return f"{stack.url}/openctrol/{agent}{':443' if port else ''}"


def call(
    method: str, url: str, key: str | None, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any, str]:
    """One request as api.py makes it: the key header when set, JSON for POST, 10 s."""

    async def go() -> tuple[int, Any, str]:
        sent = {"X-Openctrol-Key": key} if key is not None else {}
        if method == "POST":
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                method,
                url,
                headers=sent,
                timeout=TIMEOUT,
                **({"json": body} if method == "POST" else {}),
            ) as resp,  # fmt: skip
        ):
            return resp.status, await resp.json(), resp.headers["Content-Type"]

    return asyncio.run(go())


def ok(method: str, url: str, key: str, body: Any = None) -> Any:
    status, data, ctype = call(method, url, key, body)
    assert status == 200, data
    assert ctype.startswith("application/json")
    return data


# -- health and credentials -------------------------------------------------------------------


def test_health_is_public_at_the_integrations_base_url_with_its_port(stack: Stack) -> None:
    for url, key in ((base(stack), stack.alice), (base(stack), None),
                     (base(stack, port=False), "wrong key")):  # fmt: skip
        h = ok("GET", f"{url}/api/v1/health", key)  # type: ignore[arg-type]
        assert h["agent_id"] == "A1" and h["version"] == "1.0.0"
        assert 100 <= h["uptime_seconds"] <= 200 and isinstance(h["active_sessions"], int)
        rd = h["remote_desktop"]
        assert rd["is_running"] is True and rd["degraded"] is False  # HA's "online"
        assert rd["state"] == rd["desktop_state"] == "desktop" and rd["last_frame_at"]


def test_health_of_an_agent_whose_tunnel_is_down_is_degraded_and_unknown_is_404(
    stack: Stack,
) -> None:
    h = ok("GET", f"{base(stack, 'untunnelled')}/api/v1/health", stack.alice)
    assert h["remote_desktop"]["is_running"] is False and h["remote_desktop"]["degraded"] is True
    assert h["remote_desktop"]["state"] == "unknown"
    status, body, _ = call("GET", f"{base(stack, 'nobody')}/api/v1/health", None)
    assert status == 404 and body["error"] == "not_found"


def test_a_missing_or_wrong_key_is_401_in_the_documents_shape(stack: Stack) -> None:
    expected = {"error": "unauthorized", "details": "Missing or invalid credentials"}
    for key in (None, "nope", ""):
        status, body, _ = call("GET", f"{base(stack)}/api/v1/rd/monitors", key)
        assert (status, sans_id(body)) == (401, expected)
    # X-Openctrol-Key wins when present, even over a good Bearer.
    status, _, _ = call("GET", f"{base(stack)}/api/v1/rd/monitors", "nope",
                        headers={"Authorization": f"Bearer {stack.alice}"})  # fmt: skip
    assert status == 401
    bearer = {"Authorization": f"Bearer {stack.alice}"}
    assert call("GET", f"{base(stack)}/api/v1/rd/monitors", None, headers=bearer)[0] == 200
    # A refused key is a 401 whatever the body.
    assert call("POST", f"{base(stack)}/api/v1/power", "nope", {"x": 1})[0] == 401


def test_another_users_agent_is_404_as_an_unknown_one_and_an_admin_may_use_it(
    stack: Stack,
) -> None:
    for agent in ("A1", "nobody"):
        status, body, _ = call("GET", f"{base(stack, agent)}/api/v1/rd/monitors", stack.bob)
        assert status == 404 and body["error"] == "not_found", body
    status, _, _ = call("POST", f"{base(stack)}/api/v1/sessions/desktop", stack.bob,
                        {"HaId": "home-assistant", "TtlSeconds": 900})  # fmt: skip
    assert status == 404
    assert ok("GET", f"{base(stack)}/api/v1/rd/monitors", stack.admin)["monitors"]
    with pytest.raises(Forbidden):
        bob = Principal.of(stack.services.auth.users.get("bob"))
        stack.services.desktops.claim(bob, "A1", "tunnel-bob")
    stack.services.desktops.claim(stack.alice_principal, "A1", "tunnel-A1")  # the owner again


# -- sessions ---------------------------------------------------------------------------------


def _expires(data: dict[str, Any]) -> float:
    return (datetime.fromisoformat(data["expires_at"]) - utcnow()).total_seconds()


def test_create_session_answers_200_with_an_absolute_websocket_url_in_both_casings(
    stack: Stack,
) -> None:
    made = ok(
        "POST",
        f"{base(stack)}/api/v1/sessions/desktop",
        stack.alice,
        {"HaId": "home-assistant", "TtlSeconds": 3600},
    )  # fmt: skip (ws.py's)
    assert made["sessionId"] == made["session_id"] and made["expiresAt"] == made["expires_at"]
    assert made["webSocketUrl"] == made["websocket_url"]
    url = urlsplit(made["websocket_url"])
    assert url.scheme == "ws" and url.netloc == urlsplit(stack.url).netloc
    assert url.path == "/openctrol/A1/ws/desktop"  # the clean agent id, no :443
    query = parse_qs(url.query)
    assert query["sess"] == [made["session_id"]] and len(query["token"][0]) >= 40
    assert 3590 <= _expires(made) <= 3600
    stored = stack.services.desktops.sessions.get(made["session_id"])
    assert query["token"][0] not in stored.model_dump_json()  # kept as its hash only
    # The agent's test script's snake_case, and a float TTL as HA's number selector gives.
    script = ok("POST", f"{base(stack, port=False)}/api/v1/sessions/desktop", stack.alice,
                {"ha_id": "test-script", "ttl_seconds": 60})  # fmt: skip
    assert 50 <= _expires(script) <= 60
    floated = ok("POST", f"{base(stack)}/api/v1/sessions/desktop", stack.alice,
                 {"haId": "home-assistant", "ttlSeconds": 900.0})  # fmt: skip
    assert 890 <= _expires(floated) <= 900
    default = ok("POST", f"{base(stack)}/api/v1/sessions/desktop", stack.alice,
                 {"HaId": "home-assistant"})  # fmt: skip
    assert 890 <= _expires(default) <= 900


def test_ttl_is_clamped_to_60_3600(stack: Stack) -> None:
    for ttl, low, high in ((5, 50, 60), (99999, 3590, 3600), (0.5, 50, 60)):
        made = ok("POST", f"{base(stack)}/api/v1/sessions/desktop", stack.alice,
                  {"HaId": "home-assistant", "TtlSeconds": ttl})  # fmt: skip
        assert low <= _expires(made) <= high, ttl


def test_websocket_url_is_wss_behind_a_trusted_proxy_saying_https(stack: Stack) -> None:
    """The origin's peer is 127.0.0.1, no trusted proxy: a forged X-Forwarded-Proto is ignored.
    A request from the trusted proxy (its address in the environ) believes it."""
    status, made, _ = call("POST", f"{base(stack)}/api/v1/sessions/desktop", stack.alice,
                           {"HaId": "home-assistant"}, {"X-Forwarded-Proto": "https"})  # fmt: skip
    assert status == 200 and made["websocket_url"].startswith("ws://")
    from tether.surfaces import openctrol
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    env = EnvironBuilder(
        path="/openctrol/A1:443/api/v1/sessions/desktop", method="POST",
        json={"HaId": "home-assistant"}, base_url="http://tether.example",
        headers={"X-Openctrol-Key": stack.alice, "X-Forwarded-Proto": "https"},
        environ_overrides={"REMOTE_ADDR": "10.9.8.7"},
    ).get_environ()  # fmt: skip
    answer = openctrol.handle(Request(env))
    assert answer.status_code == 200, answer.get_data()
    assert answer.json["websocket_url"].startswith(  # type: ignore[index]
        "wss://tether.example/openctrol/A1/ws/desktop?sess="
    )


def test_an_ha_id_not_allowed_is_401_and_an_empty_list_denies_all(stack: Stack) -> None:
    status, body, _ = call("POST", f"{base(stack)}/api/v1/sessions/desktop", stack.alice,
                           {"HaId": "kitchen", "TtlSeconds": 900})  # fmt: skip
    assert status == 401
    assert sans_id(body) == {
        "error": "unauthorized",
        "details": "HA ID 'kitchen' is not allowed on this agent",
    }


def test_the_session_limit_answers_with_the_text_ha_looks_for(stack: Stack) -> None:
    url = f"{base(stack, 'A-one')}/api/v1/sessions/desktop"
    first = ok("POST", url, stack.alice, {"HaId": "home-assistant", "TtlSeconds": 900})
    status, body, _ = call("POST", url, stack.alice, {"HaId": "home-assistant", "TtlSeconds": 900})
    assert status == 409 and body["error"] == "session_creation_failed"
    assert "Maximum sessions limit (1) reached" in body["details"]
    health = ok("GET", f"{base(stack, 'A-one')}/api/v1/health", stack.alice)
    assert health["active_sessions"] == 1
    # Ended, it no longer counts.
    end = f"{url}/{first['session_id']}/end"
    assert ok("POST", end, stack.alice, {}) == {"status": "ok"}
    ok("POST", url, stack.alice, {"HaId": "home-assistant", "TtlSeconds": 900})


def test_an_agent_whose_tunnel_is_down_cannot_open_sessions(stack: Stack) -> None:
    status, body, _ = call("POST", f"{base(stack, 'untunnelled')}/api/v1/sessions/desktop",
                           stack.alice, {"HaId": "home-assistant"})  # fmt: skip
    assert status == 503 and body["error"] == "service_unavailable"


def test_end_marks_it_ended_tells_the_agent_and_the_token_no_longer_admits(stack: Stack) -> None:
    made = ok("POST", f"{base(stack)}/api/v1/sessions/desktop", stack.alice,
              {"HaId": "home-assistant", "TtlSeconds": 900})  # fmt: skip
    sid, token = made["session_id"], parse_qs(urlsplit(made["websocket_url"]).query)["token"][0]
    desktops = stack.services.desktops
    for _ in range(3):  # reusable while the session lives (HA reconnects with the same URL)
        assert desktops.admit("A1", sid, token, "192.0.2.1").id == sid
    with pytest.raises(NotFound):
        desktops.admit("A-one", sid, token, "192.0.2.1")  # another agent's path
    # Another user's end (of their own agent, or of this session) changes nothing.
    assert call("POST", f"{base(stack)}/api/v1/sessions/desktop/{sid}/end", stack.bob)[0] == 404
    assert ok("POST", f"{base(stack)}/api/v1/sessions/desktop/{sid}/end", stack.alice) == {
        "status": "ok"  # no body at all, as HA's end may send
    }
    deadline = time.monotonic() + 10
    ended = {"action": "end_session", "session_id": sid}
    while ended not in stack.desk.seen and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ended in stack.desk.seen
    record = desktops.sessions.get(sid)
    assert record.ended_at is not None and not record.open
    with pytest.raises(Unauthenticated, match="Invalid or expired session token"):
        desktops.admit("A1", sid, token, "192.0.2.1")
    # Ending again, or an unknown id: 200, nothing happens.
    assert ok("POST", f"{base(stack)}/api/v1/sessions/desktop/{sid}/end", stack.alice, {})
    assert ok("POST", f"{base(stack)}/api/v1/sessions/desktop/{uuid.uuid4()}/end", stack.alice)


def test_admit_refuses_a_client_after_five_failures_a_minute(stack: Stack) -> None:
    made = ok("POST", f"{base(stack)}/api/v1/sessions/desktop", stack.alice,
              {"HaId": "home-assistant"})  # fmt: skip
    sid, token = made["session_id"], parse_qs(urlsplit(made["websocket_url"]).query)["token"][0]
    desktops = stack.services.desktops
    with pytest.raises(Invalid, match="Session ID and token are required"):
        desktops.admit("A1", sid, "", "198.51.100.9")
    client = f"198.51.100.{uuid.uuid4().int % 200}"
    # Successes are not counted; failures are.
    for _ in range(6):
        desktops.admit("A1", sid, token, client)
    for _ in range(5):
        with pytest.raises(Unauthenticated):
            desktops.admit("A1", sid, "wrong", client)
    with pytest.raises(RateLimited):
        desktops.admit("A1", sid, token, client)  # even the right token, this minute
    assert desktops.admit("A1", sid, token, "203.0.113.1").id == sid  # another client


def test_ids_that_cannot_be_documents_are_unknown_not_errors(stack: Stack) -> None:
    """Ids name store documents: one that could not be (a slash, a leading dot) is an unknown
    session or agent, on every store, never a crash of it."""
    for sess in ("a/b", "..", ".x", "x" * 300):
        with pytest.raises(Unauthenticated):
            stack.services.desktops.admit("A1", sess, "token", f"192.0.2.{len(sess) % 200}")
    for agent in ("..", "_x", "x" * 300):
        status, body, _ = call("GET", f"{base(stack, agent)}/api/v1/health", stack.alice)
        assert status == 404 and body["error"] == "not_found", (agent, body)
    with pytest.raises(Invalid):
        stack.services.desktops.claim(stack.alice_principal, ".hidden", "tunnel-x")


# -- power, audio, monitors -------------------------------------------------------------------


def test_power(stack: Stack) -> None:
    url = f"{base(stack)}/api/v1/power"
    assert ok("POST", url, stack.alice, {"action": "restart"}) == {
        "status": "ok",
        "action": "restart",
    }
    assert (
        ok("POST", url, stack.alice, {"action": "restart", "force": False})["action"] == "restart"
    )
    assert {"action": "restart", "force": False} in stack.desk.seen
    status, body, _ = call("POST", url, stack.alice, {"action": "wol"})
    assert (status, body["details"]) == (400, "Wake-on-LAN (wol) is not supported")
    for bad in ({"action": "reboot"}, {}, {"action": 5}, {"action": "restart", "force": "yes"}):
        status, body, _ = call("POST", url, stack.alice, bad)
        assert status == 400 and body["error"] == "invalid_request", (bad, body)
        assert ("force" if "force" in bad else "action") in body["details"], (bad, body)
    status, body, _ = call("POST", url, stack.alice, {"Action": "shutdown"})
    assert status == 503 and body["error"] == "service_unavailable"
    assert "not configured" in body["details"]


def test_bad_json_and_wrong_types_are_400s_naming_the_field(stack: Stack) -> None:
    async def raw() -> tuple[int, Any]:
        async with aiohttp.ClientSession() as session, session.post(
            f"{base(stack)}/api/v1/audio/master", data=b"{not json",
            headers={"X-Openctrol-Key": stack.alice, "Content-Type": "application/json"},
        ) as resp:  # fmt: skip
            return resp.status, await resp.json()

    status, body = asyncio.run(raw())
    assert (status, sans_id(body)) == (400, {"error": "invalid_request",
                                        "details": "Request body is not valid JSON"})  # fmt: skip
    for path, body, named in (
        ("audio/master", {"volume": "loud"}, "volume"),
        ("audio/master", {"volume": 101}, "volume"),
        ("audio/master", {"muted": 1}, "muted"),
        ("audio/device", {"DeviceId": "sink-hdmi", "Volume": 150.0}, "Volume"),
        ("audio/device", {"device_id": "sink-hdmi", "volume": 1.5}, "volume"),
        ("audio/device", {"Volume": 10}, "device_id"),
        ("audio/session", {"session_id": "app-1", "volume": 2}, "volume"),
        ("rd/monitor", {"MonitorId": 3}, "MonitorId"),
        ("sessions/desktop", {"HaId": "home-assistant", "TtlSeconds": "900"}, "TtlSeconds"),
        ("sessions/desktop", {"TtlSeconds": 900}, "ha_id"),
    ):
        status, answer, _ = call("POST", f"{base(stack)}/api/v1/{path}", stack.alice, body)
        assert status == 400 and answer["error"] == "invalid_request", (path, body, answer)
        assert named in answer["details"], (path, body, answer)


def test_audio_status_and_state(stack: Stack) -> None:
    status = ok("GET", f"{base(stack)}/api/v1/audio/status", stack.alice)
    speakers = stack.desk.devices["sink-speakers"]
    assert status["master"] == {"volume": speakers["volume"] * 100, "muted": speakers["muted"]}
    by_id = {d["id"]: d for d in status["devices"]}
    assert by_id["sink-speakers"]["is_default"] is by_id["sink-speakers"]["isDefault"] is True
    assert by_id["sink-hdmi"]["volume"] == stack.desk.devices["sink-hdmi"]["volume"] * 100
    state = ok("GET", f"{base(stack)}/api/v1/audio/state", stack.alice)
    assert state["default_output_device_id"] == state["defaultOutputDeviceId"] == "sink-speakers"
    device = next(d for d in state["devices"] if d["id"] == "sink-speakers")
    assert device["volume"] == speakers["volume"] and device["isDefault"] is True
    assert state["sessions"][0]["output_device_id"] == state["sessions"][0]["outputDeviceId"] == ""


def test_audio_writes_in_the_integrations_and_the_documents_forms(stack: Stack) -> None:
    url, devices = f"{base(stack)}/api/v1/audio", stack.desk.devices
    for body in ({"volume": 40.0}, {"muted": True}, {}):
        assert ok("POST", f"{url}/master", stack.alice, body) == {"status": "ok"}
    assert devices["sink-speakers"] == {"name": "Speakers", "volume": 0.4, "muted": True}
    # The integration's device form: 0-100; a missing field is kept.
    ok("POST", f"{url}/device", stack.alice, {"DeviceId": "sink-hdmi", "Volume": 25.0})
    assert devices["sink-hdmi"]["volume"] == 0.25 and devices["sink-hdmi"]["muted"] is True
    ok("POST", f"{url}/device", stack.alice, {"DeviceId": "sink-hdmi", "Muted": False})
    assert devices["sink-hdmi"] == {"name": "HDMI", "volume": 0.25, "muted": False}
    ok("POST", f"{url}/device", stack.alice, {"deviceId": "sink-hdmi", "volume": 60})
    assert devices["sink-hdmi"]["volume"] == 0.6
    # The document's: 0.0-1.0, set_default.
    ok("POST", f"{url}/device", stack.alice,
       {"device_id": "sink-hdmi", "volume": 0.75, "muted": False, "set_default": True})  # fmt: skip
    assert devices["sink-hdmi"]["volume"] == 0.75 and stack.desk.default == "sink-hdmi"
    ok("POST", f"{url}/default", stack.alice, {"DeviceId": "sink-speakers"})
    assert stack.desk.default == "sink-speakers"
    status, body, _ = call("POST", f"{url}/device", stack.alice, {"DeviceId": "nope", "Volume": 5})
    assert status == 404 and body["error"] == "not_found"
    assert call("POST", f"{url}/default", stack.alice, {"DeviceId": "nope"})[0] == 404
    ok("POST", f"{url}/session", stack.alice, {"SessionId": "app-1", "volume": 0.3, "muted": True})
    assert stack.desk.apps["app-1"]["volume"] == 0.3 and stack.desk.apps["app-1"]["muted"] is True


def test_monitors_read_as_the_coordinator_reads_them_and_select(stack: Stack) -> None:
    found = ok("GET", f"{base(stack)}/api/v1/rd/monitors", stack.alice)
    # sensor.py reads Monitors|monitors, IsPrimary|is_primary, CurrentMonitorId|current_monitor_id.
    monitors = found.get("Monitors") or found.get("monitors")
    first = monitors[0]
    assert first["id"] == "DISPLAY1" and first["resolution"] == "1280x800"
    assert first["is_primary"] is first["isPrimary"] is True and first["width"] == 1280
    assert found["current_monitor_id"] == found["currentMonitorId"] == "DISPLAY1"
    chosen = ok("POST", f"{base(stack)}/api/v1/rd/monitor", stack.alice, {"MonitorId": "DISPLAY2"})
    assert chosen == {"status": "ok", "monitor_id": "DISPLAY2", "monitorId": "DISPLAY2"}
    assert (
        ok("GET", f"{base(stack)}/api/v1/rd/monitors", stack.alice)["current_monitor_id"]
        == "DISPLAY2"
    )
    ok("POST", f"{base(stack)}/api/v1/rd/monitor", stack.alice, {"monitor_id": "DISPLAY1"})
    status, body, _ = call("POST", f"{base(stack)}/api/v1/rd/monitor", stack.alice,
                           {"MonitorId": "DISPLAY9"})  # fmt: skip
    assert status == 404 and "DISPLAY9" in body["details"]


def test_an_agent_that_does_not_answer_is_503_within_hass_timeout(stack: Stack) -> None:
    """`silent` beats but never takes commands: 503 once the service's answer wait is over
    (the stack's is short; the default is under the integration's 10 s)."""
    assert desktops.ANSWER_WAIT < 10 and stack.services.desktops.answer_wait == SHORT_WAIT
    started = time.monotonic()
    status, body, _ = call("GET", f"{base(stack, 'silent')}/api/v1/rd/monitors", stack.alice)
    took = time.monotonic() - started
    assert status == 503 and sans_id(body) == {"error": "service_unavailable",
                                      "details": "desktop agent silent did not answer"}  # fmt: skip
    assert SHORT_WAIT <= took < SHORT_WAIT + 1.5


def test_the_openapi_document_lists_the_surface(stack: Stack) -> None:
    doc = ok("GET", f"{stack.url}/openapi/openctrol.json", stack.alice)
    assert "/openctrol/{agent_id}/api/v1/sessions/desktop" in doc["paths"]
    assert doc["paths"]["/openctrol/{agent_id}/api/v1/health"]["get"]["security"] == []
