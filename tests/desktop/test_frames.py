"""The Openctrol frame header, read the way the real clients read it (HA ws.py, the card)."""

from __future__ import annotations

import struct

import pytest
from tether.desktop import frames


def test_header_is_ofra_then_little_endian_width_height_format() -> None:
    data = frames.frame(b"\xff\xd8jpeg", 1280, 800)
    assert len(frames.header(1280, 800)) == 16
    assert data[:4] == b"OFRA"
    # Kaando2000/openctrol@4472341 homeassistant/custom_components/openctrol/ws.py:291-319
    # unpacks "<I" at 4, 8 and 12; the card reads getUint32(4, true) and (8, true).
    assert struct.unpack("<III", data[4:16]) == (1280, 800, 1)
    assert data[16:] == b"\xff\xd8jpeg"
    assert frames.parse_header(data) == (1280, 800, frames.FORMAT_JPEG)
    assert frames.payload(data) == b"\xff\xd8jpeg"


def test_bad_headers_are_refused() -> None:
    with pytest.raises(ValueError):
        frames.parse_header(b"OFRA\x00\x00")
    with pytest.raises(ValueError):
        frames.parse_header(b"XXXX" + bytes(12))
    with pytest.raises(ValueError):
        frames.header(-1, 10)
    with pytest.raises(ValueError):
        frames.header(2**31, 10)
