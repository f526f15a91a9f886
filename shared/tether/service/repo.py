"""Typed access to one kind of document in the Store."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from tether.core.models import Record
from tether.core.ports import Filter, Position, Store, Stored
from tether.errors import Conflict, NotFound

T = TypeVar("T", bound=Record)


class Repo(Generic[T]):
    def __init__(self, store: Store, kind: str, model: type[T]) -> None:
        self.store = store
        self.kind = kind
        self.model = model

    def _load(self, doc: Stored) -> T:
        obj = self.model.model_validate(doc.data)
        obj.version = doc.version
        return obj

    def find(self, doc_id: str) -> T | None:
        doc = self.store.get(self.kind, doc_id)
        return self._load(doc) if doc else None

    def get(self, doc_id: str, what: str | None = None) -> T:
        obj = self.find(doc_id)
        if obj is None:
            name = what or self.kind.rstrip("s").capitalize()
            raise NotFound(f"{name} not found", code=f"{name.upper()}_NOT_FOUND")
        return obj

    def create(self, doc_id: str, obj: T) -> T:
        obj.version = self.store.create(self.kind, doc_id, obj.doc()).version
        return obj

    def save(self, doc_id: str, obj: T) -> T:
        """Compare-and-set on the version the object was read at; Conflict if it moved."""
        obj.version = self.store.update(self.kind, doc_id, obj.doc(), obj.version).version
        return obj

    def mutate(
        self,
        doc_id: str,
        change: Callable[[T], T | None],
        attempts: int = 8,
        start: T | None = None,
    ) -> T:
        """Read, apply `change`, write; retry on a lost race. `change` returning None means
        "nothing to do" and writes nothing. `start`, the record as this process last saw it,
        spares the first read: `change` gets a shallow copy of it (so it must assign fields,
        not change their values in place), and a stale one costs a Conflict and then a read."""
        for _ in range(attempts):
            obj = self.get(doc_id) if start is None else start.model_copy()
            new = change(obj)
            if new is None:
                if start is None:
                    return obj
                start = None  # decided on a copy that may be stale: decide again on a read
                continue
            try:
                return self.save(doc_id, new)
            except Conflict:
                start = None
        raise Conflict(f"{self.kind} {doc_id!r} is changing too fast; try again")

    def query(
        self,
        where: Sequence[Filter] = (),
        order_by: str | None = None,
        descending: bool = False,
        limit: int | None = None,
        offset: int = 0,
        after: Position | None = None,
    ) -> list[T]:
        docs = self.store.query(self.kind, where, order_by, descending, limit, offset, after)
        return [self._load(d) for d in docs]

    def count(self, where: Sequence[Filter] = ()) -> int:
        return self.store.count(self.kind, where)

    def watch(self, doc_id: str, after_version: int, timeout: float) -> T | None:
        """The object once its version passes `after_version` (or at `timeout`); None if gone."""
        doc = self.store.watch(self.kind, doc_id, after_version, timeout)
        return self._load(doc) if doc else None

    def delete(self, doc_id: str) -> bool:
        return self.store.delete(self.kind, doc_id)
