"""Per-session storage on Cloud Storage: one bucket, one prefix per session
(`gs://<bucket>/sessions/<session_id>/`).

One bucket (made by terraform) rather than one per session: bucket creation is rate limited,
needs a project-wide permission the agent should not hold, and names are global. A session's
prefix is mounted as its workspace's home, so what a hibernated workspace keeps lives here.

A workspace reaches its own prefix and nothing else of the bucket: the prefix is a managed
folder whose IAM policy names the session's identity alone (`grant`). A managed folder rather
than an IAM condition on the bucket: a condition on object names cannot scope listing (a list
is checked against the bucket), so it would show every session's file names, and each grant
would rewrite the one bucket policy all sessions share.

google.cloud is imported lazily so that importing tether.provision never loads it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING

from tether.errors import Forbidden, Invalid, NotFound, Unavailable

if TYPE_CHECKING:
    from google.cloud.storage import Bucket, Client
    from google.cloud.storage_control_v2 import StorageControlClient

# A session id becomes part of an object name: no separators, no dot segments.
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# The client retries transient errors for up to 120 s by default; an agent's command must not.
_CALL_TIMEOUT = 30.0
# What a session's identity holds on its managed folder: its objects (read, write, list,
# delete), and no IAM or folder permission.
SESSION_ROLE = "roles/storage.objectUser"


@contextmanager
def _errors(what: str) -> Iterator[None]:
    """Translate backend failures into the one error tree."""
    from google.api_core import exceptions as gexc
    from google.auth.exceptions import GoogleAuthError

    try:
        yield
    except gexc.NotFound as exc:
        raise Unavailable(f"storage bucket missing during {what}: {exc.message}") from exc
    except (gexc.Forbidden, gexc.Unauthorized) as exc:
        raise Forbidden(f"storage denied {what}: {exc.message}") from exc
    except (gexc.GoogleAPIError, GoogleAuthError, OSError) as exc:
        raise Unavailable(f"storage unavailable during {what}: {exc}") from exc


class SessionStorage:
    """Each session's prefix in one bucket. Every call is idempotent."""

    def __init__(
        self,
        bucket: str,
        *,
        project: str | None = None,
        client: Client | None = None,
        control: StorageControlClient | None = None,
        root: str = "sessions",
    ) -> None:
        self.bucket_name = bucket
        self.project = project
        self.root = root.strip("/")
        self._lock = threading.Lock()
        self._client = client
        self._control = control

    def _bucket(self) -> Bucket:
        with self._lock:
            if self._client is None:
                from google.cloud import storage

                self._client = storage.Client(project=self.project)
            return self._client.bucket(self.bucket_name)

    def _folders(self) -> StorageControlClient:
        with self._lock:
            if self._control is None:
                from google.cloud import storage_control_v2

                self._control = storage_control_v2.StorageControlClient()
            return self._control

    def folder(self, session_id: str) -> str:
        """The resource name of the session's managed folder (its prefix)."""
        return f"projects/_/buckets/{self.bucket_name}/managedFolders/{self.prefix(session_id)}"

    def grant(self, session_id: str, member: str) -> None:
        """Makes the session's prefix a managed folder whose policy is `member` (an IAM
        principal, `serviceAccount:...`) holding SESSION_ROLE, and nothing else: the policy is
        set whole, since the folder belongs to this session alone."""
        from google.api_core.exceptions import AlreadyExists
        from google.cloud import storage_control_v2
        from google.iam.v1 import policy_pb2

        control = self._folders()
        with _errors("grant"):
            # Already there: granted before (a duplicate start); the policy is set again.
            with suppress(AlreadyExists):
                control.create_managed_folder(
                    parent=f"projects/_/buckets/{self.bucket_name}",
                    managed_folder=storage_control_v2.ManagedFolder(),
                    managed_folder_id=self.prefix(session_id),
                    timeout=_CALL_TIMEOUT,
                )
            policy = policy_pb2.Policy(
                bindings=[policy_pb2.Binding(role=SESSION_ROLE, members=[member])]
            )
            control.set_iam_policy(
                request={"resource": self.folder(session_id), "policy": policy},
                timeout=_CALL_TIMEOUT,
            )

    def revoke(self, session_id: str) -> None:
        """Removes the session's managed folder and so its policy (its objects are `delete`'s);
        one already gone is success."""
        from google.api_core.exceptions import NotFound as Missing

        with _errors("revoke"), suppress(Missing):
            self._folders().delete_managed_folder(
                request={"name": self.folder(session_id), "allow_non_empty": True},
                timeout=_CALL_TIMEOUT,
            )

    def prefix(self, session_id: str) -> str:
        """The object-name prefix of a session, ending in "/"."""
        if not _SAFE_ID.fullmatch(session_id) or ".." in session_id:
            raise Invalid(f"not a valid session id for storage: {session_id!r}", field="session_id")
        return f"{self.root}/{session_id}/"

    def name(self, session_id: str) -> str:
        """Where the session's files are, as a `gs://` URL (its `details.bucket_name`)."""
        return f"gs://{self.bucket_name}/{self.prefix(session_id)}"

    def ensure(self, session_id: str) -> str:
        """Makes the session's prefix exist and returns its name. The prefix is marked by an
        empty object named like it: Cloud Storage FUSE (how a workspace mounts it) shows only
        directories that have one."""
        prefix = self.prefix(session_id)
        with _errors("ensure"):
            self._bucket().blob(prefix).upload_from_string(
                b"", content_type="application/x-directory", timeout=_CALL_TIMEOUT
            )
        return self.name(session_id)

    def delete(self, session_id: str) -> int:
        """Removes every object under the session's prefix; returns how many went. A prefix
        that is already gone is success."""
        from google.api_core.exceptions import NotFound as Missing

        prefix = self.prefix(session_id)
        bucket = self._bucket()
        removed = 0
        with _errors("delete"):
            for blob in bucket.list_blobs(prefix=prefix, timeout=_CALL_TIMEOUT):
                try:
                    blob.delete(timeout=_CALL_TIMEOUT)
                    removed += 1
                except Missing:  # removed concurrently (a duplicate stop): already done
                    pass
        return removed

    def read_tail(self, session_id: str, path: str, max_bytes: int) -> bytes:
        """The whole lines within the last `max_bytes` of a file below the session's prefix
        (`NotFound` if absent)."""
        from google.api_core.exceptions import NotFound as Missing

        blob = self._bucket().blob(self.prefix(session_id) + path.lstrip("/"))
        with _errors("read"):
            try:
                blob.reload(timeout=_CALL_TIMEOUT)
                size = blob.size or 0
                if size == 0:
                    return b""
                # One byte more than asked: if it ends a line, the first line read is whole.
                start = max(0, size - max_bytes - 1)
                data: bytes = blob.download_as_bytes(start=start, timeout=_CALL_TIMEOUT)
            except Missing:
                raise NotFound(f"no {path} in the session's storage") from None
        return data.partition(b"\n")[2] if start else data
