"""Artifacts in an S3 (or S3-compatible) bucket: `s3://<bucket>/<prefix>/sha256/<hex>`.

boto3 is imported lazily so that importing this module loads no cloud library. Uploads ask
`If-None-Match: *`, so a stored blob is never rewritten (where a backend ignores the condition
it rewrites the same bytes); a PUT is atomic in S3 (an object is visible whole or not at all).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tether.core.images import check_digest, verify_blob
from tether.errors import NotFound, TetherError, Unavailable

_MISSING = ("NoSuchKey", "404", "NotFound")
_ALREADY = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


class S3Artifacts:
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        client: Any = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self._client = client
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _key(self, hexdigest: str) -> str:
        return "/".join(p for p in (self.prefix, "sha256", hexdigest) if p)

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Backend failures as the one error tree; messages name the bucket and an error's
        code or class, never a credential."""
        from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

        try:
            yield
        except TetherError:
            raise
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            raise Unavailable(f"S3 {self.where} unavailable during {what} ({code})") from exc
        except (BotoCoreError, OSError) as exc:
            raise Unavailable(
                f"S3 {self.where} unavailable during {what} ({type(exc).__name__})"
            ) from exc

    def _s3(self) -> Any:
        with self._lock:
            if self._client is None:
                import boto3  # type: ignore[import-untyped]
                from botocore.config import Config  # type: ignore[import-untyped]

                config = Config(
                    connect_timeout=5,
                    read_timeout=30,
                    retries={"max_attempts": 3, "mode": "standard"},
                )
                with self._errors("connect"):
                    self._client = boto3.client("s3", endpoint_url=self.endpoint_url, config=config)
            return self._client

    @staticmethod
    def _code(exc: Any) -> str:
        return str(exc.response.get("Error", {}).get("Code", ""))

    def put(self, digest: str, data: bytes) -> None:
        from botocore.exceptions import ClientError  # type: ignore[import-untyped]

        hexdigest = verify_blob(digest, data)
        with self._errors("put"):
            try:
                self._s3().put_object(
                    Bucket=self.bucket,
                    Key=self._key(hexdigest),
                    Body=data,
                    ContentType="application/octet-stream",
                    IfNoneMatch="*",
                )
            except ClientError as exc:
                if self._code(exc) not in _ALREADY:
                    raise
                # already there: the same digest is the same bytes

    def get(self, digest: str) -> bytes:
        from botocore.exceptions import ClientError  # type: ignore[import-untyped]

        hexdigest = check_digest(digest)[7:]
        with self._errors("get"):
            try:
                answer = self._s3().get_object(Bucket=self.bucket, Key=self._key(hexdigest))
            except ClientError as exc:
                if self._code(exc) in _MISSING:
                    raise NotFound(f"No artifact {digest}", code="ARTIFACT_NOT_FOUND") from None
                raise
            data: bytes = answer["Body"].read()
            return data

    def exists(self, digest: str) -> bool:
        from botocore.exceptions import ClientError  # type: ignore[import-untyped]

        hexdigest = check_digest(digest)[7:]
        with self._errors("exists"):
            try:
                self._s3().head_object(Bucket=self.bucket, Key=self._key(hexdigest))
            except ClientError as exc:
                if self._code(exc) in _MISSING:
                    return False
                raise
            return True

    def ping(self) -> None:
        with self._errors("ping"):
            self._s3().head_bucket(Bucket=self.bucket)
