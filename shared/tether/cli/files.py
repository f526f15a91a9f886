"""`tether files`: copy files between this machine and a session (a progress bar on a
terminal), list a session's directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from tether import errors
from tether.cli import exits, output
from tether.cli.app import App, pass_app
from tether.cli.output import output_option


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
    files = app.client().connect(session_id).files  # no such session: said before reading
    with output.transfer(f"{local.name} → {session_id}") as progress:
        written = files.upload(local, path, progress)
    output.note(f"Sent {written.size} bytes to {session_id}:{written.path}")


def _download(app: App, session_id: str, path: str, local: Path) -> None:
    if local.is_dir():
        local = local / Path(path).name
    files = app.client().connect(session_id).files
    with output.transfer(f"{session_id}:{Path(path).name} → {local.name}") as progress:
        files.download(path, local, progress)
    output.note(f"Fetched {local.stat().st_size} bytes to {local}")


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
