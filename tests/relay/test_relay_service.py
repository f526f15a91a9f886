"""The relay as its own service (`python -m tether.relay`, as on Cloud Run): a separate process
that shares only the Store with the control plane, and still reaches the session's runtime."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx
import jwt
import pytest
from tether.core.models import Session
from tether.runtime import auth
from tether.service.repo import Repo
from tether.store.sqlite import SqliteStore

from tests.e2e.conftest import Server, free_port, start_server
from tests.relay.test_relay import read_until, refused_status


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("relay-service") / "home")
    yield srv
    srv.stop()


@contextlib.contextmanager
def relay_service(env: dict[str, str], hosts: Path | None = None) -> Iterator[str]:
    """`python -m tether.relay` on a free port with `env`; yields its URL. With `hosts`, the
    relay resolves names with that file as its /etc/hosts (a mount namespace of its own):
    the stand-in for a private DNS zone."""
    port = free_port()
    env = {**env, "PORT": str(port)}
    env.pop("TETHER_PORT", None)
    command = [sys.executable, "-m", "tether.relay"]
    if hosts is not None:
        bind = f'mount --bind "{hosts}" /etc/hosts && exec "$@"'
        command = ["unshare", "--mount", "--map-root-user", "sh", "-c", bind, "relay", *command]
    proc = subprocess.Popen(command, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/health", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "relay did not start"
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def echo_in_terminal(url: str, headers: dict[str, str], word: str) -> bytes:
    """Opens the terminal at `url`, has the shell print `<word>-42` (worked out by the shell,
    so the echo of the typed line does not count) and returns what came back until then."""
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url, headers=headers)
        await ws.send_bytes(f"echo {word}-$((6*7))\n".encode())
        seen = await read_until(ws, f"{word}-42".encode())
        await ws.close()
        return seen


@pytest.fixture(scope="module")
def relay(control_plane: Server) -> Iterator[str]:
    with relay_service(control_plane.env) as url:
        yield url


def test_the_relay_service_opens_a_terminal_of_a_session_it_did_not_start(
    control_plane: Server, relay: str
) -> None:
    headers = {"X-API-Key": control_plane.key}
    created = httpx.post(f"{control_plane.url}/v1/sessions", json={"template": "shell"},
                         headers=headers, timeout=60).json()  # fmt: skip
    assert created["status"] == "running"
    url = relay.replace("http", "ws", 1) + f"/v1/sessions/{created['id']}/terminal"
    assert b"relayed-42" in asyncio.run(echo_in_terminal(url, headers, "relayed"))
    # Checked before the upgrade there too: no credential, nothing relayed.
    assert asyncio.run(refused_status(url)) == 401


class TokenEndpoint(http.server.BaseHTTPRequestHandler):
    """Google's OAuth token endpoint, as a service account's ID token grant uses it: a JWT
    assertion in, `{"id_token": ...}` out (google-auth reads only the token's expiry)."""

    audiences: list[str] = []

    def do_POST(self) -> None:
        form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        claims = jwt.decode(form["assertion"][0], options={"verify_signature": False})
        self.audiences.append(claims["target_audience"])
        token = jwt.encode({"aud": claims["target_audience"], "exp": int(time.time()) + 3600},
                           "the-endpoint-signs-with-its-own-key", algorithm="HS256")  # fmt: skip
        body = json.dumps({"id_token": token}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def tls_front(runtime_socket: str, cert: Path, key: Path, heads: list[bytes], behind: bytes) -> int:
    """A private workspace's HTTPS endpoint, as Cloud Run gives one: TLS in front of the
    runtime, keeping the request heads it sees. Returns its port. The runtime behind it is a
    local one, which wants its own credential: the front adds it (`behind`, a header line),
    as Cloud Run's front end vouches for a request it let through."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))

    def pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def serve() -> None:
        while True:
            raw, _ = listener.accept()
            client = context.wrap_socket(raw, server_side=True)
            head = b""
            while b"\r\n\r\n" not in head:
                head += client.recv(1)
            heads.append(head)
            runtime = socket.socket(socket.AF_UNIX)
            runtime.connect(runtime_socket)
            line, _, rest = head.partition(b"\r\n")
            runtime.sendall(line + b"\r\n" + behind + b"\r\n" + rest)
            threading.Thread(target=pipe, args=(runtime, client), daemon=True).start()
            threading.Thread(target=pipe, args=(client, runtime), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return int(listener.getsockname()[1])


def test_the_relay_reaches_a_private_workspace_over_https_with_an_id_token(
    control_plane: Server, tmp_path: Path
) -> None:
    cert, key, sa_key = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "sa.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", key, "-out", cert, "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True)  # fmt: skip
    subprocess.run(["openssl", "genrsa", "-out", sa_key, "2048"], check=True, capture_output=True)
    tokens = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TokenEndpoint)
    threading.Thread(target=tokens.serve_forever, daemon=True).start()
    account = tmp_path / "relay-sa.json"
    account.write_text(json.dumps({
        "type": "service_account", "project_id": "tether-test", "private_key_id": "k1",
        "private_key": sa_key.read_text(), "client_id": "1",
        "client_email": "relay@tether-test.iam.gserviceaccount.com", "token_uri": f"http://127.0.0.1:{tokens.server_address[1]}/token",
    }))  # fmt: skip

    headers = {"X-API-Key": control_plane.key}
    sid = httpx.post(f"{control_plane.url}/v1/sessions", json={"template": "shell"},
                     headers=headers, timeout=60).json()["id"]  # fmt: skip
    sessions = Repo(SqliteStore(control_plane.home / "tether.db"), "sessions", Session)
    local = sessions.get(sid).url or ""
    heads: list[bytes] = []
    token = auth.token_for((control_plane.home / "jwt-secret").read_text().strip(), sid)
    behind = f"{auth.HEADER}: {token}".encode()
    port = tls_front(local.removeprefix("http+unix://"), cert, key, heads, behind)
    workspace = f"https://localhost:{port}"

    def at(s: Session) -> Session:
        s.url = workspace  # the session's runtime is now a private HTTPS service
        return s

    sessions.mutate(sid, at)
    env = {**control_plane.env, "GOOGLE_APPLICATION_CREDENTIALS": str(account),
           "SSL_CERT_FILE": str(cert)}  # fmt: skip
    with relay_service(env) as relay:
        url = relay.replace("http", "ws", 1) + f"/v1/sessions/{sid}/terminal"
        assert b"over-tls-42" in asyncio.run(echo_in_terminal(url, headers, "over-tls"))
    tokens.shutdown()
    assert TokenEndpoint.audiences == [workspace]
    (head,) = heads
    bearer = next(line for line in head.split(b"\r\n") if line.lower().startswith(b"authorization"))
    claims = jwt.decode(bearer.split()[-1], options={"verify_signature": False})
    assert claims["aud"] == workspace


def test_the_relay_reaches_a_gke_workspace_at_the_name_the_provisioner_reports(
    control_plane: Server, tmp_path: Path
) -> None:
    """GKE: the provisioner reports its headless Service's name in the cluster's DNS domain,
    which Cloud DNS's VPC scope publishes to the VPC the relay sends through (here: a hosts
    file, the relay's own). The relay resolves it, dials the runtime there and is admitted by
    the session's token, derived from the key it shares with the agent, as the runtime asks
    (no front end stands before a pod to check an ID token); with another key it is not."""
    import random

    from tether.provision.gke import GkeProvisioner
    from tether.provision.gke_manifests import RUNTIME_PORT, names

    from tests.fakes.kube import FakeKube
    from tests.fakes.runtime import RuntimeServer
    from tests.provision.test_gke import NS, agent_role
    from tests.provision.test_gke import spec as workspace_spec

    headers = {"X-API-Key": control_plane.key}
    sid = httpx.post(f"{control_plane.url}/v1/sessions", json={"template": "shell"},
                     headers=headers, timeout=60).json()["id"]  # fmt: skip
    key = "gke-runtime-key-" + "7" * 48
    role = agent_role()
    with FakeKube((NS,), ready_delay=0.05, rules=role["rules"],
                  rules_namespace=role["metadata"]["namespace"]) as kube:  # fmt: skip
        agent = GkeProvisioner(NS, api=kube.client(), runtime_key=key,
                               cluster_domain="tether.internal", start_timeout=30)  # fmt: skip
        info = agent.start(workspace_spec(sid))
        agent.close()
        pod = kube.get("pods", NS, names(sid).pod)
    host = f"{names(sid).service}.{NS}.svc.tether.internal"
    assert info.url == f"http://{host}:{RUNTIME_PORT}"
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    # The pod: its runtime at its own address, on the runtime port, with the pod's token.
    address = (
        f"127.{random.randrange(16, 250)}.{random.randrange(1, 250)}.{random.randrange(2, 250)}"
    )
    runtime = RuntimeServer(tmp_path / "pod-home", host=address, port=RUNTIME_PORT,
                            token=env[auth.ENV])  # fmt: skip
    runtime.start()
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n{address} {host}\n")
    sessions = Repo(SqliteStore(control_plane.home / "tether.db"), "sessions", Session)

    def at(s: Session) -> Session:
        s.url = info.url  # the session's runtime is now the GKE pod's
        return s

    sessions.mutate(sid, at)
    try:
        url_of = lambda relay: relay.replace("http", "ws", 1) + f"/v1/sessions/{sid}/terminal"  # noqa: E731
        with relay_service({**control_plane.env, "TETHER_RUNTIME_KEY": key}, hosts) as relay:
            seen = asyncio.run(echo_in_terminal(url_of(relay), headers, "in-gke"))
            assert b"in-gke-42" in seen
            print("SEEN", seen)
        wrong = {**control_plane.env, "TETHER_RUNTIME_KEY": "not-the-agents-key"}
        print("URL", sessions.get(sid).url)
        with relay_service(wrong, hosts) as relay:
            assert asyncio.run(refused_status(url_of(relay), headers=headers)) == 502
    finally:
        runtime.stop()
