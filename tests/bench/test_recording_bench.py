"""What a terminal's recorder costs the relay: the relay hands it a copy of every chunk of a
terminal stream, recorded or not. Its throughput on 64 KiB frames (as the runtime and the
client send them) while no recording is on (frames followed, payloads skipped) and while one
is (output decoded into events), next to copying the same bytes once, in the same run.
Prints figures; asserts only that a recording kept every byte.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import pytest
from tether.relay import recording
from websockets.client import ClientProtocol
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

FRAME = 64 << 10
FRAMES = 256  # 16 MiB a pass
ROUNDS = 7


def streams() -> tuple[list[bytes], list[bytes]]:
    """A runtime's and a client's 16 MiB of frames, in the 64 KiB reads the relay gets."""
    runtime, client = (
        ServerProtocol(state=State.OPEN),
        ClientProtocol(parse_uri("ws://runtime/pty"), state=State.OPEN),
    )
    text = b"x" * (FRAME - 1) + b"\n"
    for _ in range(FRAMES):
        runtime.send_binary(text)
        client.send_binary(text)

    def reads(sent: list[bytes]) -> list[bytes]:
        data = b"".join(sent)
        return [data[i : i + FRAME] for i in range(0, len(data), FRAME)]

    return reads(runtime.data_to_send()), reads(client.data_to_send())


def mb_s(reads: list[bytes], feed: Any) -> float:
    started = time.perf_counter()
    for chunk in reads:
        feed(chunk)
    return sum(map(len, reads)) / (time.perf_counter() - started) / 1e6


def test_recorder_next_to_one_copy(capsys: pytest.CaptureFixture[str]) -> None:
    out, typed = streams()

    async def nowhere(fn: Any, *args: Any) -> None:
        return None  # no recording on; nothing stored

    async def measure() -> dict[str, list[float]]:
        figures: dict[str, list[float]] = {}
        for _ in range(ROUNDS):
            off = recording.attach("s", {}, nowhere)
            off.known = True  # the store said: not recording
            on = recording.attach("s", {}, nowhere)
            on.known, on.active = True, recording._Active("r", time.time())
            on.held.size = -(1 << 40)  # kept in memory: this measures reading, not storing
            for name, value in (
                ("copy once (baseline)", mb_s(out, bytearray)),
                ("output, not recording", mb_s(out, off.from_runtime)),
                ("input, not recording", mb_s(typed, off.from_client)),
                ("output, recording", mb_s(out, on.from_runtime)),
            ):
                figures.setdefault(name, []).append(value)
            shown = sum(len(e[2]) for e in on.held.events)
            assert shown == FRAMES * FRAME  # every byte became an event
            for r in (off, on):
                r.watcher.cancel()
                r.writer.cancel()
        return figures

    figures = asyncio.run(measure())
    base = statistics.median(figures["copy once (baseline)"])
    with capsys.disabled():
        print(f"\n\nterminal recorder, {FRAMES} x 64 KiB frames, median of {ROUNDS} rounds")
        for name, values in figures.items():
            mid = statistics.median(values)
            print(f"  {name:<22} {mid:9.0f} MB/s   {mid / base:5.2f}x one copy")
