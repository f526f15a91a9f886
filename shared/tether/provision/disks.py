"""A local workspace's disk: its home and its storage directory, on a filesystem of their own.

As root, each workspace gets a sparse ext4 image in its control directory (blocks are taken
only as they are written), loop-mounted while it runs: a disk fill stops at its template's
`storage`, whatever the number of files, and the host's disk is untouched beyond it. It is
unmounted while the workspace hibernates and deleted with it. An ordinary user cannot mount,
so there the two are plain directories and `storage` bounds each file only (RLIMIT_FSIZE,
set with the other limits); `describe()` says which.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tether.errors import Unavailable

IMAGE = "disk.img"
MOUNT = "disk"


class Disks:
    def __init__(self) -> None:
        self.problem = ""
        if os.geteuid() != 0:
            self.problem = "not root, so no filesystem of their own"
        elif shutil.which("mkfs.ext4") is None:
            self.problem = "mkfs.ext4 is missing (e2fsprogs)"
        elif not Path("/dev/loop-control").exists():
            self.problem = "no loop devices"

    @property
    def quota(self) -> bool:
        return not self.problem

    def describe(self) -> str:
        if self.quota:
            return "a filesystem of its own per workspace (ext4 image)"
        return f"per file only: {self.problem}"

    def mount(self, control: Path, size: int, uid: int | None) -> Path:
        """The workspace's disk, mounted (and made, the first time) at control/disk."""
        where = control / MOUNT
        where.mkdir(mode=0o700, exist_ok=True)
        if not self.quota or os.path.ismount(where):
            return where
        image = control / IMAGE
        if not image.exists():
            fresh = image.with_name(IMAGE + ".new")
            with open(fresh, "wb") as f:
                f.truncate(size)
            owner = ["-E", f"root_owner={uid}:{uid},nodiscard"] if uid is not None else []
            _run("mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal", *owner, str(fresh))
            os.replace(fresh, image)
        _run("mount", "-o", "loop,nodev,nosuid,noatime", str(image), str(where))
        return where

    def unmount(self, control: Path) -> None:
        where = control / MOUNT
        if not self.quota:
            return
        for lazy in ((), ("--lazy",)):  # still busy a moment after its last process: let it go
            if not os.path.ismount(where):  # another release got there first
                return
            try:
                _run("umount", *lazy, str(where))
                return
            except Unavailable:
                if lazy and os.path.ismount(where):
                    raise


def _run(*command: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise Unavailable(f"{command[0]} failed: {done.stderr.strip() or done.returncode}")
