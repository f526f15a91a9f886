"""Runs a command as an ordinary user (made if missing), as root would hand the stack to one.

    python tests/sandbox/as_user.py [--user NAME] -- COMMAND...

The interpreter, the virtualenv and the checkout may lie under directories that user cannot
pass (a pyenv under /root, a clone in root's home). In a private mount namespace of its own
this makes each of them reachable at its own path, read-only, by covering the first closed
directory above it with an empty tmpfs and mounting the path back inside; nothing changes
outside the namespace. Then it drops to the user and runs COMMAND.
"""

from __future__ import annotations

import argparse
import os
import pwd
import subprocess
import sys
import tempfile
from pathlib import Path

NEEDED = (sys.base_prefix, sys.prefix, str(Path(__file__).resolve().parents[2]))


def closed_parent(path: Path) -> Path | None:
    """The outermost directory above `path` (or itself) that others cannot pass through."""
    for parent in [*reversed(path.parents), path]:
        if not os.stat(parent).st_mode & 0o001:
            return parent
    return None


def open_up(paths: list[str]) -> None:
    """In this (private) mount namespace, makes each path reachable by anyone, read-only."""
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    moves: list[tuple[str, str]] = []
    covers: set[Path] = set()
    for p in sorted(set(paths)):
        closed = closed_parent(Path(p))
        if closed is None:
            continue
        stash = tempfile.mkdtemp(prefix="tether-as-user-")
        subprocess.run(["mount", "--rbind", p, stash], check=True)
        moves.append((stash, p))
        covers.add(closed)
    for closed in sorted(covers, key=lambda c: len(c.parts)):
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(closed)], check=True
        )
    for stash, p in moves:
        os.makedirs(p, exist_ok=True)
        subprocess.run(["mount", "--move", stash, p], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--user", default="tether-test")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        user = pwd.getpwnam(args.user)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/false", args.user],
                       check=True)  # fmt: skip
        user = pwd.getpwnam(args.user)
    if os.environ.get("TETHER_AS_USER_NS") != "1":  # re-run in a mount namespace of its own
        os.execvpe(
            "unshare",
            ["unshare", "--mount", "--propagation", "private", "--", sys.executable, *sys.argv],
            {**os.environ, "TETHER_AS_USER_NS": "1"},
        )
    open_up(list(NEEDED))
    os.setgroups([])
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)
    os.chdir("/")
    env = {k: v for k, v in os.environ.items() if k not in ("HOME", "USER", "LOGNAME")}
    env |= {"HOME": tempfile.mkdtemp(prefix="tether-as-user-home-"), "USER": args.user}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    main()
