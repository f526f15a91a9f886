"""A real terminal for CLI tests: a tmux pane on a tmux server of its own.

Each pane gets its own server (`-L`), so one test's pane ending (and with it the server, when
it was the last) never races another test starting a pane.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid


class Tmux:
    def __init__(self, command: str, width: int = 120, height: int = 40) -> None:
        assert shutil.which("tmux"), "infra/apt-packages.sh installs tmux"
        self.socket = f"tether-test-{uuid.uuid4().hex[:12]}"
        self.name = "pane"
        self.run("-f", "/dev/null", "new-session", "-d", "-s", self.name,
                 "-x", str(width), "-y", str(height), command)  # fmt: skip

    def run(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True)
        assert done.returncode == 0, f"tmux {' '.join(args)}: {done.stderr.strip()}"
        return done.stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.name)

    def screen_has(self, text: str, timeout: float = 30) -> str:
        """The screen once `text` is on it (the test fails with the screen if it never is)."""
        deadline = time.monotonic() + timeout
        while text not in (screen := self.screen()):
            assert time.monotonic() < deadline, f"{text!r} never appeared:\n{screen}"
            time.sleep(0.1)
        return screen

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", self.name, *keys)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)
