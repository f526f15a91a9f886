"""Work that can wait until the answer to the current request has been sent.

The local origin serves a request while `collecting()`: what is deferred with `later` while
serving it runs once the answer is out, so the caller does not wait for bookkeeping
its answer does not depend on. Outside a scope (a function target, a bus worker) it runs at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)
_local = threading.local()


def later(work: Callable[[], object]) -> None:
    pending: list[Callable[[], object]] | None = getattr(_local, "pending", None)
    if pending is None:
        work()
    else:
        pending.append(work)


@contextmanager
def collecting() -> Iterator[list[Callable[[], object]]]:
    """Collects `later` work while the block runs, into the list it yields, for `run` to run
    once the answer is out (perhaps on another thread). Nested, it yields a list that stays
    empty: the outer block collects."""
    if getattr(_local, "pending", None) is not None:
        yield []
        return
    pending: list[Callable[[], object]] = []
    _local.pending = pending
    try:
        yield pending
    finally:
        _local.pending = None


def run(pending: list[Callable[[], object]]) -> None:
    """Runs collected work in order; a failure is logged (the answer has gone, there is no one
    to tell) and the rest runs all the same."""
    for work in pending:
        try:
            work()
        except Exception:
            log.exception("deferred work failed")


@contextmanager
def scope() -> Iterator[None]:
    """Collects `later` work while the block runs, and runs it when the block ends."""
    with collecting() as pending:
        try:
            yield
        finally:
            _local.pending = None
            run(pending)
