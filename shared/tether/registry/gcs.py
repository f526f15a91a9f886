"""Artifacts in a Cloud Storage bucket: `gs://<bucket>/<prefix>/sha256/<hex>`.

google.cloud is imported lazily so that importing this module loads no cloud library. Blobs are
uploaded with `if_generation_match=0`: the object is made only if none exists, so a stored blob
is never rewritten, and an upload is atomic (an object is visible whole once it is finalized).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from tether.core.images import check_digest, verify_blob
from tether.errors import NotFound, TetherError, Unavailable

# The client's default retry runs for up to 120 s; a request path must give up sooner.
_DEADLINE = 20.0
_TIMEOUT = 30.0


class GcsArtifacts:
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        project: str | None = None,
        client: Any = None,
        deadline: float = _DEADLINE,
    ) -> None:
        self.bucket_name = bucket
        self.prefix = prefix.strip("/")
        self.project = project
        self.deadline = deadline
        self._client = client
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        return f"gs://{self.bucket_name}/{self.prefix}".rstrip("/")

    def _name(self, hexdigest: str) -> str:
        return "/".join(p for p in (self.prefix, "sha256", hexdigest) if p)

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Backend failures as the one error tree; messages name the bucket, never a
        credential (only an error's class and status code are kept)."""
        from google.api_core import exceptions as gexc
        from google.auth.exceptions import GoogleAuthError

        try:
            yield
        except TetherError:
            raise
        except gexc.NotFound as exc:
            raise Unavailable(f"Cloud Storage {self.where}: bucket missing during {what}") from exc
        except gexc.GoogleAPIError as exc:
            code = getattr(exc, "code", None)
            shown = f"HTTP {code}" if code else type(exc).__name__
            raise Unavailable(
                f"Cloud Storage {self.where} unavailable during {what} ({shown})"
            ) from exc
        except (GoogleAuthError, OSError) as exc:
            raise Unavailable(
                f"Cloud Storage {self.where} unavailable during {what} ({type(exc).__name__})"
            ) from exc

    def _retry(self) -> Any:
        from google.cloud.storage.retry import DEFAULT_RETRY

        return DEFAULT_RETRY.with_timeout(self.deadline)

    def _bucket(self) -> Any:
        with self._lock:
            if self._client is None:
                from google.cloud import storage

                with self._errors("connect"):
                    self._client = storage.Client(project=self.project)
            return self._client.bucket(self.bucket_name)

    def put(self, digest: str, data: bytes) -> None:
        from google.api_core.exceptions import PreconditionFailed

        hexdigest = verify_blob(digest, data)
        with self._errors("put"):
            blob = self._bucket().blob(self._name(hexdigest))
            # Looked for first: the registry's writer may create objects but not replace them,
            # and a refused replacement need not read as the precondition it also fails.
            if blob.exists(timeout=_TIMEOUT, retry=self._retry()):
                return
            # PreconditionFailed: made meanwhile, and the same digest is the same bytes.
            with suppress(PreconditionFailed):
                blob.upload_from_string(
                    data,
                    content_type="application/octet-stream",
                    if_generation_match=0,
                    timeout=_TIMEOUT,
                    retry=self._retry(),
                )

    def get(self, digest: str) -> bytes:
        from google.api_core.exceptions import NotFound as Missing

        hexdigest = check_digest(digest)[7:]
        with self._errors("get"):
            blob = self._bucket().blob(self._name(hexdigest))
            try:
                data: bytes = blob.download_as_bytes(timeout=_TIMEOUT, retry=self._retry())
            except Missing:
                raise NotFound(f"No artifact {digest}", code="ARTIFACT_NOT_FOUND") from None
            return data

    def exists(self, digest: str) -> bool:
        hexdigest = check_digest(digest)[7:]
        with self._errors("exists"):
            blob = self._bucket().blob(self._name(hexdigest))
            return bool(blob.exists(timeout=_TIMEOUT, retry=self._retry()))

    def ping(self) -> None:
        # A listing needs only object read access (no bucket metadata permission) and tells a
        # missing bucket (404) from a missing object.
        with self._errors("ping"):
            bucket = self._bucket()
            blobs = bucket.list_blobs(
                prefix=self._name(""), max_results=1, timeout=_TIMEOUT, retry=self._retry()
            )
            list(blobs)
