"""`Idempotency-Key` on creates: a request sent again with the same key gets the first one's
answer, never a second object.

The first request with a key claims it (the store's create-if-absent, so of two at once only one
runs), runs, and records its answer for `KEPT`. The same key again, with the same request,
answers what was recorded (waiting for the first if it is still running); with another request
it is refused (422). A claim whose request died with its instance is taken over after `LEASE`.
An answer of 5xx is not kept: the request can be tried again with the same key.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from tether.core.models import utcnow
from tether.core.ports import Store
from tether.errors import Conflict, Invalid, Unprocessable

KIND = "idempotency"
KEPT = timedelta(hours=24)
LEASE = timedelta(minutes=2)  # longer than any create takes (a create waits up to 60 s)
MAX_KEY = 255


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str


@dataclass
class Idempotency:
    store: Store
    wait: float = 90.0  # seconds a repeat waits for the first request's answer

    def run(self, owner: str, key: str, request: bytes, work: Callable[[], Answer]) -> Answer:
        """`work`'s answer, or the answer an earlier request with `key` (from `owner`, with the
        same `request` bytes) got."""
        if not key or len(key) > MAX_KEY:
            raise Invalid(
                f"Idempotency-Key must be 1 to {MAX_KEY} characters", field="Idempotency-Key"
            )
        doc_id = hashlib.sha256(f"{owner}\0{key}".encode()).hexdigest()[:40]
        fingerprint = hashlib.sha256(request).hexdigest()
        deadline = time.monotonic() + self.wait
        while True:
            claimed = self._claim(doc_id, fingerprint)
            if claimed:
                break
            doc = self.store.get(KIND, doc_id)
            if doc is None:
                continue  # gone between the two reads (a failure released it): claim again
            if doc.data["fingerprint"] != fingerprint:
                raise Unprocessable(
                    "This Idempotency-Key was used with another request",
                    field="Idempotency-Key",
                    code="IDEMPOTENCY_KEY_REUSED",
                )
            if doc.data.get("status") is not None:
                return Answer(
                    int(doc.data["status"]), bytes.fromhex(doc.data["body"]), doc.data["type"]
                )
            if _stale(doc.data["claimed_at"]):  # its request died: take it over
                try:
                    self.store.update(KIND, doc_id, {**doc.data, "claimed_at": utcnow()},
                                      doc.version)  # fmt: skip
                    break
                except Conflict:
                    continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Conflict(
                    "A request with this Idempotency-Key is still running; try again shortly",
                    code="IDEMPOTENCY_KEY_IN_USE",
                )
            self.store.watch(KIND, doc_id, doc.version, min(remaining, 5.0))
        try:
            answer = work()
        except BaseException:
            self.store.delete(KIND, doc_id)  # nothing was answered: the key is free again
            raise
        if answer.status >= 500:
            self.store.delete(KIND, doc_id)
            return answer
        doc = self.store.get(KIND, doc_id)
        if doc is not None:
            done = {**doc.data, "status": answer.status, "body": answer.body.hex(),
                    "type": answer.content_type}  # fmt: skip
            with contextlib.suppress(Conflict):  # taken over meanwhile: its answer stands
                self.store.update(KIND, doc_id, done, doc.version)
        return answer

    def _claim(self, doc_id: str, fingerprint: str) -> bool:
        now = utcnow()
        claim = {"fingerprint": fingerprint, "claimed_at": now, "expires_at": now + KEPT}
        try:
            self.store.create(KIND, doc_id, claim)
        except Conflict:
            return False
        return True


def _stale(claimed_at: datetime | str) -> bool:
    when = claimed_at if isinstance(claimed_at, datetime) else datetime.fromisoformat(claimed_at)
    return when < utcnow() - LEASE
