"""Command lines for a workspace's shell: an exec's `env` and `cwd` become part of its line, so
every platform's runtime (which runs one line with `bash -c`) honours them alike."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

from tether.errors import Invalid

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Linux takes at most 128 KiB in one argument, and the line is one (`bash -c LINE`).
MAX_LINE = 128 * 1024 - 1


def command_line(command: str, env: Mapping[str, str] | None = None, cwd: str | None = None) -> str:
    """`command` run in `cwd` (relative to the home, where a command starts) with `env` added
    to the workspace's variables; its exit code is the command's (a `cwd` that does not exist
    fails with bash's message and code 1)."""
    if not env and not cwd:
        return command
    for name in env or {}:
        if not NAME.match(name):
            raise Invalid(f"env: {name!r} is not a variable name", field="env")
    enter = f"cd -- {shlex.quote(cwd)} && " if cwd else ""
    assignments = "".join(f"{name}={shlex.quote(value)} " for name, value in (env or {}).items())
    line = f"{enter}{assignments}exec /bin/bash -c {shlex.quote(command)}"
    if len(line.encode()) > MAX_LINE:
        raise Invalid("The command with its env and cwd is too long", field="command")
    return line
