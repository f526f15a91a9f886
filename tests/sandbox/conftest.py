"""The attack suite's world: a local provisioner with workspaces to attack from, a bystander
workspace that must keep serving, listeners standing in for the stack's ports, and a test host
outside this machine's own addresses (a network namespace made here) with a stand-in metadata
server at 169.254.169.254, so "unreachable" is proven against something that answers.

As root (CI) the suite runs here and then again as an ordinary user (`as_user.py`); that run
finds the test host made by this one through TETHER_TEST_OUTSIDE."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import socketserver
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tether.core.models import ExecResult, Template, WorkspaceSpec
from tether.provision.local import LocalProvisioner

OUTSIDE_PORT = 8000
METADATA = "169.254.169.254"


@dataclass(frozen=True)
class Outside:
    host: str  # the test host's address, beyond this machine's own
    own: str  # this machine's address on the link to it


class Attack:
    """A provisioner and helpers to run commands in its workspaces."""

    def __init__(self, prov: LocalProvisioner) -> None:
        self.prov = prov
        self.gvisor = prov.sandbox == "gvisor"

    def start(self, sid: str, **template: object) -> str:
        spec = WorkspaceSpec(
            session_id=sid,
            template=Template(name="attack", display_name="Attack", **template),  # type: ignore[arg-type]
        )
        self.prov.start(spec)
        return sid

    def run(self, sid: str, command: str, timeout: float = 30) -> ExecResult:
        return self.prov.exec(sid, command, timeout)

    def out(self, sid: str, command: str, timeout: float = 30) -> str:
        return self.run(sid, command, timeout).stdout


@pytest.fixture(params=["bubblewrap", "gvisor"])
def attack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Attack]:
    if request.param == "gvisor" and os.geteuid() != 0:
        pytest.skip("TETHER_SANDBOX=gvisor needs root")
    os.environ["TETHER_CANARY"] = "server-secret"  # the server's environment, not theirs
    os.environ["PIP_INDEX_URL"] = "https://user:token@example.invalid/simple"
    prov = LocalProvisioner(tmp_path / "home", request.param, secret="attack-suite-secret")
    try:
        yield Attack(prov)
    finally:
        prov.close()
        del os.environ["TETHER_CANARY"], os.environ["PIP_INDEX_URL"]


class _Listener(socketserver.TCPServer):
    """A TCP server standing in for one of the stack's ports: it answers "stack" and counts
    the connections it accepted. socketserver stops its accept loop before the socket closes:
    a loop left accepting on a closed descriptor's number would take the connections of
    whatever socket is given that number next (CI saw an exec channel's caller read "stack")."""

    def __init__(self, host: str) -> None:
        self.accepted = 0
        super().__init__((host, 0), _Stack)
        self.port: int = self.server_address[1]
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _Stack(socketserver.BaseRequestHandler):
    server: _Listener

    def handle(self) -> None:
        self.server.accepted += 1
        self.request.sendall(b"stack\n")


@pytest.fixture
def stack_ports() -> Iterator[tuple[_Listener, _Listener]]:
    """One listener on the host's loopback, one on all its addresses."""
    loopback, everywhere = _Listener("127.0.0.1"), _Listener("0.0.0.0")
    yield loopback, everywhere
    loopback.close()
    everywhere.close()


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


PREFIX = "tto"  # this fixture's namespaces and links


def _clear_leftovers() -> None:
    """What a run killed before its teardown left (its namespace, veth, route and server):
    they hold the addresses this run takes, so its egress tests would fail at setup."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    stale = [line.split()[0] for line in listed.splitlines() if line.startswith(PREFIX)]
    for name in stale:
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
        for pid in pids.stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "link", "del", f"{name}a"], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    if stale:  # the route they added (this fixture adds it only beside a namespace)
        subprocess.run(["ip", "route", "del", f"{METADATA}/32"], capture_output=True)


@pytest.fixture(scope="session")
def outside() -> Iterator[Outside]:
    given = os.environ.get("TETHER_TEST_OUTSIDE")
    if given:
        host, own = given.split(",")
        yield Outside(host, own)
        return
    if os.geteuid() != 0:
        pytest.skip("the egress test host needs root to make its network namespace")
    _clear_leftovers()
    name = PREFIX + uuid.uuid4().hex[:8]
    outer, inner = f"{name}a", f"{name}b"
    # Addresses of TEST-NET-3 (never routed anywhere) on a veth into a namespace made here:
    # nothing beyond this machine is ever addressed.
    own, host = "203.0.113.1", "203.0.113.2"
    _ip("netns", "add", name)
    server = None
    try:
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", name)
        _ip("addr", "add", f"{own}/30", "dev", outer)
        _ip("link", "set", outer, "up")
        for args in (
            ("addr", "add", f"{host}/30", "dev", inner),
            ("addr", "add", f"{METADATA}/32", "dev", inner),
            ("link", "set", inner, "up"),
            ("link", "set", "lo", "up"),
        ):
            _ip("-n", name, *args)
        _ip("route", "add", f"{METADATA}/32", "via", host, "dev", outer)
        server = subprocess.Popen(
            ["ip", "netns", "exec", name, "python3", "-m", "http.server", str(OUTSIDE_PORT)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
        )
        _wait_tcp(host, OUTSIDE_PORT)
        yield Outside(host, own)
    finally:
        if server is not None:
            server.kill()
            server.wait()
        subprocess.run(["ip", "route", "del", f"{METADATA}/32"], capture_output=True)
        subprocess.run(["ip", "link", "del", outer], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _wait_tcp(host: str, port: int) -> None:
    import time

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"the test host {host}:{port} did not come up")
