"""Audio against a real, private PulseAudio server with two null sinks and a real client stream
(pacat); what `Audio` does is checked with the `pactl` CLI, the way a user's mixer would see it."""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tether.desktop.audio import Audio
from tether.errors import Invalid, NotFound, Unavailable

from tests.desktop.pulse import DESCRIPTIONS, HEADPHONES, SPEAKERS, Server, raw_volumes
from tests.waiting import wait_for

PLAYER = "tether-test-player"


@pytest.fixture(scope="module")
def server(pulse: Server) -> Server:
    return pulse


@pytest.fixture
def audio(server: Server) -> Iterator[Audio]:
    """An `Audio` on the server, which is put back first: speakers default, both sinks at 100%
    and unmuted (the tests share one server)."""
    if server.proc is None:  # a failed lost-server test left it down
        server.start()
    server.pactl("set-default-sink", SPEAKERS)
    for name in DESCRIPTIONS:
        server.pactl("set-sink-volume", name, "100%")
        server.pactl("set-sink-mute", name, "0")
    a = Audio(server.address)
    try:
        yield a
    finally:
        a.close()


@pytest.fixture
def player(server: Server, audio: Audio) -> Iterator[str]:
    """A real client playing silence (pacat); its session id once the server lists it."""
    binary = shutil.which("pacat")
    assert binary, "infra/apt-packages.sh installs pulseaudio-utils"
    proc = subprocess.Popen(
        [binary, "--playback", f"--client-name={PLAYER}", "--stream-name=silence", "/dev/zero"],
        env=server.client_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    found: list[str] = []

    def listed() -> bool:
        assert proc.poll() is None, f"pacat exited: {proc.stderr.read() if proc.stderr else ''}"
        found[:] = [s["id"] for s in audio.state()["sessions"] if s["name"] == PLAYER]
        return bool(found)

    try:
        assert wait_for(listed, timeout=60), "pacat's stream never appeared"
        yield found[0]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_state_lists_both_sinks_with_descriptions_and_the_default(audio: Audio) -> None:
    state = audio.state()
    assert state["default_output_device_id"] == SPEAKERS
    devices = {d["id"]: d for d in state["devices"]}
    assert set(devices) >= set(DESCRIPTIONS)
    for name, description in DESCRIPTIONS.items():
        assert devices[name] == {
            "id": name,
            "name": description,
            "volume": 1.0,
            "muted": False,
            "is_default": name == SPEAKERS,
        }
    assert state["sessions"] == []


def test_device_volume_is_set_on_every_channel_and_read_back(server: Server, audio: Audio) -> None:
    audio.set_device(HEADPHONES, volume=0.25)
    assert raw_volumes(server.sink(HEADPHONES)) == [16384, 16384]  # 25% of 65536, both channels
    assert raw_volumes(server.sink(SPEAKERS)) == [65536, 65536]  # the other one untouched
    assert "25%" in server.pactl("get-sink-volume", HEADPHONES)
    devices = {d["id"]: d for d in audio.state()["devices"]}
    assert devices[HEADPHONES]["volume"] == 0.25

    # Set elsewhere (a user's mixer, unequal channels): read as the channels' average.
    server.pactl("set-sink-volume", HEADPHONES, "40%", "60%")
    devices = {d["id"]: d for d in audio.state()["devices"]}
    assert devices[HEADPHONES]["volume"] == pytest.approx(0.5, abs=1e-4)


def test_mute_and_unmute_keep_the_volume(server: Server, audio: Audio) -> None:
    audio.set_device(SPEAKERS, volume=0.6)
    audio.set_device(SPEAKERS, muted=True)  # volume None: left alone
    assert server.pactl("get-sink-mute", SPEAKERS).strip() == "Mute: yes"
    assert raw_volumes(server.sink(SPEAKERS)) == [39322, 39322]  # round(0.6 * 65536)
    speakers = next(d for d in audio.state()["devices"] if d["id"] == SPEAKERS)
    assert speakers["muted"] is True and speakers["volume"] == 0.6

    audio.set_device(SPEAKERS, muted=False)
    assert server.pactl("get-sink-mute", SPEAKERS).strip() == "Mute: no"
    assert raw_volumes(server.sink(SPEAKERS)) == [39322, 39322]

    audio.set_device(SPEAKERS, volume=0.0, muted=True)  # both at once
    assert server.sink(SPEAKERS)["mute"] is True
    assert raw_volumes(server.sink(SPEAKERS)) == [0, 0]


def test_set_default_changes_the_servers_default_sink(server: Server, audio: Audio) -> None:
    audio.set_default(HEADPHONES)
    assert server.pactl("get-default-sink").strip() == HEADPHONES
    state = audio.state()
    assert state["default_output_device_id"] == HEADPHONES
    assert [d["id"] for d in state["devices"] if d["is_default"]] == [HEADPHONES]
    audio.set_default(SPEAKERS)
    assert server.pactl("get-default-sink").strip() == SPEAKERS


def test_a_playing_client_is_a_session_that_can_be_set_and_routed(
    server: Server, audio: Audio, player: str
) -> None:
    session = next(s for s in audio.state()["sessions"] if s["id"] == player)
    assert session == {
        "id": player,
        "name": PLAYER,
        "volume": 1.0,
        "muted": False,
        "output_device_id": SPEAKERS,
    }

    audio.set_session(player, volume=0.5)
    listed = server.sink_input(player)
    assert listed is not None and raw_volumes(listed) == [32768, 32768]
    assert raw_volumes(server.sink(SPEAKERS)) == [65536, 65536]  # the device is untouched

    audio.set_session(player, muted=True)
    listed = server.sink_input(player)
    assert listed is not None and listed["mute"] is True and raw_volumes(listed) == [32768] * 2

    audio.set_session(player, output_device_id=HEADPHONES)
    listed = server.sink_input(player)
    assert listed is not None and server.sink_name(listed["sink"]) == HEADPHONES
    session = next(s for s in audio.state()["sessions"] if s["id"] == player)
    assert session == {
        "id": player,
        "name": PLAYER,
        "volume": 0.5,
        "muted": True,
        "output_device_id": HEADPHONES,
    }

    audio.set_session(player, volume=1.0, muted=False, output_device_id=SPEAKERS)
    listed = server.sink_input(player)
    assert listed is not None and server.sink_name(listed["sink"]) == SPEAKERS
    assert listed["mute"] is False and raw_volumes(listed) == [65536, 65536]


def test_a_session_that_ends_leaves_the_state(server: Server, audio: Audio) -> None:
    binary = shutil.which("pacat")
    assert binary
    proc = subprocess.Popen(
        [binary, "--playback", "--client-name=short-lived", "/dev/zero"],
        env=server.client_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        names = lambda: [s["name"] for s in audio.state()["sessions"]]  # noqa: E731
        assert wait_for(lambda: "short-lived" in names(), timeout=60)
        ids = [s["id"] for s in audio.state()["sessions"] if s["name"] == "short-lived"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert wait_for(lambda: "short-lived" not in names(), timeout=60)
    with pytest.raises(NotFound, match=repr(ids[0])):
        audio.set_session(ids[0], volume=0.5)


def test_unknown_ids_are_not_found_and_name_the_id(audio: Audio, player: str) -> None:
    with pytest.raises(NotFound, match="'no_such_sink'"):
        audio.set_device("no_such_sink", volume=0.5)
    with pytest.raises(NotFound, match="'no_such_sink'"):
        audio.set_default("no_such_sink")
    with pytest.raises(NotFound, match="'999999'"):
        audio.set_session("999999", muted=True)
    with pytest.raises(NotFound, match="'no_such_sink'"):
        audio.set_session(player, output_device_id="no_such_sink")
    # Nothing was half-done: the session still plays unmuted on the speakers.
    session = next(s for s in audio.state()["sessions"] if s["id"] == player)
    assert session["muted"] is False and session["output_device_id"] == SPEAKERS


def test_volumes_out_of_range_are_invalid_and_change_nothing(
    server: Server, audio: Audio, player: str
) -> None:
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(Invalid, match=r"between 0\.0 and 1\.0") as err:
            audio.set_device(SPEAKERS, volume=bad, muted=True)
        assert err.value.field == "volume"
        with pytest.raises(Invalid) as err:
            audio.set_session(player, volume=bad)
        assert err.value.field == "volume"
    assert server.sink(SPEAKERS)["mute"] is False
    assert raw_volumes(server.sink(SPEAKERS)) == [65536, 65536]


def test_threads_share_one_audio(server: Server, audio: Audio) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(20):
                audio.set_device(HEADPHONES, volume=(n * 20 + i) / 200)
                assert len(audio.state()["devices"]) >= 2
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    audio.set_device(HEADPHONES, volume=0.75)
    assert raw_volumes(server.sink(HEADPHONES)) == [49152, 49152]


def test_no_server_is_unavailable_and_connecting_is_lazy(tmp_path: Path) -> None:
    a = Audio(f"unix:{tmp_path / 'nothing-here'}")  # no connection yet: no error
    with pytest.raises(Unavailable, match=r"^no sound server: "):
        a.state()
    a.close()


def test_a_lost_server_is_unavailable_then_found_again(server: Server, audio: Audio) -> None:
    assert audio.state()["default_output_device_id"] == SPEAKERS  # connected
    server.stop(signal.SIGKILL)
    with pytest.raises(Unavailable, match=r"^no sound server: "):
        audio.state()
    with pytest.raises(Unavailable, match=r"^no sound server: "):
        audio.set_device(SPEAKERS, volume=0.5)  # still down: still Unavailable, never hangs

    server.start()  # same socket path
    assert wait_for(lambda: _works(audio), timeout=60), "the same Audio never reconnected"
    audio.set_device(HEADPHONES, volume=0.25)
    assert raw_volumes(server.sink(HEADPHONES)) == [16384, 16384]


def test_a_server_restart_between_calls_is_not_noticed(server: Server, audio: Audio) -> None:
    audio.set_device(SPEAKERS, volume=0.5)
    server.stop()
    server.start()
    # The old connection is dead; the call reconnects and goes through.
    audio.set_device(SPEAKERS, volume=0.25)
    assert raw_volumes(server.sink(SPEAKERS)) == [16384, 16384]


def test_a_stuck_server_is_unavailable_after_the_timeout(server: Server, audio: Audio) -> None:
    assert server.proc is not None
    stuck = Audio(server.address, timeout=1.0)
    assert wait_for(lambda: _works(stuck), timeout=60)  # connected (1 s may be short when busy)
    server.proc.send_signal(signal.SIGSTOP)  # accepts nothing, answers nothing
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable, match="did not answer within 1 s"):
            stuck.state()
        with pytest.raises(Unavailable, match="did not answer within 1 s"):
            Audio(server.address, timeout=1.0).set_default(HEADPHONES)  # connecting, too
        assert time.monotonic() - started < 30  # bounded by our timeout, not libpulse's 30 s
    finally:
        server.proc.send_signal(signal.SIGCONT)
    assert wait_for(lambda: _works(stuck), timeout=60), "the Audio never recovered"
    stuck.set_device(SPEAKERS, volume=0.25)
    assert raw_volumes(server.sink(SPEAKERS)) == [16384, 16384]
    stuck.close()


def _works(audio: Audio) -> bool:
    try:
        return len(audio.state()["devices"]) >= 2
    except Unavailable:
        return False
