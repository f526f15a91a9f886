"""The tools an AI agent may use, each run as a command in the agent's own workspace (whose
sandbox is the isolation: a tool reaches nothing the workspace cannot), and only if the
agent's image declares it.

Pure: a tool call becomes a shell command line here; running it is the service's.
"""

from __future__ import annotations

import base64
import posixpath
import shlex
from collections.abc import Iterable, Mapping
from typing import Any

from tether.core.llm import Tool
from tether.core.shell import MAX_LINE
from tether.errors import Invalid

MAX_CODE = 64 * 1024  # bytes of a python tool's code, or of a file written: one argument's worth
TIMEOUT = 60.0  # seconds a tool may run

TOOLS: dict[str, Tool] = {
    t.name: t
    for t in (
        Tool("shell", "Run a bash command in the agent's workspace; returns its output and "
             "exit code.", {"type": "object", "properties": {"command": {"type": "string"}},
                            "required": ["command"]}),
        Tool("python", "Run Python 3 code in the agent's workspace; returns what it prints.",
             {"type": "object", "properties": {"code": {"type": "string"}},
              "required": ["code"]}),
        Tool("read_file", "Read a text file under the agent's home directory.",
             {"type": "object", "properties": {"path": {"type": "string"}},
              "required": ["path"]}),
        Tool("write_file", "Write a text file under the agent's home directory.",
             {"type": "object", "properties": {"path": {"type": "string"},
                                               "content": {"type": "string"}},
              "required": ["path", "content"]}),
    )
}  # fmt: skip

# How images name them (Sentinelfiles write `file/read`, `terminal`, ...).
ALIASES = {
    "shell": "shell", "bash": "shell", "terminal": "shell", "shell/exec": "shell",
    "python": "python", "code/python": "python", "python/exec": "python",
    "read_file": "read_file", "file/read": "read_file", "files/read": "read_file",
    "write_file": "write_file", "file/write": "write_file", "files/write": "write_file",
}  # fmt: skip


def tool_name(declared: str) -> str | None:
    """The tool a declared name stands for, None for one Tether does not provide."""
    return ALIASES.get(declared.strip().lower())


def offered(declared: Iterable[str]) -> tuple[Tool, ...]:
    """The tools an image's declaration gives its agent, each once."""
    names = dict.fromkeys(n for n in map(tool_name, declared) if n is not None)
    return tuple(TOOLS[n] for n in names)


def check(declared: Iterable[str], requested: str) -> str:
    """The tool `requested` names, if the image declares it; Invalid otherwise."""
    name = tool_name(requested)
    declared = list(declared)
    if name is None:
        if requested in declared:
            raise Invalid(f"Tether does not provide the tool {requested!r}", field="tool")
        raise Invalid(f"Unknown tool {requested!r}", field="tool")
    if name not in {tool_name(d) for d in declared}:
        raise Invalid(f"This agent's image does not declare the tool {requested!r}", field="tool")
    return name


def _text(args: Mapping[str, Any], key: str, limit: int = MAX_CODE) -> str:
    value = args.get(key)
    if not isinstance(value, str):
        raise Invalid(f"The tool needs {key!r} as a string", field=f"parameters.{key}")
    if len(value.encode()) > limit or "\0" in value:
        raise Invalid(f"{key!r} is too long or holds a NUL", field=f"parameters.{key}")
    return value


def home_path(raw: str) -> str:
    """`raw` as a path relative to the home: absolute paths and `..` are refused (the tools
    work in the agent's home; the sandbox confines them anyway)."""
    path = posixpath.normpath(raw.strip())
    if not raw.strip() or path.startswith("/") or path == ".." or path.startswith("../"):
        raise Invalid("A path must be relative to the agent's home, without '..'", field="path")
    return path


def _decoded(data: str) -> str:
    """A shell word that prints `data` exactly (base64 spares quoting it)."""
    return f"printf %s {base64.b64encode(data.encode()).decode()} | base64 -d"


def command_for(tool: str, args: Mapping[str, Any]) -> str:
    """The command line that runs `tool` with `args` in the workspace (from its home)."""
    if tool == "shell":
        line = _text(args, "command", MAX_LINE // 2)
    elif tool == "python":
        line = f"{_decoded(_text(args, 'code'))} | python3 -"
    elif tool == "read_file":
        line = f"cat -- {shlex.quote(home_path(_text(args, 'path', 4096)))}"
    elif tool == "write_file":
        path = shlex.quote(home_path(_text(args, "path", 4096)))
        content = _decoded(_text(args, "content"))
        line = f'mkdir -p -- "$(dirname -- {path})" && {content} > {path}'
    else:
        raise Invalid(f"Unknown tool {tool!r}", field="tool")
    return f'cd "$HOME" && {line}'
