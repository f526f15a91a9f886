"""Workspaces as sandboxed local processes.

A workspace is a home directory plus the workspace runtime (`tether.runtime`) running in a
sandbox (`tether.provision.sandbox`: bubblewrap, namespaces, seccomp), under limits
(`tether.provision.limits`) and with the network its template asks for
(`tether.provision.network`). The runtime serves on two Unix sockets the agent makes in a
private directory and hands in as descriptors; a template's `command` is the workspace's main
process, which the runtime starts and stops; its output is the session log, a file in the home,
so it can be read while the workspace hibernates.

Everything the agent keeps about a workspace (how to start it, whether it hibernates) lives in
a control directory beside the home that the sandbox never sees: the home is the workspace's
to change, and nothing here follows a path through it.

`TETHER_SANDBOX=none` runs workspaces as plain processes of the stack's user, for development
on a machine without bubblewrap: no isolation at all, and the health report says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tenacity

from tether.core.models import ExecResult, WorkspaceActivity, WorkspaceInfo, WorkspaceSpec
from tether.errors import Invalid, NotFound, Unavailable
from tether.private_dir import private_dir
from tether.provision import gvisor, network, sandbox, seccomp
from tether.provision.disks import Disks
from tether.provision.limits import Groups, Limits
from tether.provision.runtime_http import ACTIVITY_WAIT, read_activity
from tether.provision.uds import UnixHTTPClient, UnixJsonClient
from tether.runtime import auth
from tether.runtime.session_log import tail as read_tail

log = logging.getLogger(__name__)

SANDBOXES = ("bubblewrap", "gvisor", "none")
CONFIG = "workspace.json"  # in the control directory: what (re)starting the runtime needs
HIBERNATED = "hibernated"
EXEC = ".exec"  # suffix of a runtime's exec channel socket
RUNTIME_LOG = ".tether/runtime.log"  # in the home: the runtime's own output
_START_WAIT = 15.0
POOLED = "pooled"  # in the agent's home: one file per session given a pooled workspace
_POOL_PREFIX = "pool-"  # a workspace started ahead, named for itself until a session takes it
_REFILL_BACKOFF = 5.0  # after a pooled start fails
# What the launchers (bubblewrap, setpriv, runsc: root's, as root) run with.
_LAUNCHER_ENV = {"PATH": sandbox.CLEAN_PATH}


@dataclass
class _Runtime:
    """A workspace's sandbox, and the runtime's two ways in: HTTP for control, the exec
    channel for commands."""

    proc: subprocess.Popen[bytes]
    http: UnixHTTPClient
    exec: UnixJsonClient
    egress: network.Egress | None = None
    first: int | None = None  # a pidfd of the sandbox's first process

    def close(self) -> None:
        self.http.close()
        self.exec.close()
        if self.egress is not None:
            self.egress.close()
        if self.first is not None:
            _kill_first(self.first)
            os.close(self.first)
            self.first = None


class LocalProvisioner:
    platform = "local"

    def __init__(
        self,
        home: Path,
        sandbox: str = "bubblewrap",
        secret: str = "",
        pool: Mapping[str, int] | None = None,
    ) -> None:
        """`pool`: how many workspaces of each template to keep started ahead (see `start`)."""
        if sandbox not in SANDBOXES:
            raise Invalid(f"TETHER_SANDBOX must be one of {', '.join(SANDBOXES)}, not {sandbox!r}")
        if sandbox == "bubblewrap" and shutil.which("bwrap") is None:
            raise Unavailable(
                "Workspaces need bubblewrap (`bwrap`): install it (infra/apt-packages.sh), "
                "or set TETHER_SANDBOX=none to run them unconfined"
            )
        # gVisor for every workspace (TETHER_SANDBOX), or for a template that asks for it.
        self.gvisor_ready = os.geteuid() == 0 and shutil.which("runsc") is not None
        if sandbox == "gvisor" and not self.gvisor_ready:
            raise Unavailable(
                "TETHER_SANDBOX=gvisor needs root and runsc (infra/apt-packages.sh installs it)"
            )
        self.home = Path(home).resolve()
        self.root = self.home / "workspaces"
        for path in (self.home, self.root):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.sandbox = sandbox
        self.secret = secret or os.urandom(32).hex()
        digest = hashlib.sha256(str(self.home).encode()).hexdigest()[:12]
        # Unix socket paths are limited to ~108 bytes, so they live in a short private dir.
        self.sockets = private_dir(Path(tempfile.gettempdir()) / f"tether-{os.getuid()}-{digest}")
        self.groups = Groups(f"tether-{digest}")
        self.disks = Disks()
        self._runtimes: dict[str, _Runtime] = {}
        self._locks: dict[str, threading.RLock] = {}
        self.closed = False
        self._lock = threading.Lock()  # guards the map of locks, and the pool's maps
        # The warm pool: templates' configs as their first sessions showed them, the
        # workspaces started ahead for each, and which session each given one serves.
        self.pool_sizes = {name: n for name, n in (pool or {}).items() if n > 0}
        self._wanted: dict[str, tuple[str, dict[str, Any], int]] = {}  # template -> key, ...
        self._stopping = threading.Event()
        self._ready: dict[str, list[str]] = {}  # config key -> pooled workspace ids
        self._refill = threading.Condition(self._lock)
        self._filler: threading.Thread | None = None
        # On disk, for the next agent too: a file per pooled workspace given out, named for
        # it, holding its session's id.
        self._pooled = private_dir(self.home / POOLED)
        self._serving = {
            f.read_text(): f.name
            for f in self._pooled.glob(_POOL_PREFIX + "*")
            if not f.name.endswith(".tmp")
        }  # session id -> workspace id
        self._forget_unclaimed()
        if sandbox != "none" and not self.groups.complete:  # what no group bounds, said
            log.warning("workspace limits: %s", self.groups.describe())

    def isolation(self) -> dict[str, Any]:
        """What confines this agent's workspaces, for the health report and the start-up log."""
        pool = {"sizes": self.pool_sizes, "ready": self.warm()}
        if self.sandbox == "none":
            return {"sandbox": "none", "warning": "workspaces run unconfined (TETHER_SANDBOX)",
                    "warm_pool": pool}  # fmt: skip
        egress = "slirp4netns" if shutil.which("slirp4netns") else "unavailable: no slirp4netns"
        return {
            "warm_pool": pool,
            "sandbox": self.sandbox,
            "host_uid": "one per workspace" if os.geteuid() == 0 else "the stack's user",
            "limits": self.groups.describe(),
            "disk": self.disks.describe(),
            "egress": "unavailable under gVisor" if self.sandbox == "gvisor" else egress,
            "gvisor": "available (no egress)" if self.gvisor_ready else "needs root and runsc",
        }

    # -- paths -------------------------------------------------------------------------------

    def control(self, session_id: str) -> Path:
        if "/" in session_id or session_id.startswith(".") or not session_id:
            raise NotFound("Workspace not found")
        return self.root / session_id

    def workdir(self, session_id: str) -> Path:
        """The workspace's home, as the host sees it (while its disk is mounted)."""
        return self.control(session_id) / "disk" / "home"

    def bucket(self, session_id: str) -> Path:
        return self.control(session_id) / "disk" / "bucket"

    def kind(self, session_id: str, config: dict[str, Any] | None = None) -> str:
        """The sandbox a workspace runs in (from its config, read if not given): the
        agent's, or gVisor where its template asks."""
        try:
            config = self._config(session_id) if config is None else config
        except NotFound:
            return self.sandbox
        return str(config.get("sandbox", self.sandbox))

    def socket_path(self, session_id: str, suffix: str = ".sock", kind: str = "") -> Path:
        if (kind or self.kind(session_id)) == "gvisor":  # the runtime makes them, on its disk
            return self._run_dir(session_id) / ("runtime" + suffix)
        return self.sockets / (self._key(session_id) + suffix)

    def _run_dir(self, session_id: str) -> Path:
        """gVisor's runtime makes its sockets here (/run/tether inside): on the workspace's
        own disk, so what else it writes there counts against its storage."""
        return self.control(session_id) / "disk" / "run"

    @staticmethod
    def _key(session_id: str) -> str:
        return hashlib.sha256(session_id.encode()).hexdigest()[:16]

    def _info(self, session_id: str) -> WorkspaceInfo:
        wid = self._workspace(session_id)
        return WorkspaceInfo(
            url=f"http+unix://{self.socket_path(wid)}",
            details={
                "service_name": f"tether-{session_id}",
                "bucket_name": str(self.bucket(wid)),
                "workdir": str(self.workdir(wid)),
                "sandbox": self.kind(wid),
            },
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, spec: WorkspaceSpec) -> WorkspaceInfo:
        """Starts the workspace, or gives the session one of its template's started ahead
        (when the agent keeps a pool for the template and the session adds no environment of
        its own). A pooled workspace is a new one, never used before, and is this session's
        alone from then on: it is stopped and gone with the session, like any other."""
        sid = spec.session_id
        template = spec.template
        Limits.of(template.resources)  # a bad quantity fails the start, not a later wake
        kind = "gvisor" if template.sandbox == "gvisor" else self.sandbox
        if kind == "gvisor" and not self.gvisor_ready:
            raise Unavailable(
                f"Template '{template.name}' asks for gVisor, which this agent cannot run "
                "(it needs root and runsc)"
            )
        config = {
            "sandbox": kind,
            "env": dict(template.env) | dict(spec.env),
            "main": template.command,
            "network": template.network,
            "resources": template.resources,
        }
        with self._session(sid):
            wid = self._workspace(sid)
            if wid == sid and not (self.control(sid) / CONFIG).exists():  # not started yet
                wid = self._take(config) or sid
                if wid != sid and not self._adopt(sid, wid):
                    wid = sid
            if wid == sid:
                self._make(sid, config)
        if template.name in self.pool_sizes and not spec.env:
            self._want(template.name, config, self.pool_sizes[template.name])
        return self._info(sid)

    def _make(self, wid: str, config: dict[str, Any]) -> None:
        """Starts workspace `wid` with `config` (its lock held)."""
        control = self.control(wid)
        control.mkdir(mode=0o700, exist_ok=True)
        _write_atomically(control / CONFIG, json.dumps(config))
        (control / HIBERNATED).unlink(missing_ok=True)
        self._up(wid)

    # -- the warm pool -----------------------------------------------------------------------

    @staticmethod
    def _pool_key(config: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()

    def _workspace(self, session_id: str) -> str:
        """The workspace serving the session: a pooled one it was given, else its own."""
        with self._lock:
            return self._serving.get(session_id, session_id)

    def _serves(self, wid: str) -> str:
        """The session a workspace serves (its own id, while pooled and unclaimed)."""
        with self._lock:
            return next((s for s, w in self._serving.items() if w == wid), wid)

    def warm(self) -> int:
        """Workspaces started ahead, waiting for a session."""
        with self._lock:
            return sum(len(ready) for ready in self._ready.values())

    def _take(self, config: dict[str, Any]) -> str | None:
        """A ready workspace of `config` (one whose runtime died meanwhile is stopped)."""
        while True:
            with self._lock:
                ready = self._ready.get(self._pool_key(config), [])
                self._refill.notify()  # one fewer: the pool's thread starts another
                wid = ready.pop(0) if ready else None
            runtime = self._runtimes.get(wid or "")
            if wid is None or (runtime is not None and runtime.proc.poll() is None):
                return wid
            self._quietly_stop(wid)

    def _adopt(self, sid: str, wid: str) -> bool:
        """The session takes pooled workspace `wid`: the agent writes down (for its next
        start too) that it is the session's, then its runtime accepts the session's token
        only. False, and the workspace gone, if its runtime would not."""
        mapping = self._pooled / wid
        _write_atomically(mapping, sid)  # first: a crash now leaves it the session's
        token = auth.token_for(self.secret, sid)
        runtime = self._runtimes[wid]
        try:
            status, body = runtime.http.request("POST", "/adopt", {"token": token})
            if status != 200:
                raise Unavailable(f"pooled workspace refused its session: {body}")
        except (OSError, http.client.HTTPException, ValueError, Unavailable) as exc:
            log.warning("warm pool: %s not adopted (%s); starting afresh", wid, exc)
            mapping.unlink(missing_ok=True)
            self._quietly_stop(wid)
            return False
        runtime.http.headers[auth.HEADER] = runtime.exec.token = token
        with self._lock:
            self._serving[sid] = wid
        return True

    def _want(self, template: str, config: dict[str, Any], size: int) -> None:
        """Keep `size` workspaces of the template's `config` started ahead (a thread refills
        the pool); those made for a config it no longer has go."""
        key = self._pool_key(config)
        with self._lock:
            first = not self._wanted
            old = self._wanted.get(template)
            self._wanted[template] = (key, config, size)
            stale = self._ready.pop(old[0], []) if old and old[0] != key else []
            self._refill.notify()
        for wid in stale:
            self._quietly_stop(wid)
        if first:
            self._filler = threading.Thread(target=self._fill, name="warm-pool", daemon=True)
            self._filler.start()

    def _fill(self) -> None:
        """The pool's thread: starts a workspace for whichever pool is short, one at a time."""
        while (wanted := self._short()) is not None:
            key, config = wanted
            wid = _POOL_PREFIX + secrets.token_hex(8)
            try:
                with self._session(wid):
                    self._make(wid, config)
            except Exception:
                log.exception("warm pool: a workspace failed to start")
                self._quietly_stop(wid)
                self._stopping.wait(_REFILL_BACKOFF)
                continue
            with self._lock:
                if not self.closed and key in self._wanted_keys():
                    self._ready.setdefault(key, []).append(wid)
                    continue
            self._quietly_stop(wid)  # the agent closed, or the template changed, meanwhile

    def _wanted_keys(self) -> set[str]:
        return {key for key, _, _ in self._wanted.values()}

    def _short(self) -> tuple[str, dict[str, Any]] | None:
        """A pool short of its size (waiting until one is); None once the agent closes."""
        with self._lock:
            while not self.closed:
                for key, config, size in self._wanted.values():
                    if len(self._ready.get(key, [])) < size:
                        return key, config
                self._refill.wait()
        return None

    def _quietly_stop(self, wid: str) -> None:
        try:
            self._stop(wid)
        except Exception:  # the pool's thread must live on; an agent restart cleans up
            log.exception("warm pool: %s could not be stopped", wid)

    def _forget_unclaimed(self) -> None:
        """Pooled workspaces an earlier agent started and no session took: gone."""
        claimed = set(self._serving.values())
        for control in self.root.glob(_POOL_PREFIX + "*"):
            if control.name not in claimed:
                self.stop(control.name)

    def _config(self, session_id: str) -> dict[str, Any]:
        try:
            with open(self.control(session_id) / CONFIG) as f:
                config: dict[str, Any] = json.load(f)
        except FileNotFoundError:
            raise NotFound("Workspace not found") from None
        return config

    def _mount(self, session_id: str, config: dict[str, Any]) -> None:
        """The workspace's disk, with its home and storage directory (made the first time)."""
        kind = self.kind(session_id, config)
        uid = sandbox.host_uid(session_id) if kind != "none" else None
        limits = Limits.of(config["resources"])
        self.disks.mount(self.control(session_id), limits.disk, uid)
        home, bucket = self.workdir(session_id), self.bucket(session_id)
        for path in (home, bucket):
            with contextlib.suppress(FileExistsError):
                path.mkdir(mode=0o700)
                if uid is not None:
                    os.chown(path, uid, uid, follow_symlinks=False)
                if path == home:  # new, so nothing of the workspace's is in it yet
                    inside = sandbox.BUCKET if kind != "none" else str(bucket)
                    os.symlink(inside, home / "bucket")
                    if uid is not None:
                        os.chown(home / "bucket", uid, uid, follow_symlinks=False)

    def stop(self, session_id: str) -> None:
        with self._session(session_id):  # not while a start gives it a pooled workspace
            wid = self._workspace(session_id)
            self._stop(wid)
            if wid != session_id:
                (self._pooled / wid).unlink(missing_ok=True)
                with self._lock:
                    self._serving.pop(session_id, None)

    def _stop(self, session_id: str) -> None:
        control = self.control(session_id)
        with self._session(session_id):
            kind = self.kind(session_id)
            # Gone first: an exec waiting for this lock then finds nothing to bring back.
            (control / CONFIG).unlink(missing_ok=True)
            self._release(session_id, self._runtimes.pop(session_id, None), kind)
            self.disks.unmount(control)
            # Nothing of the workspace runs, so nothing changes the tree under the removal,
            # whose walk follows no link (shutil.rmtree's fd-based walk).
            _remove_tree(control)
        with self._lock:
            self._locks.pop(session_id, None)

    def hibernate(self, session_id: str) -> None:
        session_id = self._workspace(session_id)
        control = self.control(session_id)
        with self._session(session_id):
            if not (control / CONFIG).exists():
                raise NotFound("Workspace not found")
            (control / HIBERNATED).touch()  # first: no exec brings it back meanwhile
            self._release(session_id, self._runtimes.pop(session_id, None))
        # its disk stays mounted: the log is read from it

    def wake(self, session_id: str) -> WorkspaceInfo:
        wid = self._workspace(session_id)
        control = self.control(wid)
        with self._session(wid):
            if not (control / CONFIG).exists():
                raise NotFound("Workspace not found")
            (control / HIBERNATED).unlink(missing_ok=True)
            self._up(wid)
        return self._info(session_id)

    def exec(self, session_id: str, command: str, timeout: float) -> ExecResult:
        session_id = self._workspace(session_id)
        runtime = self._runtimes.get(session_id)
        if runtime is None or runtime.proc.poll() is not None:
            # Not up: the agent restarted (its runtimes died with it), or the workspace is
            # hibernating or going; only the first brings it back.
            with self._session(session_id):
                runtime = self._up(session_id)
        channel = runtime.exec
        try:
            body = channel.call({"command": command, "timeout": timeout}, timeout + 10)
        except (OSError, ValueError) as exc:
            raise Unavailable(f"Workspace runtime did not answer: {exc}") from exc
        if isinstance(body, dict) and "detail" in body:
            raise Unavailable(f"Workspace runtime refused the command: {body['detail']}")
        try:
            return ExecResult.model_validate(body)
        except ValueError as exc:  # the runtime is the workspace's: its answer may be anything
            raise Unavailable("Workspace runtime answered nonsense") from exc

    def activity(self, session_id: str) -> WorkspaceActivity | None:
        # Only a runtime that is up is asked: none is started for the question.
        runtime = self._runtimes.get(self._workspace(session_id))
        if runtime is None or runtime.proc.poll() is not None:
            return None
        try:
            status, body = runtime.http.request("GET", "/activity", timeout=ACTIVITY_WAIT)
        except (OSError, http.client.HTTPException, ValueError):
            return None
        return read_activity(body) if status == 200 else None

    def logs(self, session_id: str, tail: int) -> list[str]:
        # Read from the home, not asked of the runtime: a hibernated workspace has no runtime.
        session_id = self._workspace(session_id)
        with self._session(session_id):
            self._mount(session_id, self._config(session_id))
        return read_tail(self.workdir(session_id), tail)

    def close(self) -> None:
        self._stopping.set()
        with self._lock:
            self.closed = True  # from here no runtime starts (`_up`): one starting finishes first
            unclaimed = [w for ready in self._ready.values() for w in ready]
            self._ready.clear()
            self._refill.notify_all()
        if self._filler is not None:  # it stops what it is starting, seeing us closed
            self._filler.join(_START_WAIT + 5)
        for wid in unclaimed:  # never a session's: nothing of them is kept
            self._stop(wid)
        for control in self.root.iterdir():  # each is mounted again when next used
            with self._session(control.name):
                if control.name in self._runtimes:
                    self._release(control.name, self._runtimes.pop(control.name))
                self.disks.unmount(control)
        self.groups.close()
        with contextlib.suppress(OSError):  # kept while another process's runtimes use it
            self.sockets.rmdir()

    # -- the runtime process -----------------------------------------------------------------

    def _session(self, session_id: str) -> threading.RLock:
        """The lock of one workspace's lifecycle: its starts, stops and restarts are one at a
        time, while other workspaces' go on. (Reentrant: a session's stop holds it while
        stopping the workspace, which may be the session's own.)"""
        with self._lock:
            return self._locks.setdefault(session_id, threading.RLock())

    def _up(self, session_id: str) -> _Runtime:
        """The runtime, started if it is not up (the session's lock held). A workspace whose
        runtime died with a previous agent comes back with its home intact."""
        runtime = self._runtimes.get(session_id)
        if runtime is not None and runtime.proc.poll() is None:
            return runtime
        if self.closed:
            raise Unavailable("This agent is stopping")
        control = self.control(session_id)
        if not (control / CONFIG).exists():
            raise NotFound("Workspace not found")
        if (control / HIBERNATED).exists():
            raise NotFound("Workspace is hibernated")
        if runtime is not None:  # died: its network and leftovers go first
            self._release(session_id, self._runtimes.pop(session_id))
        # Bubblewrap itself failing to set a sandbox up can be the kernel's passing refusal
        # (CI once saw "loopback: Failed RTM_NEWADDR: No child processes" on a busy machine):
        # a few tries before the session fails.
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_SandboxFailed),
            stop=tenacity.stop_after_attempt(3),
            wait=tenacity.wait_exponential(multiplier=0.1),
            before_sleep=lambda state: log.warning("sandbox of %s: %s; again", session_id,
                                                   state.outcome and state.outcome.exception()),
            reraise=True,
        )  # fmt: skip
        return retrying(self._spawn, session_id)

    def _listen(self, path: Path) -> socket.socket:
        path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        # A burst of callers queues instead of being refused (a Unix socket's connect does
        # not wait for room in the backlog).
        sock.listen(socket.SOMAXCONN)
        return sock

    def _spawn(self, session_id: str) -> _Runtime:
        home = self.workdir(session_id)
        config = self._config(session_id)
        self._mount(session_id, config)
        token = auth.token_for(self.secret, self._serves(session_id))
        kind = self.kind(session_id, config)
        inside = sandbox.INSIDE_HOME if kind != "none" else str(home)
        env = sandbox.clean_env({"HOME": inside}, config["env"])
        env[auth.ENV] = token
        if config["main"]:
            env["TETHER_MAIN_COMMAND"] = config["main"]
        command = [sys.executable, "-I", "-m", "tether.runtime", "--home", inside,
                   "--log-file", f"{inside}/{RUNTIME_LOG}"]  # fmt: skip
        if kind == "gvisor":  # its environment goes in the bundle
            proc, egress, first = self._gvisor(session_id, config, command, env)
        else:
            # The environment goes to the runtime through a pipe: the template's variables
            # (LD_PRELOAD, say) must not reach the launchers, which may run as root.
            listen = self._listen(self.socket_path(session_id))
            listen_exec = self._listen(self.socket_path(session_id, EXEC))
            env_fd = _data_fd(json.dumps(env).encode())
            fds = (listen.fileno(), listen_exec.fileno(), env_fd)
            command += ["--socket-fd", str(fds[0]), "--exec-socket-fd", str(fds[1])]
            command += ["--env-fd", str(env_fd)]
            try:
                if kind == "none":
                    proc = _popen(command, _LAUNCHER_ENV, fds, cwd=home)
                    egress, first = None, None
                else:
                    proc, egress, first = self._sandboxed(session_id, config, command, fds)
            finally:
                listen.close()  # the runtime holds them now
                listen_exec.close()
                os.close(env_fd)
        runtime = _Runtime(
            proc,
            UnixHTTPClient(str(self.socket_path(session_id)), token),
            UnixJsonClient(str(self.socket_path(session_id, EXEC)), token),
            egress,
            first,
        )
        try:
            self._wait_up(runtime, home)
        except BaseException:
            self._release(session_id, runtime)
            raise
        self._runtimes[session_id] = runtime
        return runtime

    def _gvisor(
        self, session_id: str, config: dict[str, Any], command: list[str], env: dict[str, str]
    ) -> tuple[subprocess.Popen[bytes], None, int]:
        """Starts runsc held at a gate until its process is in the workspace's group (its
        sandbox's host processes are then too), dying with the agent."""
        if config["network"] == "egress":
            raise Unavailable("Egress is not available for gVisor workspaces here (network: none)")
        uid = sandbox.host_uid(session_id)
        assert uid is not None  # gvisor needs root
        key = self._key(session_id)
        sockets = self._run_dir(session_id)
        shutil.rmtree(sockets, ignore_errors=True)  # a dead runtime's sockets stay behind
        sockets.mkdir(mode=0o700)
        os.chown(sockets, uid, uid, follow_symlinks=False)
        command += ["--socket", f"{gvisor.SOCKETS}/runtime.sock"]
        command += ["--exec-socket", f"{gvisor.SOCKETS}/runtime{EXEC}"]
        limits = Limits.of(config["resources"])
        where = self.control(session_id) / "bundle"
        gvisor.bundle(
            where, command=command, env=env, uid=uid, home=self.workdir(session_id),
            bucket=self.bucket(session_id), sockets=sockets,
            runtime=sandbox.runtime_paths(self.home), limits=limits,
        )  # fmt: skip
        state = self.home / "runsc"
        state.mkdir(mode=0o700, exist_ok=True)
        container = f"tether-{key}"
        gvisor.forget(state, container)  # left by an agent that died
        gate_r, gate_w = os.pipe()
        wait = f'read -r _ <&{gate_r}; exec "$@"'
        gate = ["setpriv", "--pdeathsig=KILL", "bash", "-c", wait, "gate"]
        run = gvisor.runsc(state, "run", f"--bundle={where}", container)
        proc = subprocess.Popen(
            [*gate, *run], pass_fds=(gate_r,), env=_LAUNCHER_ENV,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True, cwd="/",
        )  # fmt: skip
        os.close(gate_r)
        first = os.pidfd_open(proc.pid)
        try:
            self.groups.confine(key, proc.pid, gvisor.host_limits(limits))
            os.write(gate_w, b"go\n")
        except BaseException:
            _kill_first(first)
            os.close(first)
            proc.wait()
            raise
        finally:
            os.close(gate_w)
        return proc, None, first

    def _sandboxed(
        self,
        session_id: str,
        config: dict[str, Any],
        command: list[str],
        fds: tuple[int, ...],
    ) -> tuple[subprocess.Popen[bytes], network.Egress | None, int]:
        """Starts the sandbox held at its gate, confines its first process, gives it its
        network, then lets the runtime start."""
        limits = Limits.of(config["resources"])
        egress_wanted = config["network"] == "egress"
        info_r, info_w = os.pipe()
        block_r, block_w = os.pipe()
        resolv = _data_fd(network.RESOLV_CONF) if egress_wanted else None
        plan = sandbox.Plan(
            home=self.workdir(session_id),
            bucket=self.bucket(session_id),
            hidden=self.home,
            uid=sandbox.host_uid(session_id),
            tmp_size=limits.tmp,
            seccomp_fd=seccomp.program_fd(),
            info_fd=info_w,
            block_fd=block_r,
            resolv_fd=resolv,
        )
        options, runs = sandbox.bubblewrap(plan, command)
        args = _data_fd(b"".join(o.encode() + b"\0" for o in options))
        passed = [args, plan.seccomp_fd, info_w, block_r, *fds]
        passed += [resolv] if resolv is not None else []
        try:
            argv = ["bwrap", "--args", str(args), "--", *runs]
            proc = _popen(argv, _LAUNCHER_ENV, tuple(passed), cwd=Path("/"))
        finally:
            for fd in (args, plan.seccomp_fd, info_w, block_r, resolv):
                if fd is not None:
                    os.close(fd)
        egress, first = None, None
        try:
            pid = _first_pid(info_r, proc)
            # Held by a descriptor, so it is signalled at the end whatever became of the pid.
            first = os.pidfd_open(pid)
            self.groups.confine(self._key(session_id), pid, limits)
            if egress_wanted:
                egress = network.attach(pid, plan.uid is None, network.host_addresses())
                self.groups.join(self._key(session_id), egress.proc.pid)
            os.write(block_w, b"go")
        except BaseException as exc:
            if isinstance(exc, OSError):  # the pid is gone: did bubblewrap fail after all?
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=1)
            exited = proc.poll() is not None
            if first is not None:  # before the gate opens (below): it must not run on
                _kill_first(first)
                os.close(first)
            proc.kill()
            proc.wait()
            if egress is not None:
                egress.close()
            self.groups.release(self._key(session_id))
            if exited and isinstance(exc, OSError):
                raise _SandboxFailed(f"The workspace sandbox did not start: {_said(proc)}") from exc
            raise
        finally:
            os.close(info_r)
            os.close(block_w)
        return proc, egress, first

    def _wait_up(self, runtime: _Runtime, home: Path) -> None:
        """Until the runtime answers on its exec channel. The sockets listen already, so the
        request waits in the backlog while the runtime starts."""
        deadline = time.monotonic() + _START_WAIT
        while time.monotonic() < deadline:
            if runtime.proc.poll() is not None:
                code, said = runtime.proc.returncode, _said(runtime.proc)
                if said == "no output":  # it got as far as its own log, in the home
                    said = " | ".join(read_tail(home, 5, RUNTIME_LOG)) or said
                if said.startswith("bwrap: "):  # it never ran the runtime
                    raise _SandboxFailed(f"The workspace sandbox did not start: {said}")
                raise Unavailable(f"Workspace runtime exited with {code}: {said}")
            try:
                # The exec channel: up before the runtime's HTTP server (`runtime.boot`).
                body = runtime.exec.call({"ping": True}, 1)
                if body == {"status": "ok"}:
                    assert runtime.proc.stderr is not None
                    runtime.proc.stderr.close()  # the runtime writes to its log file now
                    return
                raise Unavailable(f"Workspace runtime answered {body}")
            except (OSError, ValueError):
                time.sleep(0.01)
        raise Unavailable(f"Workspace runtime did not start within {_START_WAIT:g}s")

    def _release(self, session_id: str, runtime: _Runtime | None, kind: str = "") -> None:
        """Ends the runtime, then whatever of the workspace is left (its group's processes,
        its network, its sockets)."""
        if runtime is not None:
            self._end(runtime)
        key, kind = self._key(session_id), kind or self.kind(session_id)
        if kind == "gvisor":  # its sockets are on its disk, which goes with it
            gvisor.forget(self.home / "runsc", f"tether-{key}")
        else:
            for suffix in (".sock", EXEC):
                self.socket_path(session_id, suffix, kind).unlink(missing_ok=True)
        self.groups.release(key)

    @staticmethod
    def _end(runtime: _Runtime) -> None:
        proc = runtime.proc
        if proc.poll() is None:
            # Asked before it is signalled: SIGTERM to bubblewrap ends the sandbox at once,
            # while the runtime first stops the main process cleanly.
            with contextlib.suppress(OSError, http.client.HTTPException, subprocess.TimeoutExpired):
                runtime.http.request("POST", "/shutdown", timeout=1)
                proc.wait(timeout=3)
        runtime.close()
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            except ProcessLookupError:
                pass
        if proc.stderr is not None:
            proc.stderr.close()


def _popen(
    command: list[str], env: dict[str, str], fds: tuple[int, ...], cwd: Path
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        pass_fds=fds,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,  # bubblewrap's errors, and the runtime's until its log opens
        start_new_session=True,
    )


def _first_pid(info_fd: int, proc: subprocess.Popen[bytes]) -> int:
    """The sandbox's first process, as bubblewrap reports it (JSON on the info descriptor)."""
    data = b""
    while chunk := os.read(info_fd, 4096):
        data += chunk
        with contextlib.suppress(ValueError):
            return int(json.loads(data)["child-pid"])
    proc.wait()
    raise _SandboxFailed(f"The workspace sandbox did not start: {_said(proc)}")


class _SandboxFailed(Unavailable):
    """Bubblewrap could not set the sandbox up: nothing of the workspace ran."""


def _said(proc: subprocess.Popen[bytes]) -> str:
    """The last words of a process that ended (its stderr, bounded)."""
    if proc.stderr is None or proc.stderr.closed:
        return "no output"
    os.set_blocking(proc.stderr.fileno(), False)
    try:
        data = proc.stderr.read(4096) or b""
    except OSError:
        data = b""
    return data.decode(errors="replace").strip() or "no output"


def _kill_first(pidfd: int) -> None:
    """SIGKILL to the sandbox's first process: its pid namespace (and all in it) ends with it.
    Its parent is the agent's child (as root, the outer bubblewrap), whose death alone would
    not reach it while it still waits at the gate."""
    with contextlib.suppress(ProcessLookupError):
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)


def _data_fd(data: bytes) -> int:
    read, write = os.pipe()
    os.write(write, data)
    os.close(write)
    return read


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _remove_tree(path: Path) -> None:
    """Removes a workspace's directory once nothing of the workspace runs. An ordinary user
    has no override for a directory the workspace made 0000, so permissions come back first;
    no link is followed on the way (os.walk does not descend into them, rmtree unlinks them)."""
    if os.geteuid() != 0:
        for top, dirs, _ in os.walk(path):
            for name in dirs:
                inner = os.path.join(top, name)
                if not os.path.islink(inner):
                    with contextlib.suppress(OSError):
                        os.chmod(inner, 0o700)
    shutil.rmtree(path, ignore_errors=True)
