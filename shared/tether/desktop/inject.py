"""Input into an X display with the XTEST extension (python-xlib).

An `Injector` owns one X connection; use it from one thread at a time. Every method is quiet
about bad input, as the real Openctrol agent is (it only logs): coordinates are clamped to the
screen (or the monitor), non-numbers and unknown names are refused by returning False, text is
cut to `MAX_TEXT` characters, wheel steps to `MAX_WHEEL_STEPS` per call. X protocol errors are
logged, never raised; a lost connection raises `Xlib.error.ConnectionClosedError`.

Keys are X keysyms (see `tether.desktop.keys` for Windows virtual-key codes). A keysym that the
keyboard map lacks (most of Unicode) is typed by remapping a spare keycode — one with no keysyms
— to it; the spare keycodes are reused least-recently-used and given back by `close()`.
Unicode characters use keysym ``0x01000000 + codepoint`` (Latin-1 ones their own code).
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from types import TracebackType
from typing import Any

from Xlib import XK, X, display, error
from Xlib.ext import xtest

log = logging.getLogger(__name__)

MAX_TEXT = 4096
"""Characters typed per `text()` call; the rest is dropped."""
MAX_WHEEL_STEPS = 50
"""Wheel clicks per axis per `wheel()` call."""
WHEEL_DELTA = 120
"""One wheel notch in Windows units (Openctrol's `pointer_wheel`)."""
NORMALIZED_MAX = 65535
"""The top of Openctrol's absolute pointer range (0..65535 over the selected monitor)."""

REMAP_REUSE_AFTER = 0.05
"""Seconds a remapped spare keycode is left alone before it is remapped to another keysym.

A client reads the keyboard map when it handles the MappingNotify, not when the key was pressed:
a slot remapped before the client caught up would type the newer character. The pause bounds
how fast one `text()` call types characters that are not on the keyboard (about 19 spare
keycodes on Xvfb: ~380 such characters a second); characters on the map are not slowed.
"""

BUTTONS = {"left": 1, "middle": 2, "right": 3}
_SHIFT_L = int(XK.string_to_keysym("Shift_L"))
_SPECIAL_CHARS: dict[str, int] = {
    "\n": int(XK.string_to_keysym("Return")),
    "\r": int(XK.string_to_keysym("Return")),
    "\t": int(XK.string_to_keysym("Tab")),
    "\b": int(XK.string_to_keysym("BackSpace")),
}


def char_keysym(ch: str) -> int | None:
    """The keysym that types `ch`; None for other control characters and surrogates."""
    if ch in _SPECIAL_CHARS:
        return _SPECIAL_CHARS[ch]
    cp = ord(ch)
    if cp < 0x20 or 0x7F <= cp < 0xA0 or 0xD800 <= cp < 0xE000:
        return None
    if cp <= 0xFF:
        return cp
    return 0x01000000 + cp


def _int(v: object) -> int | None:
    """`v` as an int when it is a finite real number (bools are not numbers here)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return int(v)


def _clamp(v: int, low: int, high: int) -> int:
    return max(low, min(high, v))


class Injector:
    """Injects input into the X display `display_name` (e.g. ``":1"``)."""

    def __init__(self, display_name: str) -> None:
        self._d = display.Display(display_name)
        if not self._d.has_extension("XTEST"):
            self._d.close()
            raise RuntimeError(f"X display {display_name} has no XTEST extension")
        self._d.set_error_handler(self._on_error)
        screen = self._d.screen()
        self._root = screen.root
        self.width = int(screen.width_in_pixels)
        self.height = int(screen.height_in_pixels)
        self._min_kc = int(self._d.display.info.min_keycode)
        self._max_kc = int(self._d.display.info.max_keycode)
        mapping = self._d.get_keyboard_mapping(self._min_kc, self._max_kc - self._min_kc + 1)
        self._spare = [self._min_kc + i for i, syms in enumerate(mapping) if not any(syms)]
        self._remapped: OrderedDict[int, int] = OrderedDict()  # keysym -> spare keycode
        self._used: dict[int, float] = {}  # spare keycode -> when it last typed (monotonic)
        self._held: set[int] = set()  # keycodes pressed and not released

    @staticmethod
    def _on_error(err: error.XError, request: Any = None) -> None:
        log.warning("X error while injecting input: %s", err)

    # pointer -------------------------------------------------------------------------------

    def position(self) -> tuple[int, int]:
        """The pointer's position in screen pixels, as the X server reports it."""
        p = self._d.screen().root.query_pointer()
        return int(p.root_x), int(p.root_y)

    def move(self, x: object, y: object) -> bool:
        """Move the pointer to screen pixel (x, y), clamped to the screen."""
        xi, yi = _int(x), _int(y)
        if xi is None or yi is None:
            return False
        xi = _clamp(xi, 0, self.width - 1)
        yi = _clamp(yi, 0, self.height - 1)
        xtest.fake_input(self._d, X.MotionNotify, x=xi, y=yi)
        self._d.sync()
        return True

    def move_normalized(
        self, nx: object, ny: object, monitor: tuple[int, int, int, int] | None = None
    ) -> bool:
        """Openctrol's absolute move: 0..65535 over `monitor` (left, top, width, height).

        0 is the monitor's left/top pixel and 65535 its right/bottom one; values outside the range
        are clamped. Without a monitor, the whole screen.
        """
        xi, yi = _int(nx), _int(ny)
        if xi is None or yi is None:
            return False
        left, top, width, height = monitor or (0, 0, self.width, self.height)
        if width <= 0 or height <= 0:
            return False
        xi = _clamp(xi, 0, NORMALIZED_MAX)
        yi = _clamp(yi, 0, NORMALIZED_MAX)
        px = left + round(xi * (width - 1) / NORMALIZED_MAX)
        py = top + round(yi * (height - 1) / NORMALIZED_MAX)
        return self.move(px, py)

    def move_relative(self, dx: object, dy: object) -> bool:
        """Move the pointer by (dx, dy) pixels, stopping at the screen's edges."""
        dxi, dyi = _int(dx), _int(dy)
        if dxi is None or dyi is None:
            return False
        x, y = self.position()
        return self.move(x + _clamp(dxi, -32768, 32767), y + _clamp(dyi, -32768, 32767))

    def button(self, name: object, down: bool) -> bool:
        """Press (`down`) or release ``"left"``, ``"middle"`` or ``"right"`` (any case)."""
        b = BUTTONS.get(name.lower()) if isinstance(name, str) else None
        if b is None:
            return False
        xtest.fake_input(self._d, X.ButtonPress if down else X.ButtonRelease, b)
        self._d.sync()
        return True

    def wheel(self, delta_x: object = 0, delta_y: object = 0) -> bool:
        """Scroll by Windows wheel deltas: 120 a notch, +y away from the user (up), +x right.

        A delta smaller than a notch still scrolls one click (clients send small values too).
        Up, down, left, right are X buttons 4, 5, 6, 7.
        """
        dx, dy = _int(delta_x), _int(delta_y)
        if dx is None or dy is None:
            return False
        for delta, plus, minus in ((dy, 4, 5), (dx, 7, 6)):
            if not delta:
                continue
            steps = min(MAX_WHEEL_STEPS, max(1, abs(delta) // WHEEL_DELTA))
            b = plus if delta > 0 else minus
            for _ in range(steps):
                xtest.fake_input(self._d, X.ButtonPress, b)
                xtest.fake_input(self._d, X.ButtonRelease, b)
        self._d.sync()
        return True

    # keys ----------------------------------------------------------------------------------

    def _keycode(self, keysym: int) -> tuple[int, bool] | None:
        """(keycode, needs shift) typing `keysym`, remapping a spare keycode when needed."""
        if keysym in self._remapped:
            self._remapped.move_to_end(keysym)
            kc = self._remapped[keysym]
            self._used[kc] = time.monotonic()
            return kc, False
        for kc, index in self._d.keysym_to_keycodes(keysym):
            if index in (0, 1) and kc not in self._remapped.values():
                return int(kc), index == 1
        if not self._spare and not self._remapped:
            return None
        if self._spare:
            kc = self._spare.pop()
        else:
            # reuse the least recently used slot that is not held down
            free = [old for old, old_kc in self._remapped.items() if old_kc not in self._held]
            if not free:
                return None
            kc = self._remapped.pop(free[0])
            wait = self._used.get(kc, 0.0) + REMAP_REUSE_AFTER - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        self._d.change_keyboard_mapping(kc, [(keysym, keysym)])
        self._d.sync()
        self._remapped[keysym] = kc
        self._used[kc] = time.monotonic()
        return kc, False

    def key(self, keysym: object, down: bool) -> bool:
        """Press (`down`) or release the key that types `keysym` (as on the keyboard map)."""
        ks = _int(keysym)
        if ks is None or not 0 < ks <= 0x1FFFFFFF:
            return False
        found = self._keycode(ks)
        if found is None:
            return False
        kc, _shift = found
        xtest.fake_input(self._d, X.KeyPress if down else X.KeyRelease, kc)
        if down:
            self._held.add(kc)
        else:
            self._held.discard(kc)
        self._d.sync()
        return True

    def text(self, text: object) -> int:
        """Type `text` (any Unicode), press and release per character; how many were typed.

        Characters with no keysym (control characters other than newline, tab and backspace)
        are skipped; only the first `MAX_TEXT` characters are considered.
        """
        if not isinstance(text, str):
            return 0
        typed = 0
        for ch in text[:MAX_TEXT]:
            ks = char_keysym(ch)
            found = self._keycode(ks) if ks is not None else None
            if found is None:
                continue
            kc, shift = found
            shift_kc = self._keycode(_SHIFT_L) if shift else None
            if shift_kc is not None:
                xtest.fake_input(self._d, X.KeyPress, shift_kc[0])
            xtest.fake_input(self._d, X.KeyPress, kc)
            xtest.fake_input(self._d, X.KeyRelease, kc)
            if shift_kc is not None:
                xtest.fake_input(self._d, X.KeyRelease, shift_kc[0])
            typed += 1
            self._d.sync()
        return typed

    def release_all(self) -> None:
        """Release every key this injector pressed and did not release (e.g. on disconnect)."""
        for kc in sorted(self._held):
            xtest.fake_input(self._d, X.KeyRelease, kc)
        self._held.clear()
        self._d.sync()

    def close(self) -> None:
        """Release held keys, give the spare keycodes back their empty mapping, disconnect."""
        try:
            self.release_all()
            for kc in self._remapped.values():
                self._d.change_keyboard_mapping(kc, [(0, 0)])
            self._d.sync()
        except error.ConnectionClosedError:
            pass
        finally:
            self._d.close()

    def __enter__(self) -> Injector:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
