"""Workspaces as sandboxed local processes.

A workspace is a home directory plus the workspace runtime (`tether.runtime`) running inside
bubblewrap when it is installed (a plain process otherwise), listening on a Unix socket. The
sandbox sees the host read-only, its own home, its storage directory and a private /tmp; the
rest of TETHER_HOME (the database, other workspaces) is hidden from it. A template's `command`
is the workspace's main process, which the runtime starts and stops; its output is the
session log, a file in the home, so it can be read while the workspace hibernates.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import tether
from tether.core.models import ExecResult, WorkspaceInfo, WorkspaceSpec
from tether.errors import NotFound, Unavailable
from tether.provision.uds import UnixHTTPClient, UnixJsonClient
from tether.runtime.session_log import open_in_home
from tether.runtime.session_log import tail as read_tail

log = logging.getLogger(__name__)

HIBERNATED = ".tether-hibernated"
ENV = ".tether-env"
MAIN = ".tether-main"  # the template's command, kept for wake and for a restarted agent
EXEC = ".exec"  # suffix of a runtime's exec channel socket


@dataclass
class _Runtime:
    """A workspace's runtime process and its two ways in: HTTP for control, the exec channel
    for commands."""

    proc: subprocess.Popen[bytes]
    http: UnixHTTPClient
    exec: UnixJsonClient

    def close(self) -> None:
        self.http.close()
        self.exec.close()


class LocalProvisioner:
    platform = "local"

    def __init__(self, home: Path, sandbox: bool | None = None) -> None:
        self.home = Path(home).resolve()
        self.root = self.home / "workspaces"
        self.buckets = self.home / "buckets"
        self.sandbox = shutil.which("bwrap") is not None if sandbox is None else sandbox
        # Unix socket paths are limited to ~108 bytes, so they live in a short private dir.
        digest = hashlib.sha256(str(self.home).encode()).hexdigest()[:12]
        self.sockets = Path(tempfile.gettempdir()) / f"tether-{os.getuid()}-{digest}"
        self.sockets.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._runtimes: dict[str, _Runtime] = {}
        self._lock = threading.Lock()

    # -- paths -------------------------------------------------------------------------------

    def workdir(self, session_id: str) -> Path:
        if "/" in session_id or session_id.startswith("."):
            raise NotFound("Workspace not found")
        return self.root / session_id

    def bucket(self, session_id: str) -> Path:
        return self.buckets / f"tether-{session_id}"

    def socket(self, session_id: str, suffix: str = ".sock") -> Path:
        return self.sockets / (hashlib.sha256(session_id.encode()).hexdigest()[:16] + suffix)

    def _info(self, session_id: str) -> WorkspaceInfo:
        return WorkspaceInfo(
            url=f"http+unix://{self.socket(session_id)}",
            details={
                "service_name": f"tether-{session_id}",
                "bucket_name": str(self.bucket(session_id)),
                "workdir": str(self.workdir(session_id)),
                "sandbox": "bubblewrap" if self.sandbox else "none",
            },
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, spec: WorkspaceSpec) -> WorkspaceInfo:
        sid = spec.session_id
        work, bucket = self.workdir(sid), self.bucket(sid)
        work.mkdir(parents=True, exist_ok=True)
        bucket.mkdir(parents=True, exist_ok=True)
        link = work / "bucket"
        if not link.is_symlink():
            link.symlink_to(bucket)
        (work / HIBERNATED).unlink(missing_ok=True)
        env = dict(spec.template.env) | dict(spec.env)
        _write_fresh(work / ENV, "".join(f"{k}={v}\n" for k, v in env.items()))
        if spec.template.command:
            _write_fresh(work / MAIN, spec.template.command)
        else:
            (work / MAIN).unlink(missing_ok=True)
        self._ensure_runtime(sid)
        return self._info(sid)

    def stop(self, session_id: str) -> None:
        self._kill(session_id)
        shutil.rmtree(self.workdir(session_id), ignore_errors=True)
        shutil.rmtree(self.bucket(session_id), ignore_errors=True)

    def hibernate(self, session_id: str) -> None:
        work = self.workdir(session_id)
        if not work.exists():
            raise NotFound("Workspace not found")
        self._kill(session_id)
        (work / HIBERNATED).touch()

    def wake(self, session_id: str) -> WorkspaceInfo:
        work = self.workdir(session_id)
        if not work.exists():
            raise NotFound("Workspace not found")
        (work / HIBERNATED).unlink(missing_ok=True)
        self._ensure_runtime(session_id)
        return self._info(session_id)

    def exec(self, session_id: str, command: str, timeout: float) -> ExecResult:
        channel = self._ensure_runtime(session_id).exec
        try:
            body = channel.call({"command": command, "timeout": timeout}, timeout + 10)
        except (OSError, ValueError) as exc:
            raise Unavailable(f"Workspace runtime did not answer: {exc}") from exc
        if "detail" in body:
            raise Unavailable(f"Workspace runtime refused the command: {body['detail']}")
        return ExecResult.model_validate(body)

    def logs(self, session_id: str, tail: int) -> list[str]:
        # Read from the home, not asked of the runtime: a hibernated workspace has no runtime.
        work = self.workdir(session_id)
        if not work.exists():
            raise NotFound("Workspace not found")
        return read_tail(work, tail)

    def close(self) -> None:
        for sid in list(self._runtimes):
            self._kill(sid)
        with contextlib.suppress(OSError):  # kept while another process's runtimes use it
            self.sockets.rmdir()

    # -- the runtime process -----------------------------------------------------------------

    def _ensure_runtime(self, session_id: str) -> _Runtime:
        """The runtime, (re)starting the runtime if it is not up. A workspace whose
        runtime died with a previous agent comes back with its home intact."""
        runtime = self._runtimes.get(session_id)
        if runtime is not None and runtime.proc.poll() is None:
            return runtime  # up, so neither gone nor hibernated (both end the runtime first)
        work = self.workdir(session_id)
        if not work.exists():
            raise NotFound("Workspace not found")
        if (work / HIBERNATED).exists():
            raise NotFound("Workspace is hibernated")
        with self._lock:
            runtime = self._runtimes.get(session_id)
            if runtime is not None and runtime.proc.poll() is None:
                return runtime
            return self._spawn(session_id)

    def _command(self, session_id: str) -> list[str]:
        work, sock = self.workdir(session_id), self.socket(session_id)
        runtime = [sys.executable, "-m", "tether.runtime", "--home", str(work)]
        runtime += ["--socket", str(sock), "--exec-socket", str(self.socket(session_id, EXEC))]
        if (work / MAIN).exists():
            runtime += ["--main-file", str(work / MAIN)]
        if not self.sandbox:
            return runtime
        bucket = self.bucket(session_id)
        tmp = Path(tempfile.gettempdir())
        # The interpreter and the code the runtime needs must stay visible even when they live
        # in /tmp (a checkout or venv there, say) -- but never a directory holding TETHER_HOME.
        needed = {sys.prefix, sys.base_prefix, str(Path(tether.__file__).parent.parent), *sys.path}
        keep = sorted(
            p for p in needed
            if p and Path(p).is_dir() and Path(p).is_relative_to(tmp)
            and not self.home.is_relative_to(p) and not Path(p).is_relative_to(self.home)
        )  # fmt: skip
        return [
            "bwrap",
            "--ro-bind", "/", "/",
            "--dev", "/dev",
            "--proc", "/proc",
            "--tmpfs", "/tmp",
            *(arg for p in keep for arg in ("--ro-bind", p, p)),
            "--tmpfs", str(self.home),  # hide the database and other workspaces
            "--bind", str(work), str(work),
            "--bind", str(bucket), str(bucket),
            "--bind", str(self.sockets), str(self.sockets),
            "--unshare-pid",
            "--unshare-ipc",
            "--die-with-parent",
            "--chdir", str(work),
            "--setenv", "HOME", str(work),
            "--",
            *runtime,
        ]  # fmt: skip

    def _spawn(self, session_id: str) -> _Runtime:
        work, sock = self.workdir(session_id), self.socket(session_id)
        sock.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
        env["HOME"] = str(work)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        try:
            with open_in_home(work, ENV) as f:
                lines = f.read().decode().splitlines()
        except OSError:
            lines = []
        for line in lines:
            key, _, value = line.partition("=")
            env[key] = value
        log_file = (work / ".tether-runtime.log").open("ab")
        proc = subprocess.Popen(
            self._command(session_id),
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )
        log_file.close()
        client = UnixHTTPClient(str(sock))
        channel = UnixJsonClient(str(self.socket(session_id, EXEC)))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise Unavailable(
                    f"Workspace runtime exited with {proc.returncode}; "
                    f"see {work / '.tether-runtime.log'}"
                )
            if sock.exists():
                try:
                    if client.request("GET", "/health", timeout=1)[0] == 200:
                        runtime = self._runtimes[session_id] = _Runtime(proc, client, channel)
                        return runtime
                except (OSError, http.client.HTTPException):
                    pass
            time.sleep(0.02)
        proc.kill()
        raise Unavailable("Workspace runtime did not start within 15s")

    def _kill(self, session_id: str) -> None:
        with self._lock:
            runtime = self._runtimes.pop(session_id, None)
        if runtime is not None:
            self._end(runtime)
        for suffix in (".sock", EXEC):
            self.socket(session_id, suffix).unlink(missing_ok=True)

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
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass


def _write_fresh(path: Path, text: str) -> None:
    """Writes a new file in a workspace's home: never through a symlink the workspace put
    there, which could point at what the sandbox hides."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(text)
