"""A workspace's limits where cgroup v1 mounts only some of pids, memory and cpu (as on VMs
with pids and memory only): each controller there is used, each missing one falls back to its
rlimit (or to nothing, for cpu), and the description the health report and the start-up line
carry says which is which. The hierarchies are directories made here: the code writes the
cgroup files as it would on the real filesystem."""

from __future__ import annotations

import resource
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tether.provision.limits import Groups, Limits

LIMITS = Limits(pids=77, memory=300 << 20, cpu=0.5, tmp=1 << 20, disk=64 << 20)


@pytest.fixture
def child() -> Iterator[int]:
    """A process to confine (the workspace's first process, as it waits at its gate)."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc.pid
    proc.kill()
    proc.wait()


def hierarchies(root: Path, *controllers: str) -> dict[str, Path]:
    mounts = {c: root / c for c in controllers}
    for where in mounts.values():
        (where / "agents").mkdir(parents=True)
    return mounts


def rlimit(pid: int, which: int) -> int:
    return resource.prlimit(pid, which)[0]


def test_v1_with_pids_and_memory_only_uses_both_and_says_cpu_has_no_share(
    tmp_path: Path, child: int
) -> None:
    mounts = hierarchies(tmp_path, "pids", "memory")
    own = {"pids": "agents", "memory": "agents", "cpu": "agents"}
    groups = Groups("tether-x", mounts, own)
    assert set(groups.dirs) == {"pids", "memory"} and not groups.complete
    assert groups.describe() == "cgroup v1 (pids, memory); cpu: no share (no controller)"
    # the agent's parent group caps all its workspaces together
    parent = tmp_path / "pids" / "agents" / "tether-x"
    assert int((parent / "pids.max").read_text()) > 0
    assert (tmp_path / "memory" / "agents" / "tether-x" / "memory.limit_in_bytes").exists()

    nproc, data = rlimit(child, resource.RLIMIT_NPROC), rlimit(child, resource.RLIMIT_DATA)
    groups.confine("ws", child, LIMITS)
    pids = parent / "ws"
    memory = tmp_path / "memory" / "agents" / "tether-x" / "ws"
    assert (pids / "pids.max").read_text() == "77"
    assert (pids / "cgroup.procs").read_text() == str(child)
    assert (memory / "memory.limit_in_bytes").read_text() == str(300 << 20)
    assert (memory / "cgroup.procs").read_text() == str(child)
    # the groups bound these, so no rlimit narrows them as well
    assert rlimit(child, resource.RLIMIT_NPROC) == nproc
    assert rlimit(child, resource.RLIMIT_DATA) == data
    assert rlimit(child, resource.RLIMIT_FSIZE) == 64 << 20


def test_a_missing_pids_or_memory_controller_becomes_its_rlimit(tmp_path: Path, child: int) -> None:
    groups = Groups("tether-y", hierarchies(tmp_path, "memory", "cpu"), {})
    assert groups.describe() == "cgroup v1 (memory, cpu); pids: RLIMIT_NPROC (no controller)"
    groups.confine("ws", child, LIMITS)
    assert rlimit(child, resource.RLIMIT_NPROC) == 77
    cpu = tmp_path / "cpu" / "tether-y" / "ws"
    assert (cpu / "cpu.cfs_quota_us").read_text() == "50000"
    assert (cpu / "cgroup.procs").read_text() == str(child)

    groups = Groups("tether-z", hierarchies(tmp_path / "other", "pids"), {})
    assert groups.describe() == (
        "cgroup v1 (pids); memory: RLIMIT_DATA per process (no controller); "
        "cpu: no share (no controller)"
    )
    groups.confine("ws", child, LIMITS)
    assert rlimit(child, resource.RLIMIT_DATA) == 300 << 20


def test_all_three_v1_controllers_are_complete_and_none_is_no_groups(tmp_path: Path) -> None:
    groups = Groups("tether-a", hierarchies(tmp_path, "pids", "memory", "cpu"), {})
    assert groups.complete and groups.describe() == "cgroup v1 (pids, memory, cpu)"
    none = Groups("tether-b", {}, {})
    assert not none.available and not none.complete
    assert none.describe().startswith("rlimits only: cannot create control groups")
