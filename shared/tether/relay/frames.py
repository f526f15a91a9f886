"""Following the WebSocket frames (RFC 6455, section 5.2) in a relayed byte stream, for a
passive copy of it (`tether.relay.recording`).

The relay passes a connection's bytes on untouched; what reads a copy needs each frame's
boundaries, but the payload of only a few. `websockets`' protocols parse every frame into a
copy of its payload (and unmask every client frame): a copy or two of every relayed byte. A
`Follower` reads the headers and skips what it is not asked to keep, at the cost of a few
comparisons per chunk (`tests/bench/test_recording_bench.py`). It validates nothing: the two
ends do, and close the connection on a broken frame; a copy read wrong is only a copy.
"""

from __future__ import annotations

from collections.abc import Callable

from websockets.frames import apply_mask  # type: ignore[attr-defined]  # C, when built

# Whether to keep the payload of a frame, from its opcode and length.
Wanted = Callable[[int, int], bool]
# A frame has ended: its opcode, FIN bit, and payload (unmasked) if it was kept, else None.
Ended = Callable[[int, bool, bytes | None], None]


class Follower:
    def __init__(self, wanted: Wanted, ended: Ended) -> None:
        self.wanted, self.ended = wanted, ended
        self.head = bytearray()  # a header read in part
        self.left = 0  # payload bytes of the current frame still to come
        self.opcode, self.fin, self.mask = 0, False, b""
        self.kept: bytearray | None = None  # the current frame's payload, if it is kept

    def feed(self, data: bytes) -> None:
        i, n = 0, len(data)
        if 0 < n <= self.left:  # the common case: the middle of a frame
            self._payload(data)
            return
        view = memoryview(data)
        while i < n:
            if self.left:
                take = min(self.left, n - i)
                self._payload(view[i : i + take])
                i += take
                continue
            had = len(self.head)
            self.head += view[i : i + 14 - had]  # 14: the longest header
            used = self._header()
            if used is None:  # not all of it yet
                i = n
            else:
                i += used - had
                self.head.clear()
                if not self.left:
                    self._end()

    def _payload(self, chunk: bytes | memoryview) -> None:
        self.left -= len(chunk)
        if self.kept is not None:
            self.kept += chunk
        if not self.left:
            self._end()

    def _header(self) -> int | None:
        """Reads the header in `self.head`: its length, or None if it is not all there."""
        head = self.head
        if len(head) < 2:
            return None
        size, masked = head[1] & 0x7F, head[1] & 0x80
        at = 2 + {126: 2, 127: 8}.get(size, 0)
        if len(head) < at + (4 if masked else 0):
            return None
        if size >= 126:
            size = int.from_bytes(head[2:at], "big")
        self.mask = bytes(head[at : at + 4]) if masked else b""
        self.opcode, self.fin, self.left = head[0] & 0x0F, bool(head[0] & 0x80), size
        self.kept = bytearray() if self.wanted(self.opcode, size) else None
        return at + len(self.mask)

    def _end(self) -> None:
        payload = None
        if self.kept is not None:
            payload = bytes(self.kept)
            if self.mask:
                payload = apply_mask(payload, self.mask)
        self.kept = None
        self.ended(self.opcode, self.fin, payload)
