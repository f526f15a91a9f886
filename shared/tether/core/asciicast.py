"""asciicast v2, the file format asciinema records and plays (docs.asciinema.org): a header
line, a JSON object, then one JSON array per event, `[seconds since the start, code, data]`:
"o" output, "r" a resize ("COLSxROWS"), "i" input, "m" a marker.

Pure: what a recording's parts hold, and how parts written by several relayed streams become
one file in time order without holding it whole.
"""

from __future__ import annotations

import codecs
import heapq
from collections.abc import Iterable, Iterator
from datetime import datetime

import orjson

MEDIA_TYPE = "application/x-asciicast"


def header(width: int, height: int, started: datetime, title: str | None = None) -> bytes:
    """The first line of a cast."""
    head: dict[str, object] = {
        "version": 2,
        "width": width,
        "height": height,
        "timestamp": int(started.timestamp()),
        "env": {"TERM": "xterm-256color", "SHELL": "/bin/bash"},
    }
    if title:
        head["title"] = title
    return orjson.dumps(head) + b"\n"


def event(at: float, code: str, data: str) -> bytes:
    """One event line; `at` in seconds, to the microsecond as asciinema writes it."""
    return orjson.dumps([round(at, 6), code, data]) + b"\n"


def times(lines: bytes) -> Iterator[tuple[float, bytes]]:
    """Each event line of a part (or a cast without its header) with its time."""
    for line in lines.splitlines(keepends=True):
        if line.strip():
            yield float(orjson.loads(line)[0]), line


def merge(streams: Iterable[Iterable[tuple[float, bytes]]]) -> Iterator[bytes]:
    """Event lines of several streams, each in time order, as one stream in time order (a
    stream's own events keep their order; ties go to the stream listed first)."""
    for _, line in heapq.merge(*streams, key=lambda pair: pair[0]):
        yield line


class Output:
    """Terminal bytes as "o" events' text: UTF-8 decoded across frame boundaries (a character
    split between two frames comes out whole, with the second), undecodable bytes replaced,
    as asciinema's own recorder does."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def text(self, data: bytes) -> str:
        return self._decoder.decode(data)

    def rest(self) -> str:
        """What an unfinished character at the end left over (as replacement characters)."""
        return self._decoder.decode(b"", final=True)
