"""A directory only this user can use: where Unix sockets go that another local user must
neither read nor replace (a workspace runtime's, the SQLite bus's doorbells)."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from tether.errors import Unavailable


def private_dir(path: Path) -> Path:
    """`path` as a directory only this user can use. One that exists must already be that:
    another local user could have made it first, to read or replace the sockets in it."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = path.lstat()
    if (
        not stat.S_ISDIR(info.st_mode)
        or info.st_uid != os.geteuid()
        or stat.S_IMODE(info.st_mode) & 0o077
    ):
        raise Unavailable(f"{path} is not a private directory of this user; remove it")
    return path
