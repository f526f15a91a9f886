"""What a local workspace may use: processes, memory, CPU, file sizes.

Each workspace gets a control group of its own (cgroup v2, or v1's pids, memory and cpu
hierarchies where those hold the controllers, as on many VMs), under one parent group of this
process, written through the cgroup filesystem. The parent caps them all together, leaving the
agent and the host room to act. A memory hog is then OOM-killed inside its own
group, and a fork bomb stops at its pids limit. Where the groups cannot be made (an ordinary
user without a delegated cgroup, a read-only cgroupfs), or v1 mounts only some of the three,
what no group bounds becomes an rlimit of the workspace's first process, inherited by all it
starts: weaker (RLIMIT_DATA per process, RLIMIT_NPROC per user namespace, no CPU share), never
silently nothing; `describe()` says which is enforced how.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from tether.core.quantities import to_bytes, to_cores

V1_CONTROLLERS = ("pids", "memory", "cpu")
# How a limit is enforced without its controller (`Groups.confine`).
_FALLBACK = {"pids": "RLIMIT_NPROC", "memory": "RLIMIT_DATA per process", "cpu": "no share"}
_CFS_PERIOD = 100_000  # microseconds


@dataclass(frozen=True)
class Limits:
    pids: int
    memory: int  # bytes
    cpu: float  # cores
    tmp: int  # bytes of the private /tmp (a tmpfs: memory, so charged to `memory` too)
    disk: int  # bytes a file in the home may grow to

    @classmethod
    def of(cls, resources: dict[str, str]) -> Limits:
        """From a template's resources (Kubernetes quantities), with a workspace's defaults
        for what it leaves out."""
        r = {"cpu": "1", "memory": "1Gi", "pids": "512", "ephemeral-storage": "256Mi"}
        r |= {"storage": "1Gi"} | resources
        return cls(
            pids=max(16, int(to_cores(r["pids"], "resources.pids"))),
            memory=max(64 << 20, to_bytes(r["memory"], "resources.memory")),
            cpu=max(0.01, to_cores(r["cpu"], "resources.cpu")),
            tmp=max(1 << 20, to_bytes(r["ephemeral-storage"], "resources.ephemeral-storage")),
            disk=max(1 << 20, to_bytes(r["storage"], "resources.storage")),
        )


def _mounts() -> dict[str, Path]:
    """Where each cgroup hierarchy is mounted: v1 by controller name, v2 as "unified"."""
    found: dict[str, Path] = {}
    with open("/proc/self/mounts") as f:
        for line in f:
            _, where, kind, options, *_ = line.split()
            if kind == "cgroup2":
                found.setdefault("unified", Path(where))
            elif kind == "cgroup":
                for option in options.split(","):
                    if option in V1_CONTROLLERS:
                        found.setdefault(option, Path(where))
    return found


def _own_paths() -> dict[str, str]:
    """This process's group in each hierarchy (/proc/self/cgroup), by controller; "" is v2."""
    paths: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else ["unified"]:
                paths[controller] = path.lstrip("/")
    return paths


class Groups:
    """The parent group of this process's workspaces and one child group per workspace."""

    def __init__(
        self, name: str, mounts: dict[str, Path] | None = None, own: dict[str, str] | None = None
    ) -> None:
        """`mounts` and `own`: the hierarchies and this process's place in them (by default,
        as /proc/self says)."""
        self.name = name
        self.dirs: dict[str, Path] = {}  # controller ("unified" for v2) -> our parent group
        self.problem = ""
        try:
            self._setup(_mounts() if mounts is None else mounts,
                        _own_paths() if own is None else own)  # fmt: skip
        except OSError as exc:
            self.dirs = {}
            self.problem = f"cannot create control groups ({exc.strerror or exc})"

    def _setup(self, mounts: dict[str, Path], own: dict[str, str]) -> None:
        v1 = [c for c in V1_CONTROLLERS if c in mounts]
        if len(v1) < len(V1_CONTROLLERS):
            try:
                self._setup_v2(mounts, own)
                return
            except OSError:
                if not v1:
                    raise
            # v1 with only some of the three (say pids and memory): those, and rlimits for
            # the rest (`confine`).
        for c in v1:
            self.dirs[c] = self._make(mounts[c] / own.get(c, "") / self.name)
        if "pids" in self.dirs:
            (self.dirs["pids"] / "pids.max").write_text(str(_all_pids()))
        if "memory" in self.dirs:
            (self.dirs["memory"] / "memory.limit_in_bytes").write_text(str(_all_memory()))

    def _setup_v2(self, mounts: dict[str, Path], own: dict[str, str]) -> None:
        unified = mounts.get("unified")
        if unified is None:
            raise OSError(errno.ENOENT, "no pids, memory and cpu controllers mounted")
        base = unified / own.get("unified", "")
        available = (base / "cgroup.controllers").read_text().split()
        if not set(V1_CONTROLLERS) <= set(available):
            raise OSError(errno.ENOENT, f"cgroup v2 offers only {available or 'no controllers'}")
        # A v2 group holding processes may not enable controllers for children: ours are
        # created under a group of their own, with the controllers enabled on the way down.
        top = self._make(base / self.name)
        (base / "cgroup.subtree_control").write_text("+pids +memory +cpu")
        (top / "cgroup.subtree_control").write_text("+pids +memory +cpu")
        (top / "pids.max").write_text(str(_all_pids()))
        (top / "memory.max").write_text(str(_all_memory()))
        self.dirs["unified"] = top

    @staticmethod
    def _make(path: Path) -> Path:
        path.mkdir(exist_ok=True)
        return path

    @property
    def available(self) -> bool:
        return bool(self.dirs)

    def grouped(self, controller: str) -> bool:
        """Whether a workspace's group bounds `controller` ("pids", "memory", "cpu")."""
        return controller in self.dirs or "unified" in self.dirs

    @property
    def complete(self) -> bool:
        return all(self.grouped(c) for c in V1_CONTROLLERS)

    def describe(self) -> str:
        if "unified" in self.dirs:
            return "cgroup v2 (pids, memory, cpu)"
        if not self.dirs:
            return f"rlimits only: {self.problem}"
        missing = [f"{c}: {_FALLBACK[c]} (no controller)" for c in V1_CONTROLLERS
                   if c not in self.dirs]  # fmt: skip
        return "; ".join([f"cgroup v1 ({', '.join(self.dirs)})", *missing])

    def confine(self, group: str, pid: int, limits: Limits) -> None:
        """Puts `pid` (before it starts anything) under `limits`: in a group of its own when
        groups can be made, else as its rlimits. Both are inherited by all it starts."""
        _prlimit(pid, resource.RLIMIT_CORE, 0)  # a crash must not write the memory out
        _prlimit(pid, resource.RLIMIT_FSIZE, limits.disk)
        if not self.grouped("pids"):
            _prlimit(pid, resource.RLIMIT_NPROC, limits.pids)
        if not self.grouped("memory"):
            _prlimit(pid, resource.RLIMIT_DATA, limits.memory)
        if not self.dirs:
            return
        quota = max(1000, int(limits.cpu * _CFS_PERIOD))
        for controller, parent in self.dirs.items():
            path = self._make(parent / group)
            if controller == "unified":
                (path / "pids.max").write_text(str(limits.pids))
                (path / "memory.max").write_text(str(limits.memory))
                with contextlib.suppress(OSError):  # no swap accounting: nothing to limit
                    (path / "memory.swap.max").write_text("0")
                (path / "cpu.max").write_text(f"{quota} {_CFS_PERIOD}")
            elif controller == "pids":
                (path / "pids.max").write_text(str(limits.pids))
            elif controller == "memory":
                (path / "memory.limit_in_bytes").write_text(str(limits.memory))
                with contextlib.suppress(OSError):  # swap accounting off: nothing to limit
                    (path / "memory.memsw.limit_in_bytes").write_text(str(limits.memory))
            elif controller == "cpu":
                (path / "cpu.cfs_period_us").write_text(str(_CFS_PERIOD))
                (path / "cpu.cfs_quota_us").write_text(str(quota))
                (path / "cpu.shares").write_text(str(max(2, int(1024 * limits.cpu))))
            (path / "cgroup.procs").write_text(str(pid))

    def join(self, group: str, pid: int) -> None:
        """Puts `pid` in a workspace's group, made by `confine` (with groups at all)."""
        for parent in self.dirs.values():
            (parent / group / "cgroup.procs").write_text(str(pid))

    def release(self, group: str) -> None:
        """Kills whatever is left in the workspace's group and removes it."""
        for parent in self.dirs.values():
            path = parent / group
            deadline = time.monotonic() + 5
            while path.is_dir():
                try:
                    pids = (path / "cgroup.procs").read_text().split()
                except FileNotFoundError:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
                try:
                    path.rmdir()
                except FileNotFoundError:
                    break
                except OSError as exc:  # EBUSY: the killed are not reaped yet
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)

    def close(self) -> None:
        for parent in self.dirs.values():
            with contextlib.suppress(OSError):  # another process's workspaces may use it
                parent.rmdir()


def _all_pids() -> int:
    """What all of the agent's workspaces together may hold of the host's pids: three
    quarters, so the agent and the host can always start a process."""
    with open("/proc/sys/kernel/pid_max") as f:
        return int(f.read()) * 3 // 4


def _all_memory() -> int:
    """All of the agent's workspaces together: the machine's memory less a reserve for the
    agent and the host (a tenth, at least 1 GiB)."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return max(total - max(total // 10, 1 << 30), 256 << 20)


def _prlimit(pid: int, which: int, value: int) -> None:
    resource.prlimit(pid, which, (value, value))
