"""A session's terminal recordings (`session.recordings`): asciicast v2 files that
`asciinema play`, any asciinema player or `tether logs --recording` replay.

    rec = s.recordings.start()          # everything the session's terminals show from now on
    ...                                 # (tether shell, the terminal WebSocket)
    s.recordings.stop(rec.id)           # answered once what was recorded is stored
    s.recordings.download(rec.id, "session.cast")

or `with s.recordings.record() as rec:`, stopped when the block ends.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tether import errors
from tether.sdk import calls
from tether.sdk.calls import Call
from tether.sdk.types import _Answer, parse

if TYPE_CHECKING:
    from tether.sdk.aio import AsyncSession
    from tether.sdk.client import Session

MEDIA_TYPE = "application/x-asciicast"


class TerminalInfo(_Answer):
    """A terminal a recording recorded: its size as recording began."""

    id: str
    width: int
    height: int


class RecordingInfo(_Answer):
    """A recording. `status`: recording, stopped, or failed (its storage failed: `error` says
    how; what was stored still plays)."""

    id: str
    session_id: str
    status: Literal["recording", "stopped", "failed"]
    started_at: datetime
    stopped_at: datetime | None = None
    size: int = 0  # bytes of events stored
    width: int | None = None
    height: int | None = None
    error: str | None = None
    expires_at: datetime | None = None
    # In the order they opened. Its cast plays them one at a time; one open beside another
    # plays alone: `read(rec, terminal=its id)`.
    terminals: list[TerminalInfo] = []


def _path(session_id: str, *rest: str) -> str:
    return calls.session_path(session_id, "recordings", *rest)


def _start(session_id: str) -> Call:
    # The same key on every try: a retry after a lost answer starts nothing twice.
    return Call("POST", _path(session_id), idempotency_key=calls.new_key())


def _stop(session_id: str, recording_id: str) -> Call:
    return Call("POST", _path(session_id, recording_id, "stop"), timeout=30, repeatable=True)


def _page(session_id: str, cursor: str | None) -> Call:
    params: dict[str, Any] = {"limit": 100}
    if cursor:
        params["cursor"] = cursor
    return Call("GET", _path(session_id), params=params)


def _cast(session_id: str, recording: str | RecordingInfo, terminal: str | None) -> Call:
    params = {"terminal": terminal} if terminal else {}
    return Call("GET", _path(session_id, _id(recording)), params=params,
                headers={"Accept": MEDIA_TYPE})  # fmt: skip


def _id(recording: str | RecordingInfo) -> str:
    return recording if isinstance(recording, str) else recording.id


def _listed(answer: Any) -> tuple[list[RecordingInfo], str | None]:
    return [parse(RecordingInfo, r) for r in answer["recordings"]], answer.get("next_cursor")


def _in_progress(found: list[RecordingInfo]) -> str:
    for r in found:
        if r.status == "recording":
            return r.id
    raise errors.NotFound("This session is not being recorded")


class Recordings:
    """A session's recordings (`session.recordings`)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def start(self) -> RecordingInfo:
        """Starts recording the session's terminal (`Conflict` while one is on already)."""
        return parse(RecordingInfo, self.session.client._do(_start(self.session.id)))

    def stop(self, recording: str | RecordingInfo | None = None) -> RecordingInfo:
        """Stops it (None: the one in progress); answered once what was recorded is stored."""
        rid = _id(recording) if recording is not None else _in_progress(self.list())
        return parse(RecordingInfo, self.session.client._do(_stop(self.session.id, rid)))

    def list(self) -> builtins.list[RecordingInfo]:
        """The session's recordings, newest first."""
        found: builtins.list[RecordingInfo] = []
        cursor: str | None = None
        while True:
            page, cursor = _listed(self.session.client._do(_page(self.session.id, cursor)))
            found += page
            if not cursor:
                return found

    def read(self, recording: str | RecordingInfo, terminal: str | None = None) -> bytes:
        """The recording's cast (asciicast v2); with `terminal`, that one of its terminals."""
        with self.session.client._open(_cast(self.session.id, recording, terminal)) as response:
            return response.read()

    def download(
        self, recording: str | RecordingInfo, path: str | Path, terminal: str | None = None
    ) -> Path:
        """Saves the cast (of `terminal` alone, if given) at `path`, written as it arrives (a
        failed download leaves nothing)."""
        target = Path(path)
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            with (
                self.session.client._open(_cast(self.session.id, recording, terminal)) as response,
                partial.open("wb") as out,
            ):
                for chunk in response.iter_bytes(calls.CHUNK):
                    out.write(chunk)
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
        return target

    @contextmanager
    def record(self) -> Iterator[RecordingInfo]:
        """Records while the block runs (stopped as it ends, however it ends)."""
        started = self.start()
        try:
            yield started
        finally:
            self.stop(started)


class AsyncRecordings:
    """As `Recordings`, awaited (`async with s.recordings.record() as rec:`)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def start(self) -> RecordingInfo:
        return parse(RecordingInfo, await self.session.client._do(_start(self.session.id)))

    async def stop(self, recording: str | RecordingInfo | None = None) -> RecordingInfo:
        rid = _id(recording) if recording is not None else _in_progress(await self.list())
        return parse(RecordingInfo, await self.session.client._do(_stop(self.session.id, rid)))

    async def list(self) -> builtins.list[RecordingInfo]:
        found: builtins.list[RecordingInfo] = []
        cursor: str | None = None
        while True:
            page, cursor = _listed(await self.session.client._do(_page(self.session.id, cursor)))
            found += page
            if not cursor:
                return found

    async def read(self, recording: str | RecordingInfo, terminal: str | None = None) -> bytes:
        async with self.session.client._open(_cast(self.session.id, recording, terminal)) as r:
            return await r.aread()

    async def download(
        self, recording: str | RecordingInfo, path: str | Path, terminal: str | None = None
    ) -> Path:
        """Saves the cast (of `terminal` alone, if given) at `path` (read whole first: a failed
        download leaves nothing)."""
        data = await self.read(recording, terminal)
        target = Path(path)
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            partial.write_bytes(data)
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
        return target

    @asynccontextmanager
    async def record(self) -> AsyncIterator[RecordingInfo]:
        started = await self.start()
        try:
            yield started
        finally:
            await self.stop(started)
