"""`tether`: run the local stack and drive sessions from a terminal (the entry point).

The commands live by subject: app.py (the group and its options), sessions.py, kubently.py,
local.py (up, reset-admin, seed), server.py (login, health, completion); output.py prints,
profiles.py keeps saved connections, exits.py names the exit codes."""

from __future__ import annotations

import os
import signal
import sys

import click

from tether.cli import exits, files, kubently, local, logs, ports, recordings, server, sessions
from tether.cli.app import cli

COMMANDS = [
    *local.COMMANDS,
    *sessions.COMMANDS,
    *logs.COMMANDS,
    *recordings.COMMANDS,
    *files.COMMANDS,
    *ports.COMMANDS,
    *kubently.COMMANDS,
    *server.COMMANDS,
]
for command in COMMANDS:
    cli.add_command(command)


def main(argv: list[str] | None = None) -> int:
    try:
        code = cli.main(args=argv, prog_name="tether", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()
        return exits.USAGE
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "tether"
        click.echo(f"tether: {exc.format_message()} (see `{where} --help`)", err=True)
        return exits.USAGE
    except click.ClickException as exc:
        click.echo(f"tether: {exc.format_message()}", err=True)
        return exc.exit_code
    except click.Abort:  # Ctrl-C at a prompt
        click.echo("tether: interrupted", err=True)
        return exits.INTERRUPTED
    except BrokenPipeError:
        return _reader_left()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return _reader_left()
    return code if isinstance(code, int) else exits.OK


def _reader_left() -> int:
    """What a command does when its output's reader left (`tether list | head -1`): stop,
    saying nothing, with SIGPIPE's status as shells count it."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush must not fail again
    return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
