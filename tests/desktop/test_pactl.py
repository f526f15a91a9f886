"""A desktop workspace's audio lines (`tether.desktop.pactl`), run by a shell as the workspace
runs them, against a real PulseAudio server whose socket sits where a workspace's does."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tether.core.layout import PULSE_SOCKET
from tether.desktop import pactl
from tether.errors import Invalid, NotFound, Unavailable

from tests.desktop.pulse import HEADPHONES, SPEAKERS, Server, raw_volumes
from tests.waiting import wait_for


@pytest.fixture(scope="module")
def server(pulse: Server) -> Server:
    return pulse


@pytest.fixture(scope="module")
def home(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace home whose sound server socket is the server's."""
    home = tmp_path_factory.mktemp("home")
    (home / PULSE_SOCKET).parent.mkdir(parents=True)
    (home / PULSE_SOCKET).symlink_to(server.socket)
    return home


def run(home: Path, line: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", line], env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=30)  # fmt: skip


@pytest.fixture
def player(server: Server, home: Path) -> Iterator[str]:
    binary = shutil.which("pacat")
    assert binary
    proc = subprocess.Popen([binary, "--playback", "--client-name=player", "/dev/zero"],
                            env=server.client_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    found: list[Any] = []

    def listed() -> bool:
        found[:] = pactl.state(run(home, pactl.STATE).stdout)["sessions"]
        return bool(found)

    try:
        assert wait_for(listed, 30)
        yield str(found[0]["id"])
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_state_lists_the_sinks_and_the_streams(server: Server, home: Path, player: str) -> None:
    server.pactl("set-default-sink", SPEAKERS)
    state = pactl.state(run(home, pactl.STATE).stdout)
    assert state["default_output_device_id"] == SPEAKERS
    devices = {d["id"]: d for d in state["devices"]}
    assert devices[SPEAKERS]["name"] == "Tether Speakers" and devices[SPEAKERS]["is_default"]
    (stream,) = state["sessions"]
    assert stream["id"] == player and stream["name"] == "player"
    assert stream["output_device_id"] == SPEAKERS


def test_the_lines_set_what_they_say(server: Server, home: Path, player: str) -> None:
    assert run(home, pactl.set_device(HEADPHONES, 0.25, True)).returncode == 0
    assert raw_volumes(server.sink(HEADPHONES)) == [16384, 16384]
    assert server.sink(HEADPHONES)["mute"] is True
    assert run(home, pactl.set_default(HEADPHONES)).returncode == 0
    assert server.pactl("get-default-sink").strip() == HEADPHONES
    assert run(home, pactl.set_session(player, 0.5, None, HEADPHONES)).returncode == 0
    moved = server.sink_input(player)
    assert moved is not None and server.sink_name(moved["sink"]) == HEADPHONES
    assert run(home, pactl.set_session(player, None, None, None)).returncode == 0
    server.pactl("set-default-sink", SPEAKERS)
    server.pactl("set-sink-mute", HEADPHONES, "0")


def test_unknown_ids_and_no_server_read_as_such(home: Path, tmp_path: Path) -> None:
    for line, what in ((pactl.set_device("nope", 0.5, None), "device"),
                       (pactl.set_default("nope"), "device"),
                       (pactl.set_session("999999", None, None, None), "session")):  # fmt: skip
        done = run(home, line)
        assert done.returncode != 0
        assert isinstance(pactl.failed(done.stderr, what), NotFound), done.stderr
    with pytest.raises(NotFound):
        pactl.set_session("1; rm -rf ~", 0.5, None, None)  # not a stream's id: nothing run
    with pytest.raises(Invalid):
        pactl.set_device(SPEAKERS, 1.5, None)
    nowhere = run(tmp_path, pactl.set_device(SPEAKERS, 0.5, None))  # no socket in this home
    assert isinstance(pactl.failed(nowhere.stderr, "device"), Unavailable), nowhere.stderr
    with pytest.raises(Unavailable):
        pactl.state(run(tmp_path, pactl.STATE).stdout)


def test_a_device_name_cannot_reach_the_shell(home: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    done = run(home, pactl.set_device(f"x; touch {marker}", 0.5, None))
    assert done.returncode != 0 and not marker.exists()
