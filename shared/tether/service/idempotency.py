"""`Idempotency-Key` on creates: a request sent again with the same key gets the first one's
answer, never a second object.

The first request with a key claims it (the store's create-if-absent, so of two at once only one
runs), runs, and records its answer for `KEPT`. The same key again, with the same request,
answers what was recorded (waiting for the first if it is still running); with another request
it is refused (422). A claim whose request died with its instance is taken over after `LEASE`.
An answer of 5xx is not kept: the request can be tried again with the same key (or the key used
for another request), at once.

A claim carries a `seed`, the same for every run of the request under the key: a create names
what it makes after it (`seed()`, while it runs), so running it again after a 5xx finds what the
first run made (the store may have gone away after a write, before the answer) instead of
making a second. The store away when a run ends, the claim is released or its answer recorded
once it is back, from a thread of its own (else a retry would wait out the `LEASE`).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import tenacity

from tether.core.models import utcnow
from tether.core.ports import Store
from tether.errors import Conflict, Invalid, NotFound, Unavailable, Unprocessable

log = logging.getLogger(__name__)
KIND = "idempotency"
KEPT = timedelta(hours=24)
LEASE = timedelta(minutes=2)  # longer than any create takes (a create waits up to 60 s)
MAX_KEY = 255
_seed: contextvars.ContextVar[str | None] = contextvars.ContextVar("idempotency_seed", default=None)


def seed() -> str | None:
    """While a request with an Idempotency-Key runs: a name for what it makes, unique and
    unguessable (a time, then 64 random bits: `1767225600-0123456789abcdef`), the same each
    time the request is run again under its key. None otherwise."""
    return _seed.get()


def new_seed() -> str:
    """A fresh seed (what `seed()` gives a request without a key)."""
    return f"{int(time.time())}-{secrets.token_hex(8)}"


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str


@dataclass
class Idempotency:
    store: Store
    wait: float = 90.0  # seconds a repeat waits for the first request's answer
    # How runs ended that the store was away to hear of: told it from one thread once it is back.
    _untold: queue.SimpleQueue[tuple[str, dict[str, Any], dict[str, Any], float]] = field(
        default_factory=queue.SimpleQueue, init=False, repr=False
    )
    _teller: threading.Thread | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

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
            claim = {"fingerprint": fingerprint, "claimed_at": utcnow(), "seed": new_seed(),
                     "run": secrets.token_hex(8)}  # fmt: skip
            try:
                if self._claim(doc_id, claim):
                    break
            except Unavailable:  # written perhaps, its answer lost: released once it can be
                self._tell_later(doc_id, claim, {"released": True})
                raise
            doc = self.store.get(KIND, doc_id)
            if doc is None:
                continue  # gone between the two reads (expired): claim again
            released = bool(doc.data.get("released"))  # its run answered 5xx: free again
            if doc.data["fingerprint"] != fingerprint and not released:
                raise Unprocessable(
                    "This Idempotency-Key was used with another request",
                    field="Idempotency-Key",
                    code="IDEMPOTENCY_KEY_REUSED",
                )
            if doc.data.get("status") is not None:
                return Answer(
                    int(doc.data["status"]), bytes.fromhex(doc.data["body"]), doc.data["type"]
                )
            if released or _stale(doc.data["claimed_at"]):  # run again: take the claim over
                if doc.data["fingerprint"] == fingerprint and doc.data.get("seed"):
                    claim["seed"] = doc.data["seed"]  # the same request: what it made is its
                try:
                    self.store.update(KIND, doc_id, {**doc.data, **claim, "released": False},
                                      doc.version)  # fmt: skip
                    break
                except Conflict:
                    continue
                except Unavailable:  # as a claim's
                    self._tell_later(doc_id, claim, {"released": True})
                    raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Conflict(
                    "A request with this Idempotency-Key is still running; try again shortly",
                    code="IDEMPOTENCY_KEY_IN_USE",
                )
            self.store.watch(KIND, doc_id, doc.version, min(remaining, 5.0))
        running = _seed.set(str(claim["seed"]))
        try:
            answer = work()
        except BaseException:
            self._end(doc_id, claim, {"released": True})  # nothing was answered
            raise
        finally:
            _seed.reset(running)
        if answer.status >= 500:
            self._end(doc_id, claim, {"released": True})
        else:
            self._end(doc_id, claim, {"status": answer.status, "body": answer.body.hex(),
                                      "type": answer.content_type})  # fmt: skip
        return answer

    def _claim(self, doc_id: str, claim: dict[str, Any]) -> bool:
        try:
            self.store.create(KIND, doc_id, {**claim, "expires_at": utcnow() + KEPT})
        except Conflict:
            return False
        return True

    def _end(self, doc_id: str, claim: dict[str, Any], fields: dict[str, Any]) -> None:
        """Records how the run of `claim` ended (`fields`): now, or once the store is back
        (its answer, already made, is not held up by an outage)."""
        try:
            self._tell(doc_id, claim, fields)
        except Unavailable:
            self._tell_later(doc_id, claim, fields)

    def _tell(self, doc_id: str, claim: dict[str, Any], fields: dict[str, Any]) -> None:
        doc = self.store.get(KIND, doc_id)
        if doc is None or doc.data.get("run") != claim["run"]:
            return  # never written, taken over or expired: nothing of this run's to end
        with contextlib.suppress(Conflict, NotFound):  # the same
            self.store.update(KIND, doc_id, {**doc.data, **fields}, doc.version)

    def _tell_later(self, doc_id: str, claim: dict[str, Any], fields: dict[str, Any]) -> None:
        """`_tell` once the store is back, for as long as the claim holds (it is taken over
        after that anyway), from one thread of this process's however many runs wait."""
        log.warning("Idempotency-Key claim %s: the store is away, its run's end told later",
                    doc_id)  # fmt: skip
        self._untold.put((doc_id, claim, fields, time.monotonic() + LEASE.total_seconds()))
        with self._lock:
            if self._teller is None:
                self._teller = threading.Thread(target=self._telling, name="idempotency",
                                                daemon=True)  # fmt: skip
                self._teller.start()

    def _telling(self) -> None:
        while True:
            with self._lock:
                if self._untold.empty():
                    self._teller = None
                    return
            doc_id, claim, fields, until = self._untold.get()
            retrying = tenacity.Retrying(
                retry=tenacity.retry_if_exception_type(Unavailable),
                stop=tenacity.stop_after_delay(max(0.0, until - time.monotonic())),
                wait=tenacity.wait_exponential(multiplier=0.5, max=4),
                reraise=True,
            )
            try:
                retrying(self._tell, doc_id, claim, fields)
            except Exception:  # a thread of its own: nobody else to tell
                log.warning("Idempotency-Key claim %s left to its lease", doc_id, exc_info=True)


def _stale(claimed_at: datetime | str) -> bool:
    when = claimed_at if isinstance(claimed_at, datetime) else datetime.fromisoformat(claimed_at)
    return when < utcnow() - LEASE
