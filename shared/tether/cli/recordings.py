"""`tether recording start|stop|list|download|play` (a session's terminal recordings, asciicast
v2) and the player `tether logs --recording` uses."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import IO, Any

import click
import orjson

from tether.cli import exits, output
from tether.cli.app import App, pass_app
from tether.cli.output import output_option

COLUMNS = (("id", "ID"), ("status", "STATUS"), ("started_at", "STARTED"),
           ("stopped_at", "STOPPED"), ("size", "BYTES"))  # fmt: skip
SPEED = click.option("--speed", type=click.FloatRange(min=0.01), default=1.0, show_default=True,
                     help="play this many times faster")  # fmt: skip
MAX_WAIT = click.option("--max-wait", type=click.FloatRange(min=0), default=None,
                        help="cap each pause at this many seconds (as played)")  # fmt: skip
RAW = click.option("--raw", is_flag=True, help="print the cast file itself, not its playback")
TERMINAL = click.option(
    "--terminal", metavar="ID", default=None,
    help="one of its terminals alone (`tether recording list -o json` lists them); without "
    "it, its terminals one at a time, those open beside another left out",
)  # fmt: skip


def play(
    cast: bytes,
    speed: float = 1.0,
    max_wait: float | None = None,
    out: IO[bytes] | None = None,
) -> None:
    """Writes a cast's output to `out` (stdout) with its timing: each event `speed` times
    sooner, a pause at most `max_wait` seconds. Resizes and input are not replayed (a
    terminal cannot be resized from here); a line that is not an event is skipped."""
    out = out or sys.stdout.buffer
    lines = iter(cast.splitlines())
    next(lines, None)  # the header
    begun, last = time.monotonic(), 0.0
    behind = 0.0  # pauses cut by max_wait
    for line in lines:
        try:
            at, code, data = orjson.loads(line)
            at = float(at)
        except (ValueError, TypeError):
            continue
        if max_wait is not None and (at - last) / speed > max_wait:
            behind += (at - last) / speed - max_wait
        last = at
        wait = at / speed - behind - (time.monotonic() - begun)
        if wait > 0:
            time.sleep(wait)
        if code == "o" and isinstance(data, str):
            out.write(data.encode())
            out.flush()


def show(app: App, session_id: str, recording_id: str, speed: float, max_wait: float | None,
         raw: bool, terminal: str | None = None) -> int:  # fmt: skip
    """Prints a recording (or one of its terminals): played with its timing, or `raw` (the
    cast)."""
    cast = app.client().connect(session_id).recordings.read(recording_id, terminal)
    if raw:
        sys.stdout.buffer.write(cast)
        sys.stdout.flush()
        return exits.OK
    try:
        play(cast, speed, max_wait)
    except KeyboardInterrupt:
        return exits.OK  # the way to stop watching
    return exits.OK


def _shown(info: Any) -> dict[str, Any]:
    return dict(info.model_dump(mode="json"))


@click.group(short_help="record a session's terminal; list, download and play recordings")
def recording() -> None:
    """A session's terminal recordings, asciicast v2 files: `asciinema play` plays them too."""


@recording.command(short_help="start recording a session's terminal")
@click.argument("session_id", metavar="SESSION")
@output_option
@pass_app
def start(app: App, session_id: str, fmt: str | None) -> int:
    """Record everything the session's terminals show from now on (tether shell, the
    terminal WebSocket) until `tether recording stop`."""
    output.record(_shown(app.client().connect(session_id).recordings.start()), fmt)
    return exits.OK


@recording.command(short_help="stop a recording")
@click.argument("session_id", metavar="SESSION")
@click.argument("recording_id", metavar="[RECORDING]", required=False)
@output_option
@pass_app
def stop(app: App, session_id: str, recording_id: str | None, fmt: str | None) -> int:
    """Stop RECORDING (default: the session's recording in progress)."""
    output.record(_shown(app.client().connect(session_id).recordings.stop(recording_id)), fmt)
    return exits.OK


@recording.command("list", short_help="list a session's recordings")
@click.argument("session_id", metavar="SESSION")
@output_option
@pass_app
def list_(app: App, session_id: str, fmt: str | None) -> int:
    """The session's recordings, newest first (piped: id, status, start, stop, bytes)."""
    found = app.client().connect(session_id).recordings.list()
    output.rows([_shown(r) for r in found], fmt, COLUMNS, "No recordings.")
    return exits.OK


@recording.command(short_help="save a recording as a .cast file")
@click.argument("session_id", metavar="SESSION")
@click.argument("recording_id", metavar="RECORDING")
@click.argument("path", metavar="[PATH]", required=False, type=click.Path(dir_okay=False))
@TERMINAL
@pass_app
def download(
    app: App, session_id: str, recording_id: str, path: str | None, terminal: str | None
) -> int:
    """Save RECORDING at PATH (default: RECORDING.cast here, or RECORDING.TERMINAL.cast)."""
    name = f"{recording_id}.{terminal}.cast" if terminal else f"{recording_id}.cast"
    target = Path(path or name)
    app.client().connect(session_id).recordings.download(recording_id, target, terminal)
    output.note(f"Saved {target}")
    return exits.OK


@recording.command("play", short_help="play a recording here")
@click.argument("session_id", metavar="SESSION")
@click.argument("recording_id", metavar="RECORDING")
@SPEED
@MAX_WAIT
@RAW
@TERMINAL
@pass_app
def play_command(app: App, session_id: str, recording_id: str, speed: float,
                 max_wait: float | None, raw: bool, terminal: str | None) -> int:  # fmt: skip
    """Play RECORDING in this terminal with its timing (as `tether logs --recording`)."""
    return show(app, session_id, recording_id, speed, max_wait, raw, terminal)


COMMANDS = [recording]
