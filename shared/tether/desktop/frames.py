"""The Openctrol frame: a 16-byte header, then the JPEG, in one binary WebSocket message.

Header (the reference document and the real agent, `DesktopWebSocketHandler.cs`): bytes 0-3 the
ASCII magic ``OFRA``; bytes 4-8 width, 8-12 height, 12-16 pixel format, each a little-endian
int32 (the real clients read them as unsigned little-endian: the values are never negative).
Format 1 is JPEG, the only format there is. Width and height are the monitor's pixel size.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

MAGIC = b"OFRA"
FORMAT_JPEG = 1
HEADER_SIZE = 16
_HEADER = struct.Struct("<4siii")
_INT32_MAX = 2**31 - 1


class FrameHeader(NamedTuple):
    width: int
    height: int
    format: int


def header(width: int, height: int, fmt: int = FORMAT_JPEG) -> bytes:
    """The 16 header bytes; `ValueError` for a size or format outside 0..2**31-1."""
    for v in (width, height, fmt):
        if not 0 <= v <= _INT32_MAX:
            raise ValueError(f"frame header value out of range: {v}")
    return _HEADER.pack(MAGIC, width, height, fmt)


def parse_header(data: bytes) -> FrameHeader:
    """The header at the start of `data` (a whole frame or just its 16 bytes).

    `ValueError` when `data` is shorter than 16 bytes or does not start with ``OFRA``.
    """
    if len(data) < HEADER_SIZE:
        raise ValueError(f"frame shorter than its {HEADER_SIZE}-byte header: {len(data)}")
    magic, width, height, fmt = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ValueError(f"not an Openctrol frame: magic {magic!r}")
    return FrameHeader(width, height, fmt)


def frame(jpeg: bytes, width: int, height: int, fmt: int = FORMAT_JPEG) -> bytes:
    """The whole binary message: header + JPEG bytes."""
    return header(width, height, fmt) + jpeg


def payload(data: bytes) -> bytes:
    """The image bytes of a frame (after the header), checking the header first."""
    parse_header(data)
    return data[HEADER_SIZE:]
