"""Honest health: each backend is pinged; any failure makes the whole report degraded."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tether import __version__
from tether.core.ports import Bus, Store
from tether.errors import TetherError


@dataclass
class Health:
    store: Store
    bus: Bus
    store_name: str
    bus_name: str
    # What confines this process's own workspaces (the local stack's agent), if it has any.
    workspaces: Callable[[], dict[str, Any]] | None = None

    def report(self) -> dict[str, Any]:
        checks: dict[str, Any] = {}
        for name, backend, kind in (
            ("store", self.store, self.store_name),
            ("bus", self.bus, self.bus_name),
        ):
            try:
                backend.ping()
                checks[name] = {"status": "ok", "backend": kind}
            except TetherError as exc:
                checks[name] = {"status": "unavailable", "backend": kind, "error": exc.message}
            except Exception as exc:  # a health check must report, never crash
                checks[name] = {"status": "unavailable", "backend": kind, "error": str(exc)}
        ok = all(c["status"] == "ok" for c in checks.values())
        if self.workspaces is not None:
            checks["workspaces"] = self.workspaces()
        return {"status": "healthy" if ok else "degraded", "version": __version__, **checks}
