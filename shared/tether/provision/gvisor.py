"""`TETHER_SANDBOX=gvisor`: a local workspace under gVisor (`runsc`, Debian's package), a
kernel in user space between the workspace and the host: what Cloud Run's first generation and
GKE Sandbox run. The workspace's system calls are served by gVisor's sentry; only a narrow set
reaches the host kernel.

The view is the one bubblewrap builds (`tether.provision.sandbox`), written as an OCI bundle:
the host's /usr and /etc read-only, the runtime's interpreter and code read-only, the home at
/home/tether, the storage directory at /bucket, a private /tmp of the template's size. The
workspace runs as its per-workspace uid, with no capabilities and no new privileges; the
template's limits become rlimits gVisor enforces inside (a fork bomb meets EAGAIN, a hog
MemoryError), and the sandbox's own host processes sit in the workspace's control group with
room for gVisor's overhead on top.

This runsc cannot take a listening socket as a descriptor: the runtime listens on paths in a
per-workspace directory bound at /run/tether (`--host-uds=create`), which only that workspace
and the agent can reach; the runtime token (`tether.runtime.auth`) still guards each call.
Root only (gVisor's gofer must read what the workspace's uid cannot), and no egress: gVisor's
own network stack would bypass the fences `tether.provision.network` puts in the namespace.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tether.errors import Unavailable
from tether.provision.limits import Limits
from tether.provision.sandbox import BUCKET, INSIDE_HOME, SYSTEM, usr_links

SOCKETS = "/run/tether"  # inside: where the runtime makes its sockets
OVERHEAD_MEMORY = 384 << 20  # gVisor's sentry and gofer, beside the workspace's own memory
# Host tasks per workspace process: on the ptrace platform (the only one here: no nested KVM)
# each address space has a stub process and the sentry a thread per task it traces. Measured:
# a fork bomb held at 62 processes inside peaked at 2,324 host tasks (idle: 70). The limit
# inside (RLIMIT_NPROC) must bite first: a sandbox that meets its host limit dies whole.
HOST_TASKS_PER_PROCESS = 48
OVERHEAD_PIDS = 1024


def bundle(
    where: Path,
    *,
    command: list[str],
    env: dict[str, str],
    uid: int,
    home: Path,
    bucket: Path,
    sockets: Path,
    runtime: list[str],
    limits: Limits,
) -> None:
    """Writes the OCI bundle (config.json and an empty read-only root to mount onto)."""
    rootfs = where / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    rootfs.mkdir(parents=True)
    for link, target in usr_links():  # /bin, /lib, ... as links into /usr
        (rootfs / link.lstrip("/")).symlink_to(target)
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "mode=755", "size=65536k"]},
        *({"destination": path, "type": "tmpfs", "source": "tmpfs",
           "options": ["nosuid", "nodev", "mode=1777", f"size={limits.tmp}"]}
          for path in ("/tmp", "/dev/shm")),
    ]  # fmt: skip
    binds = [(p, p, "ro") for p in (*SYSTEM, *runtime)]
    binds += [(str(home), INSIDE_HOME, "rw"), (str(bucket), BUCKET, "rw")]
    binds += [(str(sockets), SOCKETS, "rw")]
    for source, destination, mode in binds:
        (rootfs / destination.lstrip("/")).mkdir(parents=True, exist_ok=True)
        mounts.append({"destination": destination, "type": "bind", "source": source,
                       "options": ["rbind", mode, "nosuid", "nodev"]})  # fmt: skip
    for path in [*(d for _, d, _ in binds), "/proc", "/dev", "/tmp"]:  # /dev/shm: in /dev
        (rootfs / path.lstrip("/")).mkdir(parents=True, exist_ok=True)

    def rlimit(kind: str, value: int) -> dict[str, Any]:
        return {"type": kind, "hard": value, "soft": value}

    config = {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": uid},
            "args": command,
            "env": [f"{k}={v}" for k, v in env.items()],
            "cwd": INSIDE_HOME,
            "capabilities": {k: [] for k in
                             ("bounding", "effective", "inheritable", "permitted", "ambient")},
            "rlimits": [
                rlimit("RLIMIT_NPROC", limits.pids),
                # Address space, not resident memory: room for the runtime's own mappings.
                rlimit("RLIMIT_AS", limits.memory + (512 << 20)),
                rlimit("RLIMIT_FSIZE", limits.disk),
                rlimit("RLIMIT_CORE", 0),
                rlimit("RLIMIT_NOFILE", 4096),
            ],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "workspace",
        "mounts": mounts,
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
        },
    }  # fmt: skip
    (where / "config.json").write_text(json.dumps(config))


def host_limits(limits: Limits) -> Limits:
    """The limits of the sandbox's host processes: the workspace's, plus gVisor's own. No
    file size: the sentry keeps the workspace's memory in a file of its own."""
    return Limits(
        pids=limits.pids * HOST_TASKS_PER_PROCESS + OVERHEAD_PIDS,
        memory=limits.memory + OVERHEAD_MEMORY,
        cpu=limits.cpu,
        tmp=limits.tmp,
        disk=resource.RLIM_INFINITY,
    )


def runsc(state: Path, *args: str) -> list[str]:
    return ["runsc", f"--root={state}", "--network=none", "--host-uds=create",
            "--ignore-cgroups", *args]  # fmt: skip


def forget(state: Path, container: str) -> None:
    """Removes what a sandbox that died without runsc's own clean-up left in its state."""
    if any(state.glob(f"*{container}*")):
        done = subprocess.run(
            runsc(state, "delete", "--force", container), capture_output=True, text=True
        )
        if done.returncode and "does not exist" not in done.stderr:
            raise Unavailable(f"runsc could not remove {container}: {done.stderr.strip()}")
