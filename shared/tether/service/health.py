"""Honest health: each backend is pinged; any failure makes the whole report degraded."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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
    debug_sessions: Callable[[], int] | None = None  # Kubently's live ones
    started: float = field(default_factory=time.monotonic)

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
        # Kubently's fields (it owns /health too): its `redis` is what Tether has instead, the
        # store and the bus, reported together.
        kubently: dict[str, Any] = {
            "redis": "connected" if ok else "disconnected",
            "modules": "initialized",
            "uptime_seconds": int(time.monotonic() - self.started),
        }
        if ok and self.debug_sessions is not None:
            with contextlib.suppress(TetherError):
                kubently["active_sessions"] = self.debug_sessions()
        status = "healthy" if ok else "degraded"
        return {"status": status, "version": __version__, **checks, **kubently}
