"""`tether logs` (what the session's workspace logged) and `tether ps` (its background
processes)."""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import quote

import click
import httpx

from tether.cli import exits, output, recordings
from tether.cli.app import App, pass_app
from tether.cli.output import output_option


@click.command(short_help="print a session's log (-f: follow it)")
@click.argument("session_id", metavar="SESSION")
@click.option("-f", "--follow", is_flag=True, help="go on printing lines as they come")
@click.option(
    "-n",
    "--tail",
    type=click.IntRange(1, 10_000),
    default=100,
    show_default=True,
    help="lines to start with",
)
@click.option("--recording", metavar="RECORDING", help="play this terminal recording instead")
@recordings.SPEED
@recordings.MAX_WAIT
@recordings.RAW
@pass_app
def logs(app: App, session_id: str, follow: bool, tail: int, recording: str | None,
         speed: float, max_wait: float | None, raw: bool) -> int:  # fmt: skip
    """Print the last lines of a session's log (what its template's command printed); with -f
    go on until the session ends or Ctrl-C. With --recording: play one of its terminal
    recordings (`tether recording list`) with its timing, or print the cast with --raw."""
    if recording is not None:
        return recordings.show(app, session_id, recording, speed, max_wait, raw)
    from tether.sdk import calls

    conn = app.connection()
    app.client()  # a missing key is said as every command says it
    sid = quote(session_id, safe="")
    # The SDK has no call for logs: the API's own paths, with the caller's key.
    with httpx.Client(base_url=conn.url.rstrip("/"), timeout=30) as http:
        if not follow:
            answer = calls.result(
                http.get(
                    f"/v1/sessions/{sid}/logs",
                    params={"lines": tail},
                    headers={"X-API-Key": str(conn.api_key)},
                )
            )
            for line in answer.get("logs") or []:
                click.echo(line)
            return exits.OK
        # Followed: the live log's chunked lines (StreamSpace's path, the one that follows).
        params = {"follow": "true", "tail": str(tail)}
        headers = {"Authorization": f"Bearer {conn.api_key}", "Accept": "text/plain"}
        timeout = httpx.Timeout(30, read=None)  # a quiet log may say nothing for long
        with http.stream("GET", f"/api/v1/sessions/{sid}/logs", params=params,
                         headers=headers, timeout=timeout) as response:  # fmt: skip
            if not response.is_success:
                response.read()
                calls.raise_for(response)
            try:
                for line in response.iter_lines():
                    sys.stdout.write(line + "\n")
                    sys.stdout.flush()
            except KeyboardInterrupt:
                return exits.OK  # the way to stop following
    return exits.OK


PROCESS_COLUMNS = (("pid", "PID"), ("status", "STATUS"), ("exit_code", "EXIT"),
                   ("started_at", "STARTED"), ("command", "COMMAND"))  # fmt: skip


@click.command(short_help="list a session's background processes")
@click.argument("session_id", metavar="SESSION")
@output_option
@pass_app
def ps(app: App, session_id: str, fmt: str | None) -> int:
    """List a session's background processes: the running ones and the last that ended (piped:
    pid, status, exit code, start, command; tab-separated)."""
    found = app.client().connect(session_id).processes()
    items: list[dict[str, Any]] = [p.model_dump(mode="json") for p in found]
    output.rows(items, fmt, PROCESS_COLUMNS, "No processes.")
    return exits.OK


COMMANDS = [logs, ps]
