"""Half-open WebSockets: a client whose process stops (SIGSTOP: frozen, while its kernel still
acknowledges, so TCP sees nothing wrong) without closing. The relay pings a client silent for
TETHER_WS_PING_INTERVAL seconds and, when no answer comes within half that again, frees both
legs, client-relay and relay-runtime, at the relay and at the runtime: an idle stream, and one
whose output filled every buffer on the way to the stopped client. A client that is alive but
silent answers the pings and keeps its stream."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Server, start_server
from tests.waiting import wait_for

PING = 2.0  # TETHER_WS_PING_INTERVAL here (30 in production)
FREED_WITHIN = PING * 1.5  # the interval, then half of it for the answer
LATE = 2.0  # what timers firing late on a loaded machine may add
# A client that answers pings (websockets does) and never pings itself, typing `typed` first.
CLIENT = """
import asyncio, sys
from websockets.asyncio.client import connect

async def main(url, key, typed):
    async with connect(url, additional_headers={"X-API-Key": key}, ping_interval=None,
                       max_size=None) as ws:
        if typed:
            await ws.send(typed.encode())
        print(ws.transport.get_extra_info("sockname")[1], flush=True)
        async for _ in ws:
            pass

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("half-open") / "home"
    srv = start_server(home, {"TETHER_WS_PING_INTERVAL": str(PING)})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def session(server: Server) -> str:
    made = httpx.post(f"{server.url}/v1/sessions", json={"template": "shell"},
                      headers={"X-API-Key": server.key}, timeout=60).json()  # fmt: skip
    assert made["status"] == "running", made
    return str(made["id"])


def sockets(pid: int) -> set[str]:
    """The sockets process `pid` holds open (`socket:[inode]`)."""
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if link.startswith("socket:"):
            found.add(link)
    return found


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def runtime_pid(ancestor: int) -> int:
    """The workspace runtime's process among `ancestor`'s descendants (inside its sandbox)."""
    todo, found = [ancestor], []
    while todo:
        pid = todo.pop()
        for task in os.listdir(f"/proc/{pid}/task"):
            todo += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"tether.runtime" in argv and not argv[0].endswith(b"bwrap"):
            found.append(pid)
    assert len(found) == 1, found
    return found[0]


def client_leg(port: int) -> str:
    """The relay's socket of the TCP connection from the client's `port`."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[2].split(":")[1], 16) == port:  # its remote address is the client's
            return f"socket:[{fields[9]}]"
    raise AssertionError(f"no connection from port {port}")


def unix_peers() -> dict[str, str]:
    """Each connected Unix socket's peer, by inode (`ss`, iproute2: the kernel's socket
    diagnostics, which /proc does not show)."""
    listed = subprocess.run(["ss", "-xnH"], capture_output=True, text=True, check=True).stdout
    peers = {}
    for line in listed.splitlines():
        fields = line.split()  # netid state recv-q send-q address inode peer-address inode
        if len(fields) == 8 and fields[7] != "0":
            peers[f"socket:[{fields[5]}]"] = f"socket:[{fields[7]}]"
    return peers


def start_client(
    tmp_path: Path, url: str, key: str, typed: str = ""
) -> tuple[subprocess.Popen[str], int]:
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    proc = subprocess.Popen([sys.executable, str(script), url, key, typed],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    port = proc.stdout.readline().strip()
    assert port.isdigit(), f"the client did not connect (exit {proc.poll()})"
    return proc, int(port)


@pytest.mark.parametrize("kind", ["idle", "flooding"])
def test_a_stopped_client_has_both_legs_freed_within_the_ping_interval_and_its_timeout(
    server: Server, session: str, kind: str, tmp_path: Path
) -> None:
    relay, runtime = server.proc.pid, runtime_pid(server.proc.pid)
    ws = server.url.replace("http", "ws", 1)
    # A client that stays, silent: it answers the relay's pings and keeps its terminal.
    alive, _ = start_client(tmp_path, f"{ws}/v1/sessions/{session}/terminal", server.key)
    stopped = None
    try:
        relay_before = sockets(relay)
        fds_before = descriptors(relay)
        if kind == "idle":  # a live log nothing is written to
            url, typed = f"{ws}/api/v1/sessions/{session}/logs?follow=true", ""
        else:  # a terminal printing as fast as it can
            url, typed = f"{ws}/v1/sessions/{session}/terminal", "yes tether-half-open\n"
        stopped, port = start_client(tmp_path, url, server.key, typed)
        leg = client_leg(port)
        assert wait_for(lambda: len(sockets(relay) - relay_before) >= 2, timeout=10)
        relay_legs = sockets(relay) - relay_before  # the client's leg, the runtime's
        assert leg in relay_legs
        peers = unix_peers()
        # The runtime's end of the relay's leg to it.
        runtime_legs = {peers[s] for s in relay_legs if s in peers} & sockets(runtime)
        assert len(runtime_legs) == 1, (relay_legs, runtime_legs)
        fds_open = descriptors(relay)

        stopped.send_signal(signal.SIGSTOP)
        since = time.monotonic()
        if kind == "flooding":  # the relay's socket to the client is backed up
            assert wait_for(lambda: _queued(port) > 0, timeout=FREED_WITHIN), "never backed up"

        def freed() -> bool:
            return not (relay_legs & sockets(relay)) and not (runtime_legs & sockets(runtime))

        assert wait_for(freed, timeout=FREED_WITHIN + 20), "a leg was never freed"
        took = time.monotonic() - since
        assert took <= FREED_WITHIN + LATE, f"freed after {took:.1f}s"
        assert sockets(relay) - relay_before == set()
        assert alive.poll() is None, "a live client lost its stream"
        print(f"\n{kind}: both legs of a stopped client freed {took:.2f}s after SIGSTOP "
              f"(ping interval {PING:g}s + timeout {PING / 2:g}s); relay descriptors "
              f"{fds_before} -> {fds_open} -> {descriptors(relay)}, sockets "
              f"{len(relay_before)} -> {len(relay_before | relay_legs)} -> "
              f"{len(sockets(relay))}")  # fmt: skip
    finally:
        for proc in (stopped, alive):
            if proc is not None:
                proc.kill()
                proc.wait()


def _queued(port: int) -> int:
    """Bytes the relay's socket to the client at `port` holds, unsent (tx_queue)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[2].split(":")[1], 16) == port:
            return int(fields[4].split(":")[0], 16)
    return 0
