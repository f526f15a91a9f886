"""Input injected with XTEST, checked by what the X server reports and a real window receives."""

from __future__ import annotations

from collections.abc import Callable

from tether.desktop import keys
from tether.desktop.inject import MAX_TEXT, Injector
from Xlib import XK

from tests.desktop.conftest import HEIGHT, WIDTH, Recorder
from tests.waiting import wait_for


def test_pointer_moves_absolute_normalized_relative_and_clamped(xvfb: str) -> None:
    with Injector(xvfb) as inj:
        assert (inj.width, inj.height) == (WIDTH, HEIGHT)
        assert inj.move(300, 200)
        assert inj.position() == (300, 200)
        assert inj.move_relative(10, -5)
        assert inj.position() == (310, 195)
        # the integration's absolute move: 0..65535 over the monitor; 32768 is its centre
        assert inj.move_normalized(32768, 32768, (0, 0, WIDTH, HEIGHT))
        assert inj.position() == (640, 400)
        assert inj.move_normalized(65535, 0)
        assert inj.position() == (WIDTH - 1, 0)
        # off-screen and absurd values: clamped or refused, never an error
        assert inj.move(-50, 99999)
        assert inj.position() == (0, HEIGHT - 1)
        assert inj.move_relative(10**9, -(10**9))
        assert inj.position() == (WIDTH - 1, 0)
        assert inj.move_normalized(-5, 10**7)
        assert inj.position() == (0, HEIGHT - 1)
        for bad in ((float("nan"), 1), ("1", 2), (None, 3), (True, 4)):
            assert not inj.move(*bad)
            assert not inj.move_relative(*bad)
            assert not inj.move_normalized(*bad)
        assert inj.position() == (0, HEIGHT - 1)


def test_clicks_and_wheel_land_on_the_window_under_the_pointer(
    xvfb: str, recorder: Recorder
) -> None:
    with Injector(xvfb) as inj:
        assert inj.move(150, 130)  # the window sits at (100, 100)
        assert inj.button("left", True) and inj.button("left", False)
        assert inj.button("RIGHT", True) and inj.button("right", False)
        assert not inj.button("fourth", True)
        assert not inj.button(None, True)
        assert inj.wheel(0, 120)  # one notch away from the user: X button 4
        assert inj.wheel(-240, 0)  # two notches left: X button 6, twice
        assert wait_for(lambda: len(recorder.clicks) >= 5, 10), recorder.clicks
        assert recorder.clicks == [(1, 50, 30), (3, 50, 30), (4, 50, 30), (6, 50, 30), (6, 50, 30)]


def test_keys_and_unicode_text_reach_the_focused_window(xvfb: str, recorder: Recorder) -> None:
    ks = XK.string_to_keysym
    with Injector(xvfb) as inj:
        # the integration's Ctrl+A: VK 0x11 down, 0x41 down, 0x41 up, 0x11 up
        for vk, down in ((0x11, True), (0x41, True), (0x41, False), (0x11, False)):
            sym = keys.keysym(vk)
            assert sym is not None and inj.key(sym, down)
        assert not inj.key(None, True)
        assert not inj.key(-1, True)
        typed = inj.text("Hi é€😀\n")
        assert typed == 7
        assert inj.text(12) == 0
        want = [ks("Control_L"), ks("a")]
        text = [ks("Shift_L"), ks("H"), ks("i"), ks("space"), 0xE9]
        text += [0x01000000 + ord("€"), 0x01000000 + ord("😀"), ks("Return")]
        assert wait_for(lambda: len(recorder.pressed()) >= len(want + text), 10), recorder.keys
        assert recorder.pressed() == want + text


def _pressed_at_least(recorder: Recorder, n: int) -> Callable[[], bool]:
    return lambda: len(recorder.pressed()) >= n


def test_more_unicode_than_spare_keycodes_reuses_them_in_order(
    xvfb: str, recorder: Recorder
) -> None:
    # 60 characters, more than Xvfb's ~19 empty keycodes, typed 12 at a time: a client reads the
    # keyboard map when it gets to the MappingNotify, so each batch waits for the window to catch up
    chars = "".join(chr(0x4E00 + i) for i in range(60))
    want: list[int] = []
    with Injector(xvfb) as inj:
        for start in range(0, len(chars), 12):
            batch = chars[start : start + 12]
            assert inj.text(batch) == len(batch)
            want += [0x01000000 + ord(c) for c in batch]
            assert wait_for(_pressed_at_least(recorder, len(want)), 10)
        assert recorder.pressed() == want


def test_huge_text_is_cut_quietly(xvfb: str) -> None:
    with Injector(xvfb) as inj:
        assert inj.text("x" * (MAX_TEXT * 3)) == MAX_TEXT
        assert inj.text("\x00\x01\x7f") == 0  # control characters have no key
