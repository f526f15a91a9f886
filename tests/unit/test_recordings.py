"""Terminal recordings without a server: the relay's recorder fed the frames of a terminal
stream (made by `websockets`' own protocols, cut at arbitrary bytes), and the cast assembled
from what it stored (SQLite store, a directory of blobs), alone and beside another stream."""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from tether import bootstrap
from tether.core import asciicast
from tether.core.models import utcnow
from tether.errors import NotFound
from tether.registry.local import DirectoryArtifacts
from tether.relay import recording
from tether.relay.frames import Follower
from tether.service.recordings import MAX_TERMINALS, On, Recording, Recordings
from tether.settings import Settings
from websockets.client import ClientProtocol
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri


@pytest.fixture
def recordings(tmp_path: Path) -> Iterator[Recordings]:
    services = bootstrap.build(Settings(home=tmp_path))
    bootstrap.install(services)
    yield services.recordings
    bootstrap.install(None)
    services.close()


def started(recordings: Recordings, session_id: str = "sess-1") -> Recording:
    now = utcnow()
    made = Recording(id="rec-" + secrets.token_hex(4), session_id=session_id, owner="u",
                     started_at=now, purge_at=now + timedelta(days=1))  # fmt: skip
    recordings.records.create(made.id, made)
    pointer = On(id=session_id, recording_id=made.id, started_at=now, purge_at=made.purge_at)
    recordings.on.create(session_id, pointer)
    return made


def runtime_frames(*chunks: bytes) -> bytes:
    """What a runtime sends: unmasked binary frames."""
    side = ServerProtocol(state=State.OPEN)
    for chunk in chunks:
        side.send_binary(chunk)
    return b"".join(side.data_to_send())


def client_frames(send: Callable[[ClientProtocol], None]) -> bytes:
    """What a client sends: masked frames."""
    side = ClientProtocol(parse_uri("ws://x/"), state=State.OPEN)
    send(side)
    return b"".join(side.data_to_send())


async def blocking(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


def cast(
    recordings: Recordings, rid: str, terminal: str | None = None
) -> tuple[dict[str, Any], list[list[Any]]]:
    found = recordings.records.get(rid)
    head, *lines = b"".join(recordings.cast(found, terminal=terminal)).splitlines()
    return orjson.loads(head), [orjson.loads(line) for line in lines]


def test_a_stream_recorded_replays_to_its_bytes(recordings: Recordings) -> None:
    rec = started(recordings)
    kib = 1 << 10
    shown = "prompt$ héllo ✓\r\n".encode() + b"x" * 80 * kib + b"y" * 10 * kib + "✓".encode()
    # Frames cut inside a character; a part written once 64 KiB are held, the rest at the end.
    cuts = [0, 10, 13, 90, 40 * kib, 80 * kib, len(shown)]
    frames = runtime_frames(*(shown[a:b] for a, b in itertools.pairwise(cuts)))

    async def stream() -> None:
        recorder = recording.attach("sess-1", {"cols": "90", "rows": "20"}, blocking)
        async with asyncio.timeout(10):
            while not recorder.known:  # the store has said that it records
                await asyncio.sleep(0.01)
        at = 0
        for size in (1, 7, 300, 5000):  # the copy comes in reads of any size
            recorder.from_runtime(frames[at : at + size])
            at += size
        recorder.from_client(
            client_frames(lambda c: c.send_text(b'{"type":"resize","cols":120,"rows":40}'))
        )
        recorder.from_client(client_frames(lambda c: c.send_binary(b"typed, not recorded")))
        recorder.from_runtime(frames[at:])
        recorder.close()
        await recorder.writer

    asyncio.run(stream())
    done = recordings.records.get(rec.id)
    assert done.writers == 0 and done.parts == 2  # one part filled, then the rest at the end
    head, events = cast(recordings, rec.id)
    assert (head["version"], head["width"], head["height"]) == (2, 90, 20)
    assert "".join(e[2] for e in events if e[1] == "o").encode() == shown
    assert [e[1:] for e in events if e[1] != "o"] == [["r", "120x40"]]
    assert [e[0] for e in events] == sorted(e[0] for e in events)
    assert done.size == sum(len(asciicast.event(*e)) for e in events)


def test_no_recording_on_records_nothing(recordings: Recordings) -> None:
    async def stream(session_id: str) -> None:
        recorder = recording.attach(session_id, {}, blocking)
        recorder.from_runtime(runtime_frames(b"seen"))
        recorder.close()  # before its first look at the store: it looks once more
        await recorder.writer

    asyncio.run(stream("sess-2"))
    assert recordings.parts.query() == []
    rec = started(recordings, "sess-3")
    asyncio.run(stream("sess-3"))
    assert cast(recordings, rec.id)[1] == [[pytest.approx(0, abs=5), "o", "seen"]]


def test_output_in_fragments_around_a_ping_is_recorded_whole(recordings: Recordings) -> None:
    rec = started(recordings, "sess-4")
    side = ServerProtocol(state=State.OPEN)
    side.send_binary(b"frag", fin=False)
    side.send_ping(b"are you there")
    side.send_continuation(b"ment", fin=True)
    side.send_text(b"a text message is not terminal output")

    async def stream() -> None:
        recorder = recording.attach("sess-4", {}, blocking)
        recorder.from_runtime(b"".join(side.data_to_send()))
        recorder.close()
        await recorder.writer

    asyncio.run(stream())
    events = cast(recordings, rec.id)[1]
    assert {e[1] for e in events} == {"o"} and "".join(e[2] for e in events) == "fragment"


def test_terminals_play_one_at_a_time_and_one_beside_another_alone(
    recordings: Recordings,
) -> None:
    """Two browser tabs on one shell would interleave two screens in one player: the cast
    plays the first terminal, then one reopened after it closed; the tab open beside it
    plays alone, at its own size."""
    rec = started(recordings)
    assert recordings.join(rec.id, 100, 30, "aaaa") is not None
    assert recordings.join(rec.id, 50, 10, "bbbb") is not None
    a = [(0.5, "o", "a1"), (2.0, "o", "a2"), (3.5, "o", "a3")]
    b = [(1.0, "o", "b1"), (2.0, "o", "b2"), (3.0, "r", "80x24")]
    c = [(4.0, "o", "c1"), (5.0, "o", "c2")]  # a terminal opened after the first closed

    def lines(events: list[tuple[float, str, str]]) -> bytes:
        return b"".join(asciicast.event(*e) for e in events)

    # Written out of order, as two relays would.
    recordings.write(rec.id, "bbbb", 1, lines(b[2:]), 3.0, 3.0, final=True)
    recordings.write(rec.id, "aaaa", 1, lines(a[2:]), 3.5, 3.5, final=True)
    recordings.write(rec.id, "aaaa", 0, lines(a[:2]), 0.5, 2.0)
    recordings.write(rec.id, "bbbb", 0, lines(b[:2]), 1.0, 2.0)
    assert recordings.join(rec.id, 90, 20, "cccc") is not None
    recordings.write(rec.id, "cccc", 0, lines(c), 4.0, 5.0, final=True)
    head, events = cast(recordings, rec.id)
    assert (head["width"], head["height"]) == (100, 30)  # the first to join
    assert [e[2] for e in events] == ["a1", "a2", "a3", "c1", "c2"]
    head, events = cast(recordings, rec.id, "bbbb")
    assert (head["width"], head["height"]) == (50, 10)
    assert [e[2] for e in events] == ["b1", "b2", "80x24"]
    with pytest.raises(NotFound):
        recordings.cast(recordings.records.get(rec.id), terminal="dddd")
    done = recordings.records.get(rec.id)
    assert (done.writers, done.parts) == (0, 5)
    assert [(t.id, t.width, t.height) for t in done.terminals] == [
        ("aaaa", 100, 30), ("bbbb", 50, 10), ("cccc", 90, 20)
    ]  # fmt: skip


def test_a_recording_records_a_bounded_number_of_terminals(recordings: Recordings) -> None:
    """A workspace cannot grow a recording's record without end: a script opening terminals
    in a loop is recorded for the first `MAX_TERMINALS` of them."""
    rec = started(recordings)
    for i in range(MAX_TERMINALS):
        assert recordings.join(rec.id, 80, 24, f"t{i}") is not None
    assert recordings.join(rec.id, 80, 24, "one-more") is None
    done = recordings.records.get(rec.id)
    assert len(done.terminals) == done.writers == MAX_TERMINALS


def test_a_utf8_character_split_across_frames_comes_out_whole() -> None:
    out = asciicast.Output()
    data = "é✓".encode()
    assert [out.text(data[:1]), out.text(data[1:3]), out.text(data[3:]), out.rest()] == [
        "", "é", "✓", ""
    ]  # fmt: skip
    assert out.text(b"\xff") == "\ufffd"  # not UTF-8: replaced, as asciinema does


def test_a_store_that_fails_fails_the_recording_and_never_the_stream(
    recordings: Recordings, tmp_path: Path
) -> None:
    rec = started(recordings)
    (tmp_path / "not-a-directory").write_text("")
    recordings.blobs = DirectoryArtifacts(tmp_path / "not-a-directory" / "parts")

    async def stream() -> None:
        recorder = recording.attach("sess-1", {}, blocking)
        async with asyncio.timeout(10):
            while not recorder.known:
                await asyncio.sleep(0.01)
        recorder.from_runtime(runtime_frames(b"z" * (100 << 10)))  # a part is due: it fails
        async with asyncio.timeout(10):
            while recorder.active is not None:  # until the recorder has given up
                await asyncio.sleep(0.01)
        recorder.from_runtime(runtime_frames(b"the terminal goes on"))
        recorder.close()
        await recorder.writer

    asyncio.run(stream())
    failed = recordings.records.get(rec.id)
    assert failed.status == "failed" and "could not be stored" in (failed.error or "")
    assert failed.writers == 0 and recordings.recording_on("sess-1") is None


def test_the_follower_finds_every_frame_wherever_the_reads_cut() -> None:
    """Frames of each length encoding (7, 16 and 64 bits), masked and not, fragmented, with a
    ping between fragments: what is kept is each frame's payload, unmasked; the rest skipped."""
    sizes = [0, 1, 125, 126, 65535, 65536, 70000]
    payloads = [secrets.token_bytes(n) for n in sizes]

    def client(c: ClientProtocol) -> None:
        for p in payloads:
            c.send_binary(p)
        c.send_text(b'{"type":', fin=False)
        c.send_ping(b"ping")
        c.send_continuation(b'"resize"}', fin=True)

    seen: list[tuple[int, bool, bytes | None]] = []
    for stream, masked in ((client_frames(client), True), (runtime_frames(*payloads), False)):
        for cuts in ([1] * 300, [2, 3, 5, 7, 11, 13] * 50, [65535, 1, 4096], [len(stream)]):
            seen.clear()
            follower = Follower(lambda opcode, size: size != 125, lambda *f: seen.append(f))
            at = 0
            for size in itertools.cycle(cuts):
                if at >= len(stream):
                    break
                follower.feed(stream[at : at + size])
                at += size
            expected = [(2, True, None if len(p) == 125 else p) for p in payloads]
            if masked:
                expected += [(1, False, b'{"type":'), (9, True, b"ping"), (0, True, b'"resize"}')]
            assert seen == expected, (masked, cuts)
