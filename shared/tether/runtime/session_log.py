"""The session log: the workspace main process's output and the runtime's lifecycle lines,
one `<UTC timestamp> <text>` line each, in a file in the workspace home so it outlives the
runtime (a hibernated workspace still has its log)."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

SESSION_LOG = ".tether/session.log"  # relative to the workspace home
MAX_LINE = 1 << 16  # a longer line (or output with no newline at all) is split
_BLOCK = 1 << 16
# Bytes a tail reads at most, whatever it is asked for: the file is the workspace's, and a
# sparse gigabyte of it costs the workspace nothing.
MAX_TAIL = 4 << 20


def stamp(text: str, now: datetime | None = None) -> str:
    return f"{(now or datetime.now(UTC)).strftime('%Y-%m-%dT%H:%M:%SZ')} {text}"


class LogWriter:
    """Appends timestamped lines. Each batch is one write to an O_APPEND file, so lines from
    the runtime and the main process's reader never interleave mid-line."""

    def __init__(self, path: Path) -> None:
        self._fd = open_for_append(path)

    def write(self, *lines: str) -> None:
        now = datetime.now(UTC)
        data = "".join(stamp(line, now) + "\n" for line in lines).encode()
        if data:
            os.write(self._fd, data)

    def close(self) -> None:
        os.close(self._fd)


def open_for_append(path: Path) -> int:
    """A log file of the workspace's, opened to append (its directory made): never through a
    link, neither the file's nor its directory's (`.tether`), never a FIFO that would block
    its writer. Whatever else stands at either (the workspace's own doing) is replaced: a
    link there would send the runtime's output where it leads, or keep it from starting."""
    directory = _own_directory(path.parent)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = _open_here(path.name, flags, directory)
        if fd >= 0 and stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path.name, dir_fd=directory)
        return os.open(path.name, flags | os.O_EXCL, 0o644, dir_fd=directory)
    finally:
        os.close(directory)


def _own_directory(path: Path) -> int:
    """A descriptor of the directory `path`, made if missing; a link or file there is
    replaced by a directory."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = _open_here(str(path), flags)
    if fd >= 0:
        return fd
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            os.unlink(path)
    path.mkdir(parents=True, exist_ok=True)
    return os.open(path, flags)


def _open_here(name: str, flags: int, dir_fd: int | None = None) -> int:
    """`os.open` of what stands at `name` itself, or -1. O_NOFOLLOW alone is not enough:
    gVisor's kernel follows a link there all the same (with O_DIRECTORY or O_CREAT), so what
    was opened must be what the name holds."""
    try:
        fd = os.open(name, flags, 0o644, dir_fd=dir_fd)
    except OSError:
        return -1
    opened = os.fstat(fd)
    try:
        here = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        here = None
    if here is not None and (here.st_dev, here.st_ino) == (opened.st_dev, opened.st_ino):
        return fd
    os.close(fd)
    return -1


def open_in_home(home: Path, relative: str) -> BinaryIO:
    """Opens a regular file below `home` for reading, following no symlink on the way. The
    home is the workspace's to change, and a reader outside the sandbox (the provisioner)
    must not be led to what the sandbox hides, nor block on a FIFO."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(home, flags | os.O_DIRECTORY)
    try:
        for part in relative.split("/"):
            fd, parent = os.open(part, flags, dir_fd=fd), fd
            os.close(parent)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"{relative}: not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def tail(home: Path, n: int, relative: str = SESSION_LOG) -> list[str]:
    """The last `n` lines of the home's session log, oldest first. Reads blocks from the end,
    so a huge log costs only what is returned. No log (or not a file) has no lines."""
    if n <= 0:
        return []
    try:
        f = open_in_home(home, relative)
    except OSError:
        return []
    with f:
        end = f.seek(0, os.SEEK_END)
        blocks: list[bytes] = []
        newlines = 0
        # n whole lines need n+1 newlines before the end (the file ends with one). A line is
        # at most MAX_LINE bytes and a stamp, which bounds the read even without newlines.
        budget = min(n * (MAX_LINE + 64), MAX_TAIL)
        while end > 0 and newlines <= n and budget > 0:
            start = max(0, end - _BLOCK)
            f.seek(start)
            blocks.append(f.read(end - start))
            newlines += blocks[-1].count(b"\n")
            budget -= end - start
            end = start
    data = b"".join(reversed(blocks))
    lines = data.split(b"\n")
    if not lines[-1]:  # the file ends with a newline
        lines.pop()
    if end > 0:  # the first line may be cut by the block boundary, and is not needed
        lines = lines[1:]
    return [line.decode("utf-8", errors="replace") for line in lines[-n:]]
