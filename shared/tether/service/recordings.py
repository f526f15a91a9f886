"""Recordings of a session's terminal, in asciicast v2 (`tether.core.asciicast`).

The workspace is hostile, so the relay records what the terminal shows, outside it
(`tether.relay.recording`); the workspace never sees or holds a recording. A recording is:

- a record (`recordings`): its session and owner, status (recording → stopped, or failed when
  its storage failed), times, size, the terminals (relayed streams) it recorded, and how many
  of them are writing to it now;
- its parts (`recording_parts`): each a blob of event lines in the recordings' own
  `ArtifactStore` (Cloud Storage in the cloud, out of the workspace's reach), named by digest,
  with its stream, order and time range in a small record: the part index that joins what
  several relay instances wrote, the relays keeping no state of their own;
- while it records, `recording_on/<session id>`, pointing at it: one recording at a time per
  session (made by a create, atomic), and the one document a relay reads to know.

Its cast plays one terminal at a time: the first one recorded, then each opened after the ones
before it closed (a shell reopened). A terminal open beside another (two browser tabs) would
interleave two screens in one player, so it plays alone: `cast(..., terminal=its id)`.

Everything is kept TETHER_RECORDING_RETENTION after it started (`purge_at`: the sweeper, a
Firestore TTL policy; the bucket's lifecycle rule for the blobs).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel

from tether.core import asciicast
from tether.core.lifecycle import SessionState
from tether.core.models import Principal, Record, Session, utcnow
from tether.core.ports import ArtifactStore, Store
from tether.errors import Conflict, NotFound
from tether.service import pages
from tether.service.pages import Page
from tether.service.repo import Repo
from tether.service.sessions import Sessions

log = logging.getLogger(__name__)
KIND = "recordings"
PARTS = "recording_parts"
ON = "recording_on"
MAX_PAGE = 100
PARTS_PAGE = 500  # part records read at a time while a cast is assembled
STOP_WAIT = 8.0  # seconds a stop waits for the relays to write what they hold
DEFAULT_SIZE = (80, 24)
MAX_TERMINALS = 100  # terminals one recording records (a record stays small)

Status = Literal["recording", "stopped", "failed"]


class Terminal(BaseModel):
    """A terminal (relayed stream) a recording recorded, with its size as recording began."""

    id: str
    width: int
    height: int


class Recording(Record):
    id: str
    session_id: str
    owner: str
    status: Status = "recording"
    started_at: datetime
    stopped_at: datetime | None = None
    size: int = 0  # bytes of events stored (the cast, but for its header line)
    parts: int = 0
    writers: int = 0  # relayed streams writing to it now
    width: int | None = None  # the terminal's, as the first stream recorded saw it
    height: int | None = None
    terminals: list[Terminal] = []  # in the order they joined
    error: str | None = None  # why it failed
    purge_at: datetime


class Part(Record):
    id: str  # <recording>.<stream>.<seq, 8 digits>: a stream's parts sort in order
    recording_id: str
    stream: str
    seq: int
    digest: str
    start: float  # seconds since the recording started: its first event
    end: float  # and its last
    size: int
    purge_at: datetime


class On(Record):
    """The session's recording in progress."""

    id: str  # the session's id
    recording_id: str
    started_at: datetime
    purge_at: datetime


def part_id(recording_id: str, stream: str, seq: int) -> str:
    return f"{recording_id}.{stream}.{seq:08d}"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Recordings:
    store: Store
    sessions: Sessions
    blobs: ArtifactStore
    retention: timedelta = timedelta(days=30)
    records: Repo[Recording] = field(init=False)
    parts: Repo[Part] = field(init=False)
    on: Repo[On] = field(init=False)

    def __post_init__(self) -> None:
        self.records = Repo(self.store, KIND, Recording)
        self.parts = Repo(self.store, PARTS, Part)
        self.on = Repo(self.store, ON, On)

    # -- the API's calls (owner only: another user's session or recording is not found) ----

    def start(self, who: Principal, session_id: str) -> Recording:
        """Starts recording the session's terminal (a running session; one recording at a time:
        Conflict RECORDING_IN_PROGRESS)."""
        session = self.sessions.usable(who, session_id)
        now = utcnow()
        made = Recording(
            id="rec-" + secrets.token_hex(8),
            session_id=session.id,
            owner=session.owner,
            started_at=now,
            purge_at=now + self.retention,
        )
        pointer = On(id=session.id, recording_id=made.id, started_at=now, purge_at=made.purge_at)
        self.records.create(made.id, made)
        try:
            self.on.create(session.id, pointer)
        except Conflict:
            self.store.delete(KIND, made.id)
            current = self.on.find(session.id)
            raise Conflict(
                "This session is being recorded already: stop that recording first",
                code="RECORDING_IN_PROGRESS",
                recording_id=current.recording_id if current else None,
            ) from None
        return made

    def stop(self, who: Principal, session_id: str, recording_id: str) -> Recording:
        """Stops it (a stopped or failed one stays as it is), then waits a little for the relays
        to write what they hold, so that what is downloaded next is all of it."""
        found = self.get(who, session_id, recording_id)

        def stopped(r: Recording) -> Recording | None:
            if r.status != "recording":
                return None
            r.status, r.stopped_at = "stopped", utcnow()
            return r

        found = self.records.mutate(found.id, stopped, start=found)
        self._unpoint(found)
        return self._settled(found)

    def get(self, who: Principal, session_id: str, recording_id: str) -> Recording:
        session = self.sessions.get(who, session_id)
        found = self.records.find(recording_id)
        if found is None or found.session_id != session.id:
            raise NotFound("Recording not found", code="RECORDING_NOT_FOUND", id=recording_id)
        return self._ended_with(session, found)

    def page(
        self, who: Principal, session_id: str, limit: int = 50, cursor: str | None = None
    ) -> Page[Recording]:
        """The session's recordings, newest first: one query of at most `limit` (+1)."""
        session = self.sessions.get(who, session_id)
        after = pages.position(cursor) if cursor else None
        found = self.records.query(
            [("session_id", "==", session.id)], "started_at", True, limit + 1, 0, after
        )
        more = found[limit - 1] if len(found) > limit else None
        token = pages.cursor(more.started_at, more.id) if more else None
        shown = [self._ended_with(session, r) for r in found[:limit]]
        return Page(shown, len(shown), token)

    def cast(
        self, recording: Recording, title: str | None = None, terminal: str | None = None
    ) -> Iterator[bytes]:
        """The recording as an asciicast v2 file, a line at a time: its header, then the events
        of its terminals one at a time (see the module), or of `terminal` alone. NotFound, at
        once, if it recorded no such terminal. One part per terminal is held at a time."""
        width, height = recording.width or DEFAULT_SIZE[0], recording.height or DEFAULT_SIZE[1]
        if terminal is not None:
            found = next((t for t in recording.terminals if t.id == terminal), None)
            if found is None:
                raise NotFound(f"This recording has no terminal {terminal}")
            width, height = found.width, found.height
        head = asciicast.header(width, height, recording.started_at, title)
        return itertools.chain([head], self._played(recording.id, terminal))

    def _played(self, recording_id: str, terminal: str | None) -> Iterator[bytes]:
        streams: dict[str, list[Part]] = {}
        for part in self._parts(recording_id):
            if terminal is None or part.stream == terminal:
                streams.setdefault(part.stream, []).append(part)
        yield from asciicast.merge(self._events(ps) for ps in _one_at_a_time(streams.values()))

    # -- what the relay calls (its threads; tether.relay.recording) ----------------------------

    def recording_on(self, session_id: str) -> On | None:
        """The session's recording in progress, if any (one read)."""
        return self.on.find(session_id)

    def join(
        self, recording_id: str, width: int, height: int, stream: str | None = None
    ) -> Recording | None:
        """A stream begins writing to the recording (None: it records no more, or it has
        recorded `MAX_TERMINALS` already)."""

        def joined(r: Recording) -> Recording | None:
            if r.status != "recording" or len(r.terminals) >= MAX_TERMINALS:
                return None
            r.writers += 1
            if r.width is None:
                r.width, r.height = width, height
            if stream is not None:
                r.terminals.append(Terminal(id=stream, width=width, height=height))
            return r

        found = self.records.mutate(recording_id, joined)
        if stream is not None and all(t.id != stream for t in found.terminals):
            return None
        return found if found.status == "recording" else None

    def write(
        self,
        recording_id: str,
        stream: str,
        seq: int,
        lines: bytes,
        start: float,
        end: float,
        final: bool = False,
    ) -> None:
        """Stores one part (`lines`, its event lines; may be empty if `final`); `final`: the
        stream writes no more, and leaves the recording's writers. Blob first, then its
        record, then the recording's totals: a part whose record exists is whole."""
        purge_at = utcnow() + self.retention
        if lines:
            digest = digest_of(lines)
            self.blobs.put(digest, lines)
            made = Part(
                id=part_id(recording_id, stream, seq), recording_id=recording_id, stream=stream,
                seq=seq, digest=digest, start=start, end=end, size=len(lines), purge_at=purge_at,
            )  # fmt: skip
            with contextlib.suppress(Conflict):  # written already (a retry)
                self.parts.create(made.id, made)

        def counted(r: Recording) -> Recording:
            if lines:
                r.size += len(lines)
                r.parts += 1
            if final:
                r.writers = max(0, r.writers - 1)
            return r

        if lines or final:
            self.records.mutate(recording_id, counted)

    def fail(self, recording_id: str, why: str) -> None:
        """The recording's storage failed: it records no more (the terminal goes on)."""

        def failed(r: Recording) -> Recording | None:
            if r.status == "failed":
                return None
            r.status, r.error = "failed", why[:500]
            r.stopped_at = r.stopped_at or utcnow()
            r.writers = max(0, r.writers - 1)
            return r

        try:
            self._unpoint(self.records.mutate(recording_id, failed))
        except Exception:
            log.exception("recording %s: its failure not recorded", recording_id)

    # -- inside ---------------------------------------------------------------------------------

    def _ended_with(self, session: Session, recording: Recording) -> Recording:
        """A recording still on when its session ended is stopped (when it is next read: at
        most once, and only the one that was on)."""
        ended = session.state in (SessionState.TERMINATED, SessionState.FAILED)
        if recording.status != "recording" or not ended:
            return recording

        def stopped(r: Recording) -> Recording | None:
            if r.status != "recording":
                return None
            r.status, r.stopped_at = "stopped", session.updated_at or utcnow()
            return r

        try:
            recording = self.records.mutate(recording.id, stopped, start=recording)
            self._unpoint(recording)
        except Conflict:  # changing under us: as it was read
            pass
        return recording

    def _unpoint(self, recording: Recording) -> None:
        pointer = self.store.get(ON, recording.session_id)
        if pointer is not None and pointer.data.get("recording_id") == recording.id:
            self.store.delete(ON, recording.session_id, pointer)

    def _settled(self, recording: Recording) -> Recording:
        """`recording` once no stream writes to it, or as it is after STOP_WAIT (a relay that
        died holding a stream never comes back to say so)."""
        deadline = utcnow() + timedelta(seconds=STOP_WAIT)
        while recording.writers > 0:
            left = (deadline - utcnow()).total_seconds()
            if left <= 0:
                break
            moved = self.records.watch(recording.id, recording.version, left)
            if moved is None:
                break
            recording = moved
        return recording

    def _parts(self, recording_id: str) -> Iterator[Part]:
        after: tuple[None, str] | None = None
        while True:
            found = self.parts.query(
                [("recording_id", "==", recording_id)], limit=PARTS_PAGE, after=after
            )
            yield from found
            if len(found) < PARTS_PAGE:
                return
            after = (None, found[-1].id)

    def _events(self, parts: list[Part]) -> Iterator[tuple[float, bytes]]:
        for part in sorted(parts, key=lambda p: p.seq):
            try:
                yield from asciicast.times(self.blobs.get(part.digest))
            except NotFound:  # expired from the bucket ahead of its record
                log.warning("recording part %s: blob %s gone", part.id, part.digest)


def _one_at_a_time(streams: Iterable[list[Part]]) -> list[list[Part]]:
    """The streams that play in one cast, in the order they began: the first, then each that
    began after all those before it ended (the parts of a stream are in no order)."""
    played: list[list[Part]] = []
    ended = float("-inf")
    for parts in sorted(streams, key=lambda ps: (min(p.start for p in ps), ps[0].id)):
        if min(p.start for p in parts) >= ended:
            played.append(parts)
            ended = max(p.end for p in parts)
    return played
