"""Work that can wait until the answer to the current request has been sent.

The local origin serves a request inside `scope()`: what is deferred with `later` while serving
it runs on the same thread once the answer is out, so the caller does not wait for bookkeeping
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
def scope() -> Iterator[None]:
    """Collects `later` work while the block runs, and runs it when the block ends (a failure
    is logged: the answer has gone, there is no one to tell)."""
    if getattr(_local, "pending", None) is not None:  # nested: the outer scope runs it
        yield
        return
    _local.pending = []
    try:
        yield
    finally:
        pending, _local.pending = _local.pending, None
        for work in pending:
            try:
                work()
            except Exception:
                log.exception("deferred work failed")
