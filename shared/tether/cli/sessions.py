"""Session commands: create, list, get, exec, shell, pause, resume, extend, delete."""

from __future__ import annotations

import os
import select
import shlex
import stat
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from tether import errors
from tether.cli import exits, output
from tether.cli.app import App, pass_app
from tether.cli.output import output_option

SESSION_FIELDS = (
    "id",
    "status",
    "template",
    "provider",
    "namespace",
    "user",
    "metadata",
    "created_at",
    "expires_at",
    "last_activity_at",
    "url",
)
LIST_COLUMNS = (
    ("id", "ID"),
    ("status", "STATUS"),
    ("provider", "PROVIDER"),
    ("template", "TEMPLATE"),
    ("expires_at", "EXPIRES"),
)
# A session in one of these is on its way to running (or, pausing, to sleep): wait for it.
SETTLING = {"pending": "running", "waking": "running", "hibernating": "hibernated"}


def complete_session(ctx: click.Context, _: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion of a session id: the caller's live sessions (nothing on any error)."""
    root = ctx.find_root().params
    try:
        client = App(root.get("url"), root.get("api_key"), root.get("profile")).client()
        found = client.list_sessions()
    except Exception:
        return []
    return [s["id"] for s in found if str(s.get("id", "")).startswith(incomplete)]


SESSION = click.argument("session_id", metavar="SESSION", shell_complete=complete_session)


def _settle(client: Any, session: dict[str, Any], step: output.Step, timeout: float) -> Any:
    """Read `session` again until it leaves its passing state (pending, waking, hibernating)
    or `timeout` passes; a failed one is an error."""
    deadline = time.monotonic() + timeout
    pause = 0.2
    while session.get("status") in SETTLING:
        if time.monotonic() > deadline:
            raise errors.Timeout(
                f"session {session['id']} is still {session['status']} after "
                f"{timeout:.0f}s; `tether get {session['id']}` shows it later"
            )
        step.update(f"Session {session['id']} is {session['status']}...")
        time.sleep(pause)  # the server answers a read at once: this spaces the reads out
        pause = min(pause * 1.5, 2.0)
        session = client.get_session(session["id"])
    if session.get("status") == "failed":
        raise errors.TetherError(
            f"session {session['id']} failed to start"
            + (f": {session['error']}" if session.get("error") else "")
        )
    return session


@click.command(short_help="create a session and wait until it runs")
@click.option("--template", default="python", show_default=True, help="template name")
@click.option(
    "--provider", default="auto", show_default=True, help="auto|cloud_run|gke|workstations"
)
@click.option("--namespace", default="default", show_default=True, help="grouping label")
@click.option("--user", default="default", show_default=True, help="user label")
@click.option(
    "--ttl",
    type=click.IntRange(min=1),
    default=None,
    metavar="MINUTES",
    help="minutes until the session expires",
)
@click.option("--long-lived", is_flag=True, help="never expire")
@click.option(
    "--metadata",
    "pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="a label to find it by (`list --metadata`; repeatable)",
)
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(min=0),
    default=600,
    show_default=True,
    metavar="SECONDS",
    help="how long to wait for it to run",
)
@output_option
@pass_app
def create(
    app: App,
    template: str,
    provider: str,
    namespace: str,
    user: str,
    ttl: int | None,
    long_lived: bool,
    pairs: tuple[str, ...],
    wait_s: float,
    fmt: str | None,
) -> int:
    """Create a session and wait until it runs (progress on stderr, the session on stdout)."""
    from tether.sdk import calls

    metadata = dict(_assignment(item, "--metadata") for item in pairs)
    client = app.client()
    spec = calls.session_spec(template, namespace, user, provider, ttl, long_lived)
    if metadata:
        spec["metadata"] = metadata
    key = calls.new_key()
    started = time.monotonic()
    session: dict[str, Any] | None = None
    try:
        with output.progress(f"Creating a '{template}' session...") as step:
            session = client.create_session(spec, idempotency_key=key)
            session = _settle(client, session, step, wait_s)
            said = f"Session {session['id']} is {session['status']}"
            step.done(f"{said} ({time.monotonic() - started:.1f}s)")
    except KeyboardInterrupt:
        if session is None:  # the server goes on with a create it has received: the same
            # request with the same Idempotency-Key names what it made, so none is left unnamed
            output.note("\nInterrupted: asking which session was made (Ctrl-C again to leave)...")
            try:
                session = client.create_session(spec, idempotency_key=key)
            except KeyboardInterrupt:
                output.note("tether: left; `tether list` shows the session if it was made")
                return exits.INTERRUPTED
        output.note(
            f"Session {session['id']} was made and is {session['status']}; "
            f"`tether delete {session['id']}` removes it"
        )
        output.record(session, fmt, SESSION_FIELDS)
        return exits.INTERRUPTED
    output.record(session, fmt, SESSION_FIELDS)
    return exits.OK


@click.command("list", short_help="list your sessions")
@click.option("--namespace", default=None, help="only this namespace's")
@click.option("--user", default=None, help="only this user label's")
@click.option(
    "--metadata",
    "pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="only those with this metadata pair (repeatable: all must match)",
)
@output_option
@pass_app
def list_(
    app: App, namespace: str | None, user: str | None, pairs: tuple[str, ...], fmt: str | None
) -> int:
    """List your sessions (piped: id, status, provider, template, expiry; tab-separated)."""
    metadata = dict(_assignment(item, "--metadata") for item in pairs)
    client = app.client()
    if metadata:
        found = [s.model_dump(mode="json") for s in client.list(metadata=metadata)]
        sessions = [
            s
            for s in found
            if (namespace is None or s["namespace"] == namespace)
            and (user is None or s["user"] == user)
        ]
    else:
        sessions = client.list_sessions(namespace, user)
    output.rows(sessions, fmt, LIST_COLUMNS, "No sessions.")
    return exits.OK


@click.command(short_help="show one session")
@SESSION
@output_option
@pass_app
def get(app: App, session_id: str, fmt: str | None) -> int:
    """Show one session."""
    output.record(app.client().get_session(session_id), fmt, SESSION_FIELDS)
    return exits.OK


_NO_STDIN = (
    "exec sends no standard input to the command unless asked: pass -i (it is read to its end "
    "first), or use `tether shell`"
)


def _piped() -> bool:
    """Whether data was piped in (a command runs with no standard input, so it would be lost).
    A pipe with nothing in it yet is not waited for: a caller's idle stdin must not hang us."""
    stdin = sys.stdin.fileno()
    mode = os.fstat(stdin).st_mode
    if stat.S_ISREG(mode):
        return os.fstat(stdin).st_size > 0
    return (
        stat.S_ISFIFO(mode)
        and bool(select.select([stdin], [], [], 0)[0])
        and bool(os.read(stdin, 1))
    )


def _assignment(item: str, option: str = "--env") -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep:
        raise errors.Invalid(f"{option} takes NAME=VALUE, not {item!r}", field=option[2:])
    return name, value


def _writer(stream: Any) -> Any:
    """A callback writing text to `stream` as it comes (flushed: a pipe reader sees it live)."""

    def write(text: str) -> None:
        stream.write(text)
        stream.flush()

    return write


@click.command(
    "exec",
    short_help="run a command in a session; exits with its exit code",
    epilog="Several words after -- are the command's arguments, passed exactly (`tether exec ID "
    "-- python -c 'print(6*7)'`); one word is a shell command line (`tether exec ID 'ls | wc "
    "-l'`). Its output is shown as it is printed. Standard input is passed only with -i (read "
    "to its end before the command starts: use `tether shell` to type at a command); "
    "piping into exec without -i is refused, not lost. Exits with the command's exit code "
    "(124 when it ran out of --timeout).",
)
@SESSION
@click.argument("command", nargs=-1, required=True)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=120,
    show_default=True,
    metavar="SECONDS",
    help="stop the command after",
)
@click.option(
    "--env",
    "envs",
    multiple=True,
    metavar="NAME=VALUE",
    help="set a variable for the command (repeatable)",
)
@click.option("--cwd", default=None, help="directory to run in (relative to the home)")
@click.option("-i", "--stdin", "with_stdin", is_flag=True, help="pass standard input to it")
@click.option(
    "-d",
    "--detach",
    is_flag=True,
    help="start it in the background and print its process (`tether ps` lists them)",
)
@output_option
@pass_app
def exec_(
    app: App,
    session_id: str,
    command: tuple[str, ...],
    timeout: float,
    envs: tuple[str, ...],
    cwd: str | None,
    with_stdin: bool,
    detach: bool,
    fmt: str | None,
) -> int:
    """Run a command in a session, its output shown as it comes; exits with its exit code."""
    line = command[0] if len(command) == 1 else shlex.join(command)
    env = dict(_assignment(item) for item in envs)
    given: str | None = None
    if with_stdin:
        given = sys.stdin.read()
    elif _piped():
        raise errors.Invalid(_NO_STDIN, field="stdin")
    session = app.client().connect(session_id)
    if detach:
        proc = session.run(line, background=True, envs=env or None, cwd=cwd, stdin=given)
        output.record(proc.started.model_dump(mode="json"), fmt, ("pid", "status", "command"))
        return exits.OK
    result = session.run(
        line,
        on_stdout=_writer(sys.stdout),
        on_stderr=_writer(sys.stderr),
        envs=env or None,
        cwd=cwd,
        stdin=given,
        timeout=timeout,
    )
    if not with_stdin and _piped():  # it came while the command ran, which never saw it
        raise errors.Invalid(
            "input piped in while the command ran was not sent to it: " + _NO_STDIN,
            field="stdin",
        )
    if result.timed_out:
        output.note(f"tether: the command was stopped at its --timeout ({timeout:g}s)")
    return int(result.exit_code)


@click.command(short_help="open an interactive terminal in a session (exit to leave)")
@SESSION
@pass_app
def shell(app: App, session_id: str) -> int:
    """Open an interactive terminal in a session (`exit` leaves)."""
    from tether.cli.terminal import run_terminal

    conn = app.connection()
    if not conn.api_key:
        app.client()  # says which key is missing, as every command does
    assert conn.api_key is not None
    return run_terminal(conn.url, conn.api_key, session_id)


def _moved(app: App, session_id: str, move: Callable[[Any], object]) -> tuple[Any, dict[str, Any]]:
    """The session after `move(handle)` (pause, resume, extend) as the API shows it, and the
    client."""
    handle = app.client().connect(session_id)
    move(handle)
    return handle.client, handle.data


def _wait_option(default: float, what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--wait",
        "wait_s",
        type=click.FloatRange(min=0),
        default=default,
        show_default=True,
        metavar="SECONDS",
        help=f"how long to wait for it to {what}",
    )


def _move_and_show(
    app: App,
    session_id: str,
    doing: str,
    move: Callable[[Any], object],
    wait_s: float,
    fmt: str | None,
    timed: bool = False,
) -> int:
    """Moves the session (pause, resume), waits until it settles, says so (`timed`: with the
    time it took), and prints it."""
    started = time.monotonic()
    with output.progress(f"{doing} {session_id}...") as step:
        client, session = _moved(app, session_id, move)
        session = _settle(client, session, step, wait_s)
        took = f" ({time.monotonic() - started:.1f}s)" if timed else ""
        step.done(f"Session {session_id} is {session['status']}{took}")
    output.record(session, fmt, SESSION_FIELDS)
    return exits.OK


@click.command(short_help="hibernate a session (its files stay)")
@SESSION
@_wait_option(300, "sleep")
@output_option
@pass_app
def pause(app: App, session_id: str, wait_s: float, fmt: str | None) -> int:
    """Hibernate a session: its processes stop, its files stay."""
    return _move_and_show(app, session_id, "Pausing", lambda s: s.pause(), wait_s, fmt)


@click.command(short_help="wake a paused session and wait until it runs")
@SESSION
@_wait_option(600, "run")
@output_option
@pass_app
def resume(app: App, session_id: str, wait_s: float, fmt: str | None) -> int:
    """Wake a paused session and wait until it runs."""
    return _move_and_show(app, session_id, "Waking", lambda s: s.resume(), wait_s, fmt, timed=True)


@click.command(short_help="push a session's expiry back by --minutes")
@SESSION
@click.option(
    "--minutes",
    type=click.IntRange(1, 1440),
    required=True,
    help="minutes to add to its expiry (1-1440)",
)
@output_option
@pass_app
def extend(app: App, session_id: str, minutes: int, fmt: str | None) -> int:
    """Push a session's expiry back."""
    _, session = _moved(app, session_id, lambda s: s.extend(minutes))
    output.note(f"Session {session_id} now expires at {session.get('expires_at')}")
    output.record(session, fmt, SESSION_FIELDS)
    return exits.OK


@click.command(short_help="terminate a session")
@SESSION
@pass_app
def delete(app: App, session_id: str) -> int:
    """Terminate a session."""
    session = app.client().delete_session(session_id)
    output.note(f"Session {session['id']} is {session['status']}")
    return exits.OK


COMMANDS = [create, list_, get, exec_, shell, pause, resume, extend, delete]
