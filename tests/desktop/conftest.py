"""A real Xvfb at 1280x800x24 for the desktop building blocks, and a window that records input."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from Xlib import X, display

from tests.desktop.pulse import Server as PulseServer
from tests.waiting import wait_for

WIDTH, HEIGHT = 1280, 800


@contextmanager
def xvfb_server(width: int = WIDTH, height: int = HEIGHT) -> Iterator[str]:
    """A private Xvfb of that size; its DISPLAY string (the server picks a free number:
    -displayfd)."""
    binary = shutil.which("Xvfb")
    assert binary, "infra/apt-packages.sh installs xvfb"
    r, w = os.pipe()
    proc = subprocess.Popen(
        [binary, "-displayfd", str(w), "-screen", "0", f"{width}x{height}x24",
         "-nolisten", "tcp", "-noreset"],
        pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(w)
    try:
        with os.fdopen(r) as f:
            number = f.readline().strip()  # written once the server accepts connections
        assert number, "Xvfb did not start"
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def xvfb() -> Iterator[str]:
    """A private Xvfb at 1280x800x24."""
    with xvfb_server() as display_name:
        yield display_name


@pytest.fixture(scope="module")
def pulse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulseServer]:
    """A private PulseAudio server with two null sinks (`tests.desktop.pulse`)."""
    srv = PulseServer(tmp_path_factory.mktemp("pulse"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@dataclass
class Recorder:
    """A window covering (x, y, w, h) that has the input focus and records what X delivers."""

    d: display.Display
    keys: list[tuple[str, int]] = field(default_factory=list)  # ("press"/"release", keysym)
    clicks: list[tuple[int, int, int]] = field(default_factory=list)  # (button, x, y) in window
    lock: threading.Lock = field(default_factory=threading.Lock)

    def pressed(self) -> list[int]:
        with self.lock:
            return [ks for kind, ks in self.keys if kind == "press"]


@pytest.fixture
def recorder(xvfb: str) -> Iterator[Recorder]:
    d = display.Display(xvfb)
    screen = d.screen()
    win = screen.root.create_window(
        100,
        100,
        400,
        300,
        0,
        screen.root_depth,
        X.InputOutput,
        X.CopyFromParent,
        background_pixel=screen.white_pixel,
        override_redirect=True,
        event_mask=X.KeyPressMask | X.KeyReleaseMask | X.ButtonPressMask | X.ExposureMask,
    )
    win.map()
    d.sync()
    rec = Recorder(d)
    stop = threading.Event()

    def pump() -> None:
        while not stop.is_set():
            while d.pending_events():
                ev = d.next_event()
                if ev.type == X.MappingNotify:
                    d.refresh_keyboard_mapping(ev)
                elif ev.type in (X.KeyPress, X.KeyRelease):
                    index = 1 if ev.state & X.ShiftMask else 0
                    ks = d.keycode_to_keysym(ev.detail, index) or d.keycode_to_keysym(ev.detail, 0)
                    kind = "press" if ev.type == X.KeyPress else "release"
                    with rec.lock:
                        rec.keys.append((kind, ks))
                elif ev.type == X.ButtonPress:
                    with rec.lock:
                        rec.clicks.append((ev.detail, ev.event_x, ev.event_y))
            stop.wait(0.01)

    assert wait_for(lambda: win.get_attributes().map_state == X.IsViewable, 10)
    win.set_input_focus(X.RevertToParent, X.CurrentTime)
    d.sync()
    t = threading.Thread(target=pump, daemon=True)
    t.start()
    try:
        yield rec
    finally:
        stop.set()
        t.join(5)
        win.destroy()
        d.close()
