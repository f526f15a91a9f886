"""Access that ends when it is revoked: for every way a credential can be ended (a user
deactivated, deleted, made again under the same name; a key revoked or expired; a token signed
out or expired), an API key and a JWT are refused at once on OnMemOS, StreamSpace and the
relay, and a terminal already open with them is cut."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import httpx
import jwt
import pytest

from tests.e2e.conftest import Server, start_server
from tests.waiting import wait_for

API = "/api/v1"
PASSWORD = "a-long-password"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("revocation") / "home",
                       {"TETHER_RATE_LIMITS": "login=1000,create=1000,api=10000"})  # fmt: skip
    yield srv
    srv.stop()


def admin(server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"X-API-Key": server.key}, timeout=60)


def make_user(server: Server, name: str) -> str:
    """A new user, signed in: their JWT."""
    with admin(server) as a:
        made = a.post(f"{API}/users", json={"username": name, "password": PASSWORD})
        assert made.status_code == 201, made.text
    login = httpx.post(f"{server.url}{API}/auth/login", timeout=30,
                       json={"username": name, "password": PASSWORD})  # fmt: skip
    assert login.status_code == 200, login.text
    return str(login.json()["token"])


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


class Holder:
    """One user's credential of a kind, a running session of theirs, and a terminal open on it."""

    def __init__(self, server: Server, kind: str, name: str, **key: Any) -> None:
        self.server, self.name = server, name
        self.token = make_user(server, name)
        self.key_id = ""
        if kind == "key":
            made = httpx.post(f"{server.url}{API}/api-keys", json={"name": "t", **key},
                              headers=bearer(self.token), timeout=30).json()  # fmt: skip
            self.credential, self.key_id = made["key"], made["id"]
        else:
            self.credential = self.token
        with httpx.Client(base_url=server.url, headers=bearer(self.credential), timeout=60) as c:
            created = c.post("/v1/sessions", json={"template": "shell"})
            assert created.status_code == 201, created.text
            self.session = created.json()["id"]

    def answers(self) -> dict[str, int]:
        """What each surface answers the credential now."""
        url, h = self.server.url, bearer(self.credential)
        return {
            "onmemos": httpx.get(f"{url}/v1/sessions", headers=h, timeout=30).status_code,
            "onmemos x-api-key": httpx.get(f"{url}/v1/sessions", timeout=30,
                                           headers={"X-API-Key": self.credential}).status_code,
            "streamspace": httpx.get(f"{url}{API}/sessions", headers=h, timeout=30).status_code,
            "relay": asyncio.run(self._terminal_status()),
        }  # fmt: skip

    def _ws_url(self) -> str:
        return f"{self.server.url.replace('http', 'ws', 1)}/v1/sessions/{self.session}/terminal"

    async def _terminal_status(self) -> int:
        async with aiohttp.ClientSession() as client:
            try:
                ws = await client.ws_connect(self._ws_url(), headers=bearer(self.credential))
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status
            await ws.close()
            return 101

    async def open_terminal(self) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
        client = aiohttp.ClientSession()
        ws = await client.ws_connect(self._ws_url(), headers=bearer(self.credential))
        await ws.send_bytes(b"echo open\n")
        return client, ws


def revoke(server: Server, how: str, holder: Holder) -> None:
    with admin(server) as a:
        if how == "deactivate":
            assert a.patch(f"{API}/users/{holder.name}", json={"active": False}).status_code == 200
        elif how in ("delete", "recreate"):
            assert a.delete(f"{API}/users/{holder.name}").status_code == 204
            if how == "recreate":
                made = a.post(f"{API}/users", json={"username": holder.name, "password": PASSWORD})
                assert made.status_code == 201
        elif how == "password":
            changed = a.patch(f"{API}/users/{holder.name}", json={"password": "another-password"})
            assert changed.status_code == 200
        elif how == "revoke" and holder.key_id:
            gone = httpx.delete(f"{server.url}{API}/api-keys/{holder.key_id}",
                                headers=bearer(holder.token), timeout=30)  # fmt: skip
            assert gone.status_code == 204
        elif how == "revoke":  # a JWT is revoked by signing out with it
            out = httpx.post(f"{server.url}{API}/auth/logout", headers=bearer(holder.token),
                             timeout=30)  # fmt: skip
            assert out.status_code == 200


ENDINGS = ["deactivate", "delete", "recreate", "revoke"]


@pytest.mark.parametrize("kind", ["key", "jwt"])
@pytest.mark.parametrize("how", ENDINGS)
def test_an_ended_credential_is_refused_everywhere_at_once(
    server: Server, kind: str, how: str
) -> None:
    holder = Holder(server, kind, f"{how}-{kind}")
    assert holder.answers() == {
        "onmemos": 200, "onmemos x-api-key": 200 if kind == "key" else 401,
        "streamspace": 200, "relay": 101,
    }  # fmt: skip

    async def cut_while_open() -> None:
        client, ws = await holder.open_terminal()
        try:
            await asyncio.get_running_loop().run_in_executor(None, revoke, server, how, holder)
            deadline = time.monotonic() + 30  # the relay looks every 2 s
            while time.monotonic() < deadline:
                msg = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                aiohttp.WSMsgType.ERROR):  # fmt: skip
                    return
            pytest.fail("the open terminal was not cut")
        finally:
            await client.close()

    asyncio.run(cut_while_open())
    answers = holder.answers()
    assert set(answers.values()) == {401}, answers


def test_an_expired_key_and_an_expired_token_are_refused(server: Server) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
    holder = Holder(server, "key", "expiring", expires_at=soon)
    assert holder.answers()["streamspace"] == 200
    assert wait_for(lambda: holder.answers()["streamspace"] == 401, timeout=30)
    assert set(holder.answers().values()) == {401}
    # A JWT past its expiry, signed with the server's own secret.
    claims = jwt.decode(holder.token, options={"verify_signature": False})
    secret = (server.home / "jwt-secret").read_text().strip()
    past = int(time.time()) - 10
    stale = jwt.encode({**claims, "iat": past - 60, "exp": past}, secret, algorithm="HS256")
    holder.credential = stale
    assert set(holder.answers().values()) == {401}


def test_a_read_only_key_reads_and_changes_nothing(server: Server) -> None:
    holder = Holder(server, "jwt", "reader")
    made = httpx.post(f"{server.url}{API}/api-keys", json={"name": "ro", "scope": "read"},
                      headers=bearer(holder.token), timeout=30).json()  # fmt: skip
    assert made["scope"] == "read" and made["key"].startswith("tether_")
    h = bearer(made["key"])
    with httpx.Client(base_url=server.url, headers=h, timeout=60) as c:
        assert c.get("/v1/sessions").status_code == 200
        assert c.get(f"{API}/sessions/{holder.session}").status_code == 200
        refused = c.post(f"/v1/sessions/{holder.session}/execute", json={"command": "true"})
        assert refused.status_code == 403 and "read-only" in refused.json()["detail"]
        assert c.delete(f"{API}/sessions/{holder.session}").status_code == 403
        assert c.post(f"{API}/api-keys", json={}).status_code == 403
    holder.credential = made["key"]
    assert holder.answers()["relay"] == 403  # a terminal writes


def test_keys_are_listed_without_their_secret_and_only_to_their_owner(server: Server) -> None:
    alice, bob = Holder(server, "key", "key-alice"), make_user(server, "key-bob")
    listed = httpx.get(f"{server.url}{API}/api-keys", headers=bearer(alice.token),
                       timeout=30).json()["api_keys"]  # fmt: skip
    assert [k["id"] for k in listed] == [alice.key_id]
    assert "key" not in listed[0] and alice.credential not in str(listed)
    assert httpx.get(f"{server.url}{API}/api-keys", headers=bearer(bob),
                     timeout=30).json()["api_keys"] == []  # fmt: skip
    stolen = httpx.delete(f"{server.url}{API}/api-keys/{alice.key_id}", headers=bearer(bob),
                          timeout=30)  # fmt: skip
    assert stolen.status_code == 404
    assert alice.answers()["streamspace"] == 200
