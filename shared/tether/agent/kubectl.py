"""A cluster agent's kubectl: the real binary, run with an argv list (never a shell), its
output capped, killed at its timeout.

The control plane checked the command against the policy; the agent checks it again, so a
command that reached the bus some other way still runs only if the policy allows it. The
cluster's RBAC (a read-only ServiceAccount, infra/k8s/) is the line after that.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tether.core import kubectl_policy

STDERR_CAP = 16 * 1024
EARLY = 0.5  # kubectl is stopped this long before the command's timeout (see service.debug)
# What kubectl sees of the agent's environment: how to reach the API server and nothing else
# (no cloud credentials, no settings with secrets in them).
_PASSED = ("PATH", "KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "LANG")


class _Capped:
    """Reads a pipe to its end, keeping the first `cap` bytes; `over` is set past them (and
    `over` may be an event shared with other things worth waking for)."""

    def __init__(self, pipe: IO[bytes], cap: int, over: threading.Event | None = None) -> None:
        self.pipe, self.cap = pipe, cap
        self.chunks: list[bytes] = []
        self.size = 0
        self.past = False
        self.over = over or threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while chunk := self.pipe.read1(65536):  # type: ignore[attr-defined]
            room = self.cap - self.size
            if room > 0:
                self.chunks.append(chunk[:room])
                self.size += min(room, len(chunk))
            if len(chunk) > room:
                self.past = True  # the rest is drained, not kept
                self.over.set()

    def text(self) -> str:
        self.thread.join()
        return b"".join(self.chunks).decode("utf-8", "replace")


@dataclass
class Kubectl:
    binary: str = "kubectl"
    cache_dir: Path | None = None  # its discovery cache (the agent's root filesystem is read-only)
    kubeconfig: Path | None = None  # None: $KUBECONFIG, or in-cluster (its ServiceAccount)

    def run(self, argv: list[str], timeout: float, cap: int) -> dict[str, Any]:
        """Run `kubectl <argv>`: Kubently's result fields (`output`, `error`, `exit_code`,
        `execution_time_ms`, `timed_out`, `truncated`). A refused command raises the policy's
        error; a command that cannot start reports it as its error."""
        checked = kubectl_policy.parse(argv)
        env = {k: v for k, v in os.environ.items() if k in _PASSED}
        if self.cache_dir is not None:
            env["KUBECACHEDIR"] = str(self.cache_dir)
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.kubeconfig)
        started = time.monotonic()
        try:
            process = subprocess.Popen(
                [self.binary, *checked.argv],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,  # its own process group: killed whole
            )
        except OSError as exc:
            return {"output": "", "error": f"kubectl could not start: {exc.strerror}",
                    "exit_code": 127, "execution_time_ms": 0, "timed_out": False,
                    "truncated": False}  # fmt: skip
        assert process.stdout is not None and process.stderr is not None
        # Woken by whichever comes first: kubectl's exit, or its output passing the cap (the
        # rest would be thrown away: it is stopped there); else the deadline.
        wake = threading.Event()
        out = _Capped(process.stdout, cap, wake)
        err = _Capped(process.stderr, STDERR_CAP)

        def exited() -> None:
            process.wait()
            wake.set()

        threading.Thread(target=exited, daemon=True).start()
        wake.wait(max(started + max(timeout - EARLY, EARLY) - time.monotonic(), 0))
        timed_out = not wake.is_set()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        output, error = out.text(), err.text()
        truncated = out.past
        if truncated:
            output += f"\n[output truncated at {cap} bytes]"
        return {
            "output": output,
            "error": error or None,
            "exit_code": process.returncode,
            "execution_time_ms": round((time.monotonic() - started) * 1000),
            "timed_out": timed_out,
            "truncated": truncated,
        }
