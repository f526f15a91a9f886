"""The command line that confines a local workspace (bubblewrap), and who it runs as.

What the workspace sees is built, not subtracted: the host's /usr and /etc read-only (the
"image"), the interpreter and code the runtime needs read-only, its own home at /home/tether,
its storage directory at /bucket (and ~/bucket), a private /tmp of bounded size, its own /proc
and a minimal /dev. Nothing else of the host exists in it: not TETHER_HOME, not other
workspaces, not the agent's sockets (the runtime's listening sockets are handed in as
descriptors).

Processes inside are root in a user namespace of their own, which is an unprivileged id on the
host: with the stack running as root, a per-workspace uid (`host_uid`), so even a file that
leaked into view belongs to nobody the workspace can act as; as an ordinary user, that user.
They hold no capabilities, cannot gain any (no_new_privs), run in their own session (no
TIOCSTI into the agent's terminal), die with the agent, and stay under the seccomp filter of
`tether.provision.seccomp`.

As root, two bubblewraps: the outer, privileged one builds the view (it may read paths such as
a pyenv under /root that the workspace's uid could not even traverse), then drops to the
workspace's uid; the inner, unprivileged one makes the user namespace. An ordinary user needs
only the inner one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

INSIDE_HOME = "/home/tether"
BUCKET = "/bucket"
SYSTEM = ("/usr", "/etc")
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Per-workspace host uids (and gids), as root: inside systemd's range for containers' users.
UID_BASE = 0x40000000
UID_SPAN = 1 << 24


def host_uid(session_id: str) -> int | None:
    """The host uid a workspace runs as: its own when the stack runs as root, else None (the
    stack's user, the only one an ordinary user may map into a user namespace)."""
    if os.geteuid() != 0:
        return None
    digest = int(hashlib.sha256(session_id.encode()).hexdigest()[:12], 16)
    return UID_BASE + digest % UID_SPAN


@functools.cache
def _import_path() -> tuple[str, ...]:
    """Where the runtime's interpreter imports from, as it will run (`-I`: no PYTHONPATH, no
    working directory): a virtualenv's site-packages, an editable install's source, ..."""
    out = subprocess.run(
        [sys.executable, "-I", "-c", "import json, sys; print(json.dumps(sys.path))"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return tuple(json.loads(out))


def runtime_paths(hidden: Path) -> list[str]:
    """What the runtime needs of the host besides the system: its interpreter and all it
    imports from. Never a directory holding `hidden` (TETHER_HOME) or inside it."""
    wanted = {sys.base_prefix, sys.prefix, *_import_path()}
    paths = sorted(
        str(Path(p).resolve())
        for p in wanted
        if Path(p).is_dir() and not any(Path(p).is_relative_to(s) for s in SYSTEM)
    )
    kept: list[str] = []
    for p in paths:  # sorted: a parent comes before what it holds
        if kept and Path(p).is_relative_to(kept[-1]):
            continue
        if hidden.is_relative_to(p) or Path(p).is_relative_to(hidden):
            raise RuntimeError(f"TETHER_HOME ({hidden}) must not hold or lie inside {p}")
        kept.append(p)
    return kept


@dataclass(frozen=True)
class Plan:
    home: Path  # host paths, both the workspace's to write
    bucket: Path
    hidden: Path  # TETHER_HOME
    uid: int | None  # see host_uid
    tmp_size: int  # bytes
    seccomp_fd: int
    info_fd: int  # bubblewrap writes the first sandboxed pid here ...
    block_fd: int  # ... which then waits for a byte here: limits and network come first
    resolv_fd: int | None = None  # egress: the resolv.conf the workspace gets


def usr_links() -> list[tuple[str, str]]:
    """The host root's links into /usr (/bin -> usr/bin, ...): (link, target)."""
    found = []
    for entry in sorted(os.listdir("/")):
        full = "/" + entry
        if os.path.islink(full) and os.readlink(full).lstrip("/").startswith("usr/"):
            found.append((full, os.readlink(full)))
    return found


def _system() -> list[str]:
    """/usr and /etc read-only, and the root's links into /usr (/bin, /lib, ...) as links."""
    args: list[str] = []
    for path in SYSTEM:
        args += ["--ro-bind", path, path]
    for link, target in usr_links():
        args += ["--symlink", target, link]
    return args


def _parents(path: str, made: set[str]) -> list[str]:
    """`--dir` for each missing parent of a mount point: bubblewrap would make them 0700,
    which the workspace's uid could not pass through."""
    args: list[str] = []
    for parent in reversed(Path(path).parents[:-1]):  # outermost first, "/" left out
        if str(parent) not in made:
            made.add(str(parent))
            args += ["--dir", str(parent)]
    return args


def _view(plan: Plan, runtime: list[str]) -> list[str]:
    args, made = _system(), set(SYSTEM)
    for path in runtime:
        args += [*_parents(path, made), "--ro-bind", path, path]
    if plan.resolv_fd is not None:
        args += ["--ro-bind-data", str(plan.resolv_fd), "/etc/resolv.conf"]
    args += [*_parents(INSIDE_HOME, made), "--bind", str(plan.home), INSIDE_HOME]
    # Beside the home, not in it: a mount point in the home could be a link the workspace
    # planted. ~/bucket is a link to it (`tether.provision.local`).
    args += ["--bind", str(plan.bucket), BUCKET]
    return args


# Namespaces every workspace gets. The network one is its own loopback; egress is a user-mode
# network attached to it from outside (`tether.provision.network`).
_NAMESPACES = [
    "--unshare-net", "--unshare-ipc", "--unshare-uts", "--hostname", "workspace",
    "--unshare-cgroup-try",
]  # fmt: skip


def _confined(plan: Plan, runtime: list[str]) -> list[str]:
    """The inner layer's own options: the user and pid namespaces, and what runs in them.
    `--disable-userns` nests a second user namespace, which would keep an ordinary user's
    slirp4netns out of the network namespace: there the seccomp filter alone (which refuses
    unshare, setns and clone's namespace flags) keeps the workspace from making more."""
    return [
        "--unshare-user", "--uid", "0", "--gid", "0",
        *(["--disable-userns"] if plan.uid is not None else []),
        "--unshare-pid",
        "--proc", "/proc",
        # /dev is a tmpfs of bubblewrap's: read-only, and /dev/shm bounded like /tmp
        "--dev", "/dev",
        "--size", str(plan.tmp_size), "--tmpfs", "/dev/shm",
        "--remount-ro", "/dev",
        "--size", str(plan.tmp_size), "--tmpfs", "/tmp",
        # what the runtime needs from under /tmp (a checkout or virtualenv there) comes back
        *(a for p in runtime if Path(p).is_relative_to("/tmp") for a in ("--ro-bind", p, p)),
        "--new-session",
        "--die-with-parent",
        "--cap-drop", "ALL",
        "--seccomp", str(plan.seccomp_fd),
        "--chdir", INSIDE_HOME,
    ]  # fmt: skip


def bubblewrap(plan: Plan, command: list[str]) -> tuple[list[str], list[str]]:
    """The first bubblewrap's options, and what it runs. The options go in through
    `--args FD`: they name host paths (TETHER_HOME's), and the workspace can read the command
    line of a bubblewrap in its pid namespace (an ordinary user's only layer)."""
    gate = ["--info-fd", str(plan.info_fd), "--block-fd", str(plan.block_fd)]
    runtime = runtime_paths(plan.hidden)
    if plan.uid is None:  # an ordinary user: one unprivileged layer does it all
        view, confined = _view(plan, runtime), _confined(plan, runtime)
        options = [*_NAMESPACES, *view, *confined, "--remount-ro", "/", *gate]
        return options, command
    drop = [
        "setpriv", f"--reuid={plan.uid}", f"--regid={plan.uid}", "--clear-groups",
        "--inh-caps=-all", "--bounding-set=-all",
    ]  # fmt: skip
    # The outer layer's pid namespace holds everything the workspace ever runs, so the
    # kernel ends it all when its first process dies, with the agent or killed.
    options = [
        *_NAMESPACES, "--unshare-pid", "--die-with-parent", *_view(plan, runtime),
        # The inner layer mounts its own /proc, which the kernel allows only where a whole
        # one is visible: the host's, covered at once by the workspace's own.
        "--bind", "/proc", "/proc", "--dev", "/dev", "--dir", "/tmp",
        "--remount-ro", "/", *gate,
    ]  # fmt: skip
    inner = ["bwrap", "--bind", "/", "/", *_confined(plan, runtime)]
    return options, [*drop, *inner, "--", *command]


def clean_env(*layers: dict[str, str]) -> dict[str, str]:
    """A workspace's environment: a plain base, then the template's and the session's own
    variables. Nothing of the server's (its PATH into a virtualenv, PYTHONPATH, credentials)."""
    env = {"PATH": CLEAN_PATH, "HOME": INSIDE_HOME, "LANG": "C.UTF-8", "TERM": "xterm-256color"}
    env |= {"USER": "root", "LOGNAME": "root", "SHELL": "/bin/bash"}
    for layer in layers:
        env |= layer
    return env
