"""Capture a real Xvfb on which a real X client (xsetroot) draws known colours."""

from __future__ import annotations

import io
import shutil
import subprocess

from PIL import Image
from tether.desktop import frames
from tether.desktop.capture import Capture

from tests.desktop.conftest import HEIGHT, WIDTH


def _paint(xvfb: str, colour: str) -> None:
    xsetroot = shutil.which("xsetroot")
    assert xsetroot, "x11-xserver-utils provides xsetroot"
    subprocess.run([xsetroot, "-display", xvfb, "-solid", colour], check=True, timeout=30)


def _near(pixel: tuple[int, ...], want: tuple[int, int, int], tolerance: int = 12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], want, strict=True))


def test_monitors_are_listed_as_hello_lists_them(xvfb: str) -> None:
    with Capture(xvfb) as cap:
        monitors = [m.hello() for m in cap.monitors()]
    assert monitors[0] == {
        "id": "DISPLAY1",
        "name": monitors[0]["name"],
        "width": WIDTH,
        "height": HEIGHT,
        "is_primary": True,
    }
    assert isinstance(monitors[0]["name"], str) and monitors[0]["name"]
    assert sum(m["is_primary"] for m in monitors) == 1


def test_frames_show_what_is_drawn_and_only_when_it_changes(xvfb: str) -> None:
    _paint(xvfb, "#ff0000")
    with Capture(xvfb) as cap:
        first = cap.grab(quality=80)
        assert first is not None
        message = first.message()
        assert frames.parse_header(message) == (WIDTH, HEIGHT, frames.FORMAT_JPEG)
        image = Image.open(io.BytesIO(frames.payload(message)))
        assert image.format == "JPEG" and image.size == (WIDTH, HEIGHT)
        rgb = image.convert("RGB")
        for spot in ((0, 0), (640, 400), (WIDTH - 1, HEIGHT - 1)):
            assert _near(rgb.getpixel(spot), (255, 0, 0)), rgb.getpixel(spot)

        assert cap.grab() is None  # nothing changed: nothing to send
        assert cap.grab(force=True) is not None  # unless asked

        _paint(xvfb, "#0000ff")
        changed = cap.grab(quality=30)
        assert changed is not None
        blue = Image.open(io.BytesIO(changed.jpeg)).convert("RGB")
        assert _near(blue.getpixel((640, 400)), (0, 0, 255)), blue.getpixel((640, 400))
        assert cap.grab() is None

        assert not cap.select("DISPLAY9")
        assert cap.select("DISPLAY1")
