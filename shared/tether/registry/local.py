"""Artifacts in a local directory: `<root>/sha256/<hex>`, for the embedded stack."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from tether.core.images import check_digest, verify_blob
from tether.errors import NotFound, Unavailable


class DirectoryArtifacts:
    """Each blob is written to a temporary file beside its final name and then renamed over
    it, so a reader sees it whole or not at all; files 0600, directories 0700."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, digest: str) -> Path:
        return self.root / "sha256" / check_digest(digest)[7:]

    def _dir(self) -> Path:
        folder = self.root / "sha256"
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            folder.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise Unavailable(f"artifact directory {folder} unusable: {exc.strerror}") from exc
        return folder

    def put(self, digest: str, data: bytes) -> None:
        hexdigest = verify_blob(digest, data)
        folder = self._dir()
        final = folder / hexdigest
        if final.exists():
            return  # the same digest is the same bytes: never rewritten
        fd, temp = tempfile.mkstemp(prefix=".incoming-", dir=folder)  # mode 0600
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise Unavailable(f"artifact directory {folder} unusable: {exc.strerror}") from exc

    def get(self, digest: str) -> bytes:
        path = self._path(digest)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"No artifact {digest}", code="ARTIFACT_NOT_FOUND") from None
        except OSError as exc:
            raise Unavailable(f"artifact directory unusable: {exc.strerror}") from exc

    def exists(self, digest: str) -> bool:
        path = self._path(digest)
        try:
            return stat.S_ISREG(path.stat().st_mode)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise Unavailable(f"artifact directory unusable: {exc.strerror}") from exc

    def ping(self) -> None:
        folder = self._dir()
        if not os.access(folder, os.W_OK | os.X_OK):
            raise Unavailable(f"artifact directory {folder} is not writable")
