"""`tether files`: copy files between this machine and a session (a progress bar on a
terminal), list a session's directory."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from tether import errors
from tether.cli import exits, output
from tether.cli.app import App, pass_app
from tether.cli.output import output_option

CHUNK = 1 << 20  # bytes read from a local file, or written to one, at a time


def _remote(spec: str) -> tuple[str, str] | None:
    """`SESSION:PATH` as (session, path); None for a local path (one with a `/` before any
    colon: `./a:b` is local)."""
    head, sep, tail = spec.partition(":")
    if not sep or not head or "/" in head:
        return None
    return head, tail or "."


@click.group(short_help="copy files to and from a session, list its directories")
def files() -> None:
    """Copy files to and from a session (SESSION:PATH; a relative PATH is under the home),
    list its directories."""


@files.command(
    short_help="copy a file: LOCAL SESSION:PATH, or SESSION:PATH LOCAL",
    epilog="""\b
tether files cp data.csv ws-123:data/          # to ~/data/data.csv in the session
tether files cp ws-123:/etc/os-release .       # to ./os-release""",
)
@click.argument("source", metavar="SOURCE")
@click.argument("target", metavar="TARGET")
@pass_app
def cp(app: App, source: str, target: str) -> int:
    """Copy one file between this machine and a session: `LOCAL SESSION:PATH` sends it,
    `SESSION:PATH LOCAL` fetches it. A PATH ending in / (or a local directory) takes the
    file's name. Streamed both ways, never whole in memory; what was sent is checked against
    what was stored (SHA-256); a failed fetch leaves nothing behind."""
    up, down = _remote(target), _remote(source)
    if (up is None) == (down is None):
        raise click.UsageError("one of SOURCE and TARGET is SESSION:PATH, the other a local path")
    if up is not None:
        _upload(app, Path(source), *up)
    elif down is not None:
        _download(app, *down, Path(target))
    return exits.OK


def _upload(app: App, local: Path, session_id: str, path: str) -> None:
    if not local.is_file():
        raise errors.NotFound(f"{local}: no such file here", field="source")
    if path.endswith("/") or path == ".":
        path = f"{path.rstrip('/')}/{local.name}" if path != "/" else f"/{local.name}"
    size = local.stat().st_size
    files = app.client().connect(session_id).files  # no such session: said before reading
    with output.transfer(f"{local.name} → {session_id}", size) as advance:

        def section(at: int, length: int) -> Iterator[bytes]:
            with local.open("rb") as f:
                f.seek(at)
                while length > 0 and (chunk := f.read(min(CHUNK, length))):
                    length -= len(chunk)
                    advance(len(chunk))
                    yield chunk

        # Files.upload's own path (pieces past a request's bound, each one's SHA-256 checked),
        # given the bytes through a reader that counts them: upload takes no progress callback.
        written = files._store(path, size, section)
    output.note(f"Sent {written.size} bytes to {session_id}:{written.path}")


def _download(app: App, session_id: str, path: str, local: Path) -> None:
    from tether.sdk import calls

    if local.is_dir():
        local = local / Path(path).name
    client = app.client()
    partial = local.with_name(f".{local.name}.{uuid.uuid4().hex[:8]}.part")
    got = 0
    try:
        # The SDK's download, with the bytes counted as they come (Files.download has none).
        with client._open(calls.files("GET", session_id, path, "content")) as response:
            size = response.headers.get("Content-Length")
            total = int(size) if size and size.isdigit() else None
            with (
                output.transfer(f"{session_id}:{Path(path).name} → {local.name}", total) as advance,
                partial.open("wb") as out,
            ):
                for chunk in response.iter_bytes(CHUNK):
                    out.write(chunk)
                    got += len(chunk)
                    advance(len(chunk))
        if total is not None and got != total:
            raise errors.Unavailable(f"the file's stream ended after {got} of {total} bytes")
        os.replace(partial, local)
    finally:
        partial.unlink(missing_ok=True)
    output.note(f"Fetched {got} bytes to {local}")


ENTRY_COLUMNS = (("name", "NAME"), ("type", "TYPE"), ("size", "SIZE"), ("mode", "MODE"),
                 ("modified", "MODIFIED"))  # fmt: skip


@files.command("ls", short_help="list a directory of a session")
@click.argument("where", metavar="SESSION[:PATH]")
@output_option
@pass_app
def ls(app: App, where: str, fmt: str | None) -> int:
    """List a directory of a session (the home when no PATH): name, type, size, mode,
    modified (piped: tab-separated)."""
    session_id, _, path = where.partition(":")
    entries = app.client().connect(session_id).files.list(path or ".")
    found: list[dict[str, Any]] = [e.model_dump(mode="json") for e in entries]
    output.rows(found, fmt, ENTRY_COLUMNS, "Empty.")
    return exits.OK


COMMANDS = [files]
