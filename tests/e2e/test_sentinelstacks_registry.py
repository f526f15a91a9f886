"""SentinelStacks' images and registry against `tether up`: the agents of examples/agents/
built into packages, pushed, searched, pulled and run, with the calls the real clients make
(repo satishgonella2024/sentinelstacks, commit 44bbaf4):

- the API server's registry handlers (internal/api/registry.go): `POST /v1/registry/push`
  with `{name, tag, description, metadata, file}` (the package base64), `POST
  /v1/registry/pull` with `{name, tag}`, `GET /v1/registry/search?query=`; the document's
  `{image_id, tag}` push;
- internal/registry/client/registry_client.go: `Client.Push` (multipart part `package` to
  /api/v1/packages/upload), `Client.Search` (`?q=&limit=`, reads `results`), `Client.Pull`
  (`.../{name}/{version}/download`, reads Content-Disposition), `Client.GetPackageInfo`,
  `Client.ListTags`; `RegistryClient.PushPackage` (/v1/packages/publish), `SearchPackages`
  (reads `items`, `totalCount`), `PullPackage` (`/v1/packages/{name}/{version}?type=`) and
  `GetPackageVersions` (an array).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import aiohttp
import httpx
import pytest
from tether.core.images import build_package, digest_of

from tests.e2e.conftest import Server, start_server
from tests.e2e.test_sentinelstacks_agents import (
    PASSWORD,
    bearer,
    create_agent,
    frames_until,
    make_user,
    ws_url,
)

EXAMPLES = Path(__file__).parents[2] / "examples" / "agents"
MAX_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("registry") / "home"
    srv = start_server(home, {"TETHER_ADMIN_PASSWORD": PASSWORD, "TETHER_RATE_LIMITS": "login=100",
                              "TETHER_REGISTRY_MAX_BYTES": str(MAX_BYTES)})  # fmt: skip
    yield srv
    srv.stop()


def example(name: str) -> bytes:
    """An example agent built as its author would build it: its Sentinelfile and a data file."""
    text = (EXAMPLES / name / "Sentinelfile").read_text()
    return build_package(text, {"data/readme.txt": b"example data\n"}, author="admin")


def test_push_search_pull_and_run_an_image(stack: Server) -> None:
    auth = bearer(stack.key)
    package = example("research-helper")
    body = {"name": "research-helper", "tag": "1.0", "description": "helper",
            "metadata": {"team": "docs"}, "file": base64.b64encode(package).decode()}  # fmt: skip
    pushed = httpx.post(f"{stack.url}/v1/registry/push", json=body, headers=auth)
    assert pushed.status_code == 200, pushed.text
    out = pushed.json()
    assert out["id"] == digest_of(package) and out["status"] == "pushed"
    assert out["name"] == "admin/research-helper" and out["tag"] == "1.0"
    again = httpx.post(f"{stack.url}/v1/registry/push", json=body, headers=auth).json()
    assert again["status"] == "unchanged" and again["id"] == out["id"]  # digests are idempotent

    # The document's push: another tag on the same digest; tags move, digests do not.
    retag = {"image_id": "admin/research-helper:1.0", "tag": "latest"}
    tagged = httpx.post(f"{stack.url}/v1/registry/push", headers=auth, json=retag)
    assert tagged.status_code == 200 and tagged.json()["id"] == out["id"]

    found = httpx.get(f"{stack.url}/v1/registry/search", params={"query": "research"},
                      headers=auth).json()  # fmt: skip
    assert {r["tag"] for r in found["results"]} >= {"1.0", "latest"}
    assert found["results"][0]["base_model"] == "gpt-4o-mini"
    mine = httpx.get(f"{stack.url}/v1/images", headers=auth).json()["images"]
    assert "admin/research-helper:1.0" in {i["ref"] for i in mine}
    one = httpx.get(f"{stack.url}/v1/images/{out['id']}", headers=auth).json()
    assert one["name"] == "admin/research-helper" and "file/write" in one["tools"]

    # Another user pulls it and runs it: the image's prompt, model and tools become the agent's.
    token = make_user(stack, "ada")
    pulled = httpx.post(f"{stack.url}/v1/registry/pull", headers=bearer(token),
                        json={"name": "admin/research-helper", "tag": "1.0"})  # fmt: skip
    assert pulled.status_code == 200 and pulled.json()["image"]["id"] == out["id"]
    agent = create_agent(stack, token, {"image": "admin/research-helper:1.0",
                                        "parameters": {"name": "ada-helper"}})  # fmt: skip
    assert agent["name"] == "ada-helper" and agent["image"] == "admin/research-helper:1.0"
    assert agent["model"] == "gpt-4o-mini" and "Research Helper" in agent["systemPrompt"]

    async def chat() -> list[dict[str, object]]:
        async with (
            aiohttp.ClientSession(headers=bearer(token)) as http,
            http.ws_connect(ws_url(stack, agent["id"], "chat")) as ws,
        ):
            await ws.receive()
            await ws.send_json({"type": "message", "content": "write: notes.md found it"})
            wrote = await frames_until(ws, "stream_end")
            await ws.send_json({"type": "message", "content": "read: notes.md"})
            return wrote + await frames_until(ws, "stream_end")

    results = [f["result"] for f in asyncio.run(chat()) if f["type"] == "tool_result"]
    assert results[0]["success"] is True
    assert results[1] == {"success": True, "exit_code": 0, "content": "found it"}

    # Another user's namespace is not theirs to push into.
    stolen = httpx.post(f"{stack.url}/v1/registry/push", headers=bearer(token),
                        json={**body, "name": "admin/research-helper", "tag": "evil"})  # fmt: skip
    assert stolen.status_code == 403 and set(stolen.json()) == {"error", "request_id"}


def test_the_registry_clients_calls(stack: Server) -> None:
    auth = bearer(stack.key)
    package = example("chat-buddy")
    up = httpx.post(f"{stack.url}/api/v1/packages/upload", headers={**auth,
                    "X-Package-Size": str(len(package))},
                    files={"package": ("chat-buddy.sentinel-pkg", package, "application/gzip")},
                    data={"description": "Package uploaded via CLI", "metadata": "{}"})  # fmt: skip
    assert up.status_code == 201, up.text
    name, version = up.json()["name"], up.json()["version"]
    assert up.json()["digest"] == digest_of(package)

    found = httpx.get(f"{stack.url}/api/v1/packages/search?q=chat&limit=10", headers=auth).json()
    assert any(r["name"] == name for r in found["results"]) and found["total"] >= 1
    escaped = quote(name, safe="")  # Client.Pull path-escapes the name: alice%2Fchat-buddy
    got = httpx.get(f"{stack.url}/api/v1/packages/{escaped}/{version}/download", headers=auth)
    assert got.status_code == 200 and hashlib.sha256(got.content).hexdigest() == \
        digest_of(package).split(":")[1]  # fmt: skip
    assert got.headers["Content-Disposition"].startswith('attachment; filename="')
    info = httpx.get(f"{stack.url}/api/v1/packages/{escaped}/{version}", headers=auth).json()
    assert info["name"] == name and info["size"] == len(package)
    assert httpx.get(f"{stack.url}/api/v1/packages/{escaped}/tags",
                     headers=auth).json() == {"tags": [version]}  # fmt: skip

    # RegistryClient: publish, search, versions, pull (its name unescaped in the path).
    other = build_package((EXAMPLES / "chat-buddy" / "Sentinelfile").read_text().replace(
        "cheerful", "jolly"), author="admin")  # fmt: skip
    pub = httpx.post(f"{stack.url}/v1/packages/publish", headers=auth,
                     files={"package": ("x.sentinel-pkg", other)})  # fmt: skip
    assert pub.status_code == 201 and pub.json()["digest"] == digest_of(other)
    items = httpx.get(f"{stack.url}/v1/packages/search", params={"q": "chat", "type": "agent"},
                      headers=auth).json()  # fmt: skip
    assert items["totalCount"] >= 1 and items["items"][0]["type"] == "agent"
    assert version in httpx.get(f"{stack.url}/v1/packages/{name}/versions", headers=auth).json()
    pulled = httpx.get(f"{stack.url}/v1/packages/{name}/{version}?type=package", headers=auth)
    assert pulled.status_code == 200 and digest_of(pulled.content) == pub.json()["digest"]


def test_bad_images_are_refused_with_the_field_named(stack: Server) -> None:
    auth = bearer(stack.key)
    package = example("research-helper")

    def push(**body: object) -> httpx.Response:
        return httpx.post(f"{stack.url}/v1/registry/push", json=body, headers=auth)

    wrong = push(file=base64.b64encode(package).decode(), id="sha256:" + "0" * 64, tag="x")
    assert wrong.status_code == 400 and "digest" in wrong.json()["error"]
    junk = push(file=base64.b64encode(os.urandom(2048)).decode(), tag="x")
    assert junk.status_code == 400 and set(junk.json()) == {"error", "request_id"}
    big = build_package((EXAMPLES / "research-helper" / "Sentinelfile").read_text(),
                        {"blob.bin": os.urandom(MAX_BYTES)})  # fmt: skip
    too_big = push(file=base64.b64encode(big).decode(), tag="x")
    assert too_big.status_code in (400, 413) and "large" in too_big.json()["error"].lower()
    not_b64 = push(file="%%%", tag="x")
    assert not_b64.status_code == 400 and "base64" in not_b64.json()["error"]
    nothing = httpx.post(f"{stack.url}/api/v1/packages/upload", headers=auth, data={"a": "b"})
    assert nothing.status_code == 400 and "package" in nothing.json()["error"]
    missing = httpx.get(f"{stack.url}/v1/images/sha256:{'1' * 64}", headers=auth)
    assert missing.status_code == 404 and set(missing.json()) == {"error", "request_id"}
    assert json.loads(httpx.get(f"{stack.url}/v1/registry/search?limit=0",
                                headers=auth).text)["error"]  # fmt: skip
