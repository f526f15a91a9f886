"""A person opening a session's desktop: headless Chromium loads the viewer page through the
relay, noVNC connects, and the pixels on the canvas are the ones the session painted."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import sync_playwright

from tests.e2e.conftest import Server, start_server

COLOUR = (200, 30, 100)  # what the session paints its desktop with: #c81e64
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path / "home")
    yield srv
    srv.stop()


# Chromium, Xvfb and x11vnc starting on a machine whose cores are busy take their time: every
# wait below is for a state, with room for a loaded machine.
@pytest.mark.timeout(600)
def test_viewer_page_shows_the_sessions_desktop(server: Server, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "infra/apt-packages.sh installs Debian's chromium"
    h = {"Authorization": f"Bearer {server.key}"}
    with httpx.Client(base_url=f"{server.url}/api/v1", headers=h, timeout=30) as api:
        solid = {
            "name": "solid-desktop",
            "display_name": "Solid colour desktop",
            "vnc": {"enabled": True, "resolution": "640x480"},
            "command": _desktop("xsetroot -solid '#c81e64'; sleep infinity"),
        }
        assert api.post("/templates", json=solid).status_code == 201
        sid = api.post("/sessions", json={"user": "viewer", "template": "solid-desktop"}).json()[
            "id"
        ]
        deadline = time.monotonic() + 120
        while (s := api.get(f"/sessions/{sid}").json())["state"] != "running":
            assert time.monotonic() < deadline, s
            time.sleep(0.2)
        ticket = api.post(f"/sessions/{sid}/tickets").json()["ticket"]
    viewer = f"{server.url}{s['status']['vnc_url']}?ticket={ticket}"

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 800, "height": 600})
            page.goto(viewer)
            page.wait_for_selector("body[data-state=connected]", timeout=180_000)
            assert "ticket" not in page.url, "the credential must leave the address bar"
            deadline = time.monotonic() + 120
            pixel: list[int] = []
            while time.monotonic() < deadline:
                pixel = page.evaluate(
                    """() => { const c = document.querySelector('#screen canvas');
                               const d = c.getContext('2d').getImageData(c.width / 2,
                                         c.height / 2, 1, 1).data;
                               return [d[0], d[1], d[2]]; }"""
                )
                if all(abs(a - b) <= 8 for a, b in zip(pixel, COLOUR, strict=True)):
                    break
                time.sleep(0.2)
            # The whole desktop is in sight, below the bar, scaled to fill the window.
            top, bottom, left, right, bar, width, height = page.evaluate(
                """() => { const c = document.querySelector('#screen canvas')
                                          .getBoundingClientRect();
                           const b = document.getElementById('bar').getBoundingClientRect();
                           return [c.top, c.bottom, c.left, c.right, b.bottom,
                                   innerWidth, innerHeight]; }"""
            )
            assert top >= bar and bottom <= height and left >= 0 and right <= width
            assert right - left >= width - 1 or bottom - top >= height - bar - 1
            page.screenshot(path=str(tmp_path / "viewer.png"))
            assert all(abs(a - b) <= 8 for a, b in zip(pixel, COLOUR, strict=True)), pixel
        finally:
            browser.close()


def _desktop(app: str) -> str:
    from tether.core.models import Vnc
    from tether.service.templates import desktop_command

    return desktop_command(Vnc(enabled=True, resolution="640x480"), app)
