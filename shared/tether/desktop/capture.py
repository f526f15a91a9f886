"""Capture an X display's monitor with mss, encode it as JPEG with Pillow, skip unchanged screens.

A `Capture` owns one X connection (mss's); use it from one thread at a time. `grab()` answers
None when the monitor's pixels are byte-for-byte what the last `grab()` saw (a CRC-32 of the raw
BGRA buffer, far cheaper than encoding), so an unchanged screen sends nothing; `force=True`
encodes anyway (the first frame after `hello`, a new viewer, a quality change).

Monitors are named as the real Openctrol agent names them: ids ``DISPLAY1``, ``DISPLAY2`` … in
mss's order (1-based), with the `hello` message's fields (id, name, width, height, is_primary).
"""

from __future__ import annotations

import io
import threading
import zlib
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import mss
from PIL import Image

from tether.desktop import frames

DEFAULT_QUALITY = 75
"""The real agent's fixed JPEG quality."""


@dataclass(frozen=True)
class Monitor:
    id: str
    name: str
    width: int
    height: int
    is_primary: bool
    left: int = 0
    top: int = 0

    def hello(self) -> dict[str, Any]:
        """The monitor as the `hello` message and `GET /rd/monitors` list it."""
        return {
            "id": self.id,
            "name": self.name,
            "width": self.width,
            "height": self.height,
            "is_primary": self.is_primary,
        }


@dataclass(frozen=True)
class Frame:
    jpeg: bytes
    width: int
    height: int
    monitor_id: str

    def message(self) -> bytes:
        """The binary WebSocket message: the 16-byte ``OFRA`` header + the JPEG."""
        return frames.frame(self.jpeg, self.width, self.height)


@dataclass(frozen=True)
class Shot:
    """A monitor's pixels, encoded once per quality its viewers want."""

    image: Image.Image
    monitor_id: str

    def encode(self, quality: object = DEFAULT_QUALITY) -> Frame:
        out = io.BytesIO()
        self.image.save(out, "JPEG", quality=clamp_quality(quality))
        return Frame(out.getvalue(), self.image.width, self.image.height, self.monitor_id)


def clamp_quality(quality: object) -> int:
    """A JPEG quality in 1..95 (Pillow's useful range); anything not a number gives the default."""
    if isinstance(quality, bool) or not isinstance(quality, int | float) or quality != quality:
        return DEFAULT_QUALITY
    return max(1, min(95, int(quality)))


class Capture:
    """Grabs one monitor of an X display (`display` as in ``DISPLAY``, e.g. ``":1"``)."""

    def __init__(self, display: str, monitor_id: str | None = None) -> None:
        self._sct = mss.MSS(display=display)
        self._lock = threading.Lock()
        self._last: int | None = None
        self._monitors = self._list()
        primary = next((m for m in self._monitors if m.is_primary), self._monitors[0])
        self._current = primary
        if monitor_id is not None:
            self.select(monitor_id)

    def _list(self) -> list[Monitor]:
        raw = self._sct.monitors
        listed = raw[1:] or raw[:1]  # [0] is the union of all monitors
        found = [
            Monitor(
                id=f"DISPLAY{n}",
                name=str(m.get("name") or m.get("output") or f"Display {n}"),
                width=int(m["width"]),
                height=int(m["height"]),
                is_primary=bool(m.get("is_primary", False)),
                left=int(m["left"]),
                top=int(m["top"]),
            )
            for n, m in enumerate(listed, start=1)
        ]
        if found and not any(m.is_primary for m in found):
            first = found[0]
            found[0] = Monitor(
                first.id, first.name, first.width, first.height, True, first.left, first.top
            )
        return found

    def monitors(self) -> list[Monitor]:
        """The display's monitors (the list is read once, when the capture opens)."""
        return list(self._monitors)

    @property
    def monitor(self) -> Monitor:
        """The monitor being captured."""
        return self._current

    def select(self, monitor_id: str) -> bool:
        """Capture `monitor_id` from now on; False (and no change) for an unknown id."""
        for m in self._monitors:
            if m.id == monitor_id:
                with self._lock:
                    if m != self._current:
                        self._current = m
                        self._last = None
                return True
        return False

    def shot(self, *, force: bool = False) -> Shot | None:
        """The monitor's pixels, or None when nothing changed since the last shot."""
        with self._lock:
            m = self._current
            shot = self._sct.grab(
                {"left": m.left, "top": m.top, "width": m.width, "height": m.height}
            )
            raw = shot.raw
            digest = zlib.crc32(raw) ^ (len(raw) << 32)
            if digest == self._last and not force:
                return None
            self._last = digest
            image = Image.frombuffer("RGB", shot.size, raw, "raw", "BGRX", 0, 1)
            return Shot(image, m.id)

    def grab(self, quality: object = DEFAULT_QUALITY, *, force: bool = False) -> Frame | None:
        """The monitor as a JPEG frame, or None when nothing changed since the last grab."""
        shot = self.shot(force=force)
        return None if shot is None else shot.encode(quality)

    def close(self) -> None:
        self._sct.close()

    def __enter__(self) -> Capture:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
