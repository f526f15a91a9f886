"""Store on Cloud Firestore. One collection per kind (`prefix + kind`); each document holds the
caller's data plus a reserved version field, and `update` is a compare-and-set: a read, then a
write on the precondition that the document's update time is still the one read.

google.cloud is imported lazily so that importing tether.store never loads gRPC or does I/O.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from itertools import groupby
from typing import TYPE_CHECKING, Any

from tether.core.ports import Filter, Position, Stored
from tether.errors import Conflict, Invalid, NotFound, Unavailable
from tether.store.codec import check_field, encode
from tether.store.indexes import COMPOSITE_INDEXES, Index, missing

if TYPE_CHECKING:
    from google.cloud.firestore import Client, DocumentReference, DocumentSnapshot


_VERSION = "_v"  # reserved field: the document's compare-and-set version
_OPS = ("==", "in", "<", "<=", ">", ">=", "contains", "contains_any")
_NATIVE = {"contains": "array_contains", "contains_any": "array_contains_any"}
_PING_TIMEOUT = 2.5
# The client's default retries a read for up to 300 s; a request handler must give up sooner.
_CALL_TIMEOUT = 10.0
# gRPC waits up to 120 s between attempts to reach a backend whose port went away (a crashed
# emulator, a dropped network), so every call failed for 25 s more after a 45 s outage had
# ended: try again every few seconds instead (as the Pub/Sub bus does).
RECONNECT = (("grpc.initial_reconnect_backoff_ms", 500), ("grpc.max_reconnect_backoff_ms", 4000))


def _bounded() -> dict[str, Any]:
    from google.api_core.retry import Retry

    return {"retry": Retry(timeout=_CALL_TIMEOUT), "timeout": _CALL_TIMEOUT}


@contextmanager
def _errors(what: str) -> Iterator[None]:
    """Translate backend failures into the one error tree."""
    from google.api_core import exceptions as gexc

    try:
        yield
    except (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.RetryError) as exc:
        raise Unavailable(f"firestore unavailable during {what}: {exc}") from exc
    except gexc.InvalidArgument as exc:  # a document over 1 MiB, say: retrying cannot help
        raise Invalid(f"firestore refused the {what}: {exc.message}") from exc


def _reconnecting_client(project: str | None, database: str) -> Client:
    """Firestore's client, its channel made with `RECONNECT`'s backoff. The client makes its
    channel itself (the library's options, or a plain one for the emulator), so ours
    overrides the two places it does."""
    import grpc  # type: ignore[import-untyped]
    from google.cloud import firestore
    from google.cloud.firestore_v1.base_client import _GRPC_MSG_SIZE_OPTIONS
    from google.cloud.firestore_v1.services.firestore import client as gapic
    from google.cloud.firestore_v1.services.firestore.transports.grpc import (
        FirestoreGrpcTransport,
    )

    class Transport(FirestoreGrpcTransport):
        @classmethod
        def create_channel(cls, host: str = "firestore.googleapis.com", *args: Any,
                           **kwargs: Any) -> Any:  # fmt: skip
            options = [*kwargs.pop("options", ()), *RECONNECT]
            return super().create_channel(host, *args, options=options, **kwargs)

    class Reconnecting(firestore.Client):
        @property
        def _firestore_api(self) -> Any:
            return self._firestore_api_helper(Transport, gapic.FirestoreClient, gapic)

        def _emulator_channel(self, transport: Any) -> Any:
            options = [*_GRPC_MSG_SIZE_OPTIONS, *RECONNECT]
            return grpc.insecure_channel(self._emulator_host, options=options)

    return Reconnecting(project=project, database=database)


def _stored(snap: DocumentSnapshot[Any]) -> Stored | None:
    data = snap.to_dict() if snap.exists else None
    if data is None:
        return None
    version = data.pop(_VERSION, 0)
    return Stored(snap.id, int(version), data)


def _field(data: dict[str, Any], path: str) -> Any:
    value: Any = data
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _checked(data: dict[str, Any]) -> dict[str, Any]:
    if _VERSION in data:
        raise Invalid(f"field {_VERSION!r} is reserved", field=_VERSION)
    encode(data)  # validation only: rejects naive datetimes, as every adapter must
    return dict(data)


class FirestoreStore:
    def __init__(
        self,
        project: str | None = None,
        prefix: str = "",
        database: str = "(default)",
        indexes: Collection[Index] = COMPOSITE_INDEXES,
    ) -> None:
        self.project = project
        self.prefix = prefix
        self.database = database
        self.indexes = frozenset(indexes)
        self._lock = threading.Lock()
        self._db: Client | None = None

    def _client(self) -> Client:
        with self._lock:
            if self._db is None:
                self._db = _reconnecting_client(self.project, self.database)
            return self._db

    def _ref(self, kind: str, doc_id: str) -> DocumentReference:
        return self._client().collection(self.prefix + kind).document(doc_id)

    def get(self, kind: str, doc_id: str) -> Stored | None:
        with _errors("get"):
            return _stored(self._ref(kind, doc_id).get(**_bounded()))

    def create(self, kind: str, doc_id: str, data: dict[str, Any]) -> Stored:
        from google.api_core.exceptions import AlreadyExists

        body = _checked(data)
        try:
            with _errors("create"):
                self._ref(kind, doc_id).create({**body, _VERSION: 1}, **_bounded())
        except AlreadyExists:
            raise Conflict(f"{kind} {doc_id!r} already exists") from None
        return Stored(doc_id, 1, body)

    def update(self, kind: str, doc_id: str, data: dict[str, Any], expected_version: int) -> Stored:
        from google.cloud.firestore import DELETE_FIELD
        from google.cloud.firestore_v1.field_path import FieldPath

        body = _checked(data)
        snap, current = self._read(kind, doc_id, "update")
        if current is None:
            raise NotFound(f"{kind} {doc_id!r} not found")
        if current.version != expected_version:
            raise Conflict(f"{kind} {doc_id!r} changed concurrently")
        wanted = Stored(doc_id, expected_version + 1, body)
        # The whole document replaced, field by field (a name is a path to `update`: quoted).
        fields = {**body, _VERSION: wanted.version}
        fields |= {name: DELETE_FIELD for name in current.data if name not in body}
        paths = {FieldPath(name).to_api_repr(): value for name, value in fields.items()}

        def write(option: Any) -> None:
            snap.reference.update(paths, option=option, **_bounded())

        if not self._write_if_unchanged(kind, snap, "update", write, wanted):
            raise Conflict(f"{kind} {doc_id!r} changed concurrently")
        return wanted

    def _read(self, kind: str, doc_id: str, what: str) -> tuple[Any, Stored | None]:
        with _errors(what):
            snap = self._ref(kind, doc_id).get(**_bounded())
        return snap, _stored(snap)

    def _write_if_unchanged(
        self, kind: str, snap: Any, what: str, write: Callable[[Any], None], wanted: Stored | None
    ) -> bool:
        """`write(option)` on the precondition that the document is as `snap` read it: a
        compare-and-set in bounded calls (a transaction's own calls retry for a minute while
        Firestore is away). Whether it was written: a write that went through but whose
        answer was lost fails its retry's precondition, so then the document is read again,
        and is ours if it is `wanted` (None: gone)."""
        from google.api_core.exceptions import FailedPrecondition
        from google.api_core.exceptions import NotFound as Missing

        option = self._client().write_option(last_update_time=snap.update_time)
        try:
            with _errors(what):
                write(option)
        except (FailedPrecondition, Missing):
            return self._read(kind, snap.id, what)[1] == wanted
        return True

    def patch(self, kind: str, doc_id: str, fields: dict[str, Any]) -> None:
        from google.api_core.exceptions import NotFound as Missing
        from google.cloud.firestore import Increment

        body = _checked(fields)
        if not body:
            raise Invalid("nothing to patch")
        for name in body:  # top-level only: `update` reads a dotted name as a path
            if "." in check_field(name):
                raise Invalid(f"not a top-level field: {name!r}", field=name)
        try:
            with _errors("patch"):
                self._ref(kind, doc_id).update({**body, _VERSION: Increment(1)}, **_bounded())
        except Missing:
            raise NotFound(f"{kind} {doc_id!r} not found") from None

    def delete(self, kind: str, doc_id: str, expected: Stored | None = None) -> bool:
        from google.api_core.exceptions import NotFound as Missing

        if expected is not None:
            return self._delete_expected(kind, doc_id, expected)
        client = self._client()
        try:
            with _errors("delete"):
                # An exists precondition makes the delete itself report whether there was one.
                self._ref(kind, doc_id).delete(
                    option=client.write_option(exists=True), **_bounded()
                )
        except Missing:
            return False
        return True

    def _delete_expected(self, kind: str, doc_id: str, expected: Stored) -> bool:
        """Only the document as it was read goes."""
        snap, current = self._read(kind, doc_id, "delete")
        if current != expected:
            return False

        def write(option: Any) -> None:
            snap.reference.delete(option=option, **_bounded())

        return self._write_if_unchanged(kind, snap, "delete", write, None)

    def _query(self, kind: str, where: Sequence[Filter]) -> tuple[Any, set[str]] | None:
        """The collection filtered by `where`, and the fields it range-filters; None when
        nothing can match (an empty `in`)."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        q: Any = self._client().collection(self.prefix + kind)
        ranged: set[str] = set()
        for name, op, value in where:
            if op not in _OPS:
                raise Invalid(f"unsupported operator {op!r}", field=name)
            if op in ("in", "contains_any"):
                value = list(value)
                if not value:
                    return None
            elif op not in ("==", "contains"):
                ranged.add(name)
            q = q.where(filter=FieldFilter(check_field(name), _NATIVE.get(op, op), value))
        return q, ranged

    def query(
        self,
        kind: str,
        where: Sequence[Filter] = (),
        order_by: str | None = None,
        descending: bool = False,
        limit: int | None = None,
        offset: int = 0,
        after: Position | None = None,
    ) -> list[Stored]:
        from google.cloud.firestore import Query
        from google.cloud.firestore_v1.field_path import FieldPath

        need = missing(kind, where, order_by, descending, self.indexes)
        if need is not None:
            # What Firestore itself answers (FAILED_PRECONDITION); the emulator never does.
            fields = ", ".join(f"{name} {order}" for name, order in need.fields)
            raise Unavailable(
                f"query on {kind} needs the composite index ({fields}): "
                "declare it in tether.store.indexes"
            )
        found = self._query(kind, where)
        if found is None:
            return []
        q, ranged = found
        direction = Query.DESCENDING if descending else Query.ASCENDING
        if order_by:
            q = q.order_by(check_field(order_by), direction=direction)
        # Firestore orders by range-filtered fields before the id, so "then id" can only be
        # asked of it when the only such field is `order_by`; otherwise tie-break here.
        exact = not ranged - {order_by}
        if not exact and (offset or after):
            raise Invalid("a page of a query that range-filters a field it does not order by")
        if exact:
            q = q.order_by(FieldPath.document_id(), direction=direction)
            if after is not None:
                q = q.start_after([after[0], after[1]] if order_by else [after[1]])
            if offset:
                q = q.offset(int(offset))
            if limit is not None:
                q = q.limit(int(limit))
        with _errors("query"):
            docs = [s for s in map(_stored, q.stream(**_bounded())) if s is not None]
        if exact:
            return docs
        runs = groupby(docs, key=lambda s: _field(s.data, order_by)) if order_by else [("", docs)]
        docs = [s for _, run in runs for s in sorted(run, key=lambda s: s.id, reverse=descending)]
        return docs if limit is None else docs[: int(limit)]

    def count(self, kind: str, where: Sequence[Filter] = ()) -> int:
        found = self._query(kind, where)
        if found is None:
            return 0
        with _errors("count"):
            results = found[0].count(alias="n").get(**_bounded())
        return int(results[0][0].value)

    def watch(self, kind: str, doc_id: str, after_version: int, timeout: float) -> Stored | None:
        """A real-time listener, not polling: one read for its first snapshot and one for each
        change it is woken by."""
        seen: list[Stored | None] = []
        changed = threading.Event()

        def on_snapshot(snaps: list[DocumentSnapshot[Any]], *_: Any) -> None:
            doc = _stored(snaps[0]) if snaps else None
            seen[:] = [doc]
            if doc is None or doc.version > after_version:
                changed.set()

        with _errors("watch"):
            listener = self._ref(kind, doc_id).on_snapshot(on_snapshot)
        try:
            changed.wait(timeout)
        finally:
            listener.unsubscribe()  # type: ignore[no-untyped-call]
        # No snapshot at all (the listen stream never answered): read the document itself.
        return seen[0] if seen else self.get(kind, doc_id)

    def ping(self) -> None:
        try:
            self._client().collection("_health").document("ping").get(
                retry=None, timeout=_PING_TIMEOUT
            )
        except Exception as exc:
            raise Unavailable(f"firestore store unavailable: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()  # type: ignore[no-untyped-call]
                self._db = None
