"""A real, private PulseAudio server with two null sinks, for the tests of audio: the desktop
agent's `Audio` and the Openctrol audio calls end to end."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pulsectl
import pytest

from tests.waiting import wait_for

SPEAKERS, HEADPHONES = "tether_speakers", "tether_headphones"
DESCRIPTIONS = {SPEAKERS: "Tether Speakers", HEADPHONES: "Tether Headphones"}


class Server:
    """A PulseAudio daemon of our own: no default config (-n), only a socket and two null sinks.

    It runs in user mode even as root: pulseaudio only warns there (--system would want the
    `pulse` user, a system D-Bus and /var/run), and our own HOME/XDG/PULSE dirs keep it off the
    machine's real server. Restartable at the same socket, for the lost-server test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "native"
        self.address = f"unix:{self.socket}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(root / "home"),
            "XDG_RUNTIME_DIR": str(root / "runtime"),
            "PULSE_RUNTIME_PATH": str(root / "runtime"),
            "PULSE_STATE_PATH": str(root / "state"),
        }
        for name in ("home", "runtime", "state"):
            (root / name).mkdir(mode=0o700, exist_ok=True)
        self.log = root / "pulseaudio.log"

    def start(self) -> None:
        binary = shutil.which("pulseaudio")
        assert binary, "infra/apt-packages.sh installs pulseaudio"
        sinks = [
            f"module-null-sink sink_name={name} sink_properties=\"device.description='{desc}'\""
            for name, desc in DESCRIPTIONS.items()
        ]
        args = [binary, "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no"]
        args += ["--disallow-exit", "--log-target=stderr"]
        args += ["-L", f"module-native-protocol-unix socket={self.socket} auth-anonymous=1"]
        for sink in sinks:
            args += ["-L", sink]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                args, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        if not wait_for(self._ready, timeout=60, step=0.05):
            self.stop()
            pytest.fail(f"pulseaudio did not come up; its log:\n{self.log.read_text()[-3000:]}")

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            pytest.fail(f"pulseaudio exited; its log:\n{self.log.read_text()[-3000:]}")
        pulse = pulsectl.Pulse("tether-test-probe", server=self.address, connect=False)
        try:
            pulse.connect(autospawn=False)  # refused at once while there is no socket
            return {s.name for s in pulse.sink_list()} >= set(DESCRIPTIONS)
        except pulsectl.PulseError:
            return False
        finally:
            pulse.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.proc = None

    def client_env(self) -> dict[str, str]:
        return {**self.env, "PULSE_SERVER": self.address}

    def pactl(self, *args: str) -> str:
        binary = shutil.which("pactl")
        assert binary, "infra/apt-packages.sh installs pulseaudio-utils"
        done = subprocess.run(
            [binary, *args], env=self.client_env(), capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, f"pactl {' '.join(args)}: {done.stderr}"
        return done.stdout

    def listed(self, kind: str) -> list[dict[str, Any]]:
        """`pactl list <kind>` as JSON (pactl >= 16)."""
        items: list[dict[str, Any]] = json.loads(self.pactl("-f", "json", "list", kind))
        return items

    def sink(self, name: str) -> dict[str, Any]:
        return next(s for s in self.listed("sinks") if s["name"] == name)

    def sink_input(self, index: str) -> dict[str, Any] | None:
        return next((i for i in self.listed("sink-inputs") if str(i["index"]) == index), None)

    def sink_name(self, index: int) -> str:
        return str(next(s["name"] for s in self.listed("sinks") if s["index"] == index))


def raw_volumes(item: dict[str, Any]) -> list[int]:
    """Per-channel volumes as pactl reports them (65536 is 100%)."""
    return [int(ch["value"]) for ch in item["volume"].values()]
