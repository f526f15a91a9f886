"""Prometheus metrics of the origin (`tether up` locally, the relay in the cloud), served at
`/metrics` to an admin credential (`tether.origin.apps`).

Off until the origin turns them on (`enable`): a function instance, which nothing scrapes,
neither imports prometheus_client nor counts. What is counted is this process's own (requests
through its surfaces, the commands whose results it recorded, the bytes it relayed); what the
store holds (sessions by state, agents online) is counted by the store when scraped, with one
count query per figure.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from tether.core.lifecycle import SessionState
from tether.core.models import utcnow

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    from tether.core.ports import Store

log = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds: from a cached read (a millisecond) to a create that waits for its workspace.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_on = False


@dataclass
class _Metrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    commands: Counter
    relay_bytes: Counter
    relay_open: Gauge
    store: _StoreCollector


def enable(store: Callable[[], tuple[Store, float]]) -> None:
    """Count from now on; `store` (called at each scrape) gives the store the gauges are counted
    in and the seconds an agent may go without a heartbeat and still be online."""
    global _on
    _metrics().store.source = store
    _on = True


@functools.cache
def _metrics() -> _Metrics:
    from prometheus_client import (
        CollectorRegistry,
        Counter,
        Gauge,
        Histogram,
        disable_created_metrics,
        gc_collector,
        platform_collector,
        process_collector,
    )

    disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` twin series
    registry = CollectorRegistry()
    store = _StoreCollector()
    registry.register(store)
    process_collector.ProcessCollector(registry=registry)
    platform_collector.PlatformCollector(registry=registry)
    gc_collector.GCCollector(registry=registry)
    return _Metrics(
        registry,
        Counter(
            "tether_http_requests",
            "HTTP requests answered by an API surface, by surface, method and status",
            ["surface", "method", "status"],
            registry=registry,
        ),
        Histogram(
            "tether_http_request_duration_seconds",
            "Time to answer an HTTP request, by API surface (WebSockets are not timed)",
            ["surface"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        ),
        Counter(
            "tether_commands_finished",
            "Agent commands whose results were recorded here, by command type and final state",
            ["type", "state"],
            registry=registry,
        ),
        Counter(
            "tether_relay_bytes",
            "Bytes relayed between clients and workspaces, by direction (to_workspace, to_client)",
            ["direction"],
            registry=registry,
        ),
        Gauge(
            "tether_relay_connections_open",
            "Relayed connections (terminals, desktops, logs, shells, chats) open now",
            registry=registry,
        ),
        store,
    )


def request(surface: str, method: str, status: int, seconds: float | None) -> None:
    """One HTTP request answered (`seconds`: None for a WebSocket, whose time is its life)."""
    if not _on:
        return
    m = _metrics()
    m.requests.labels(surface, method, str(status)).inc()
    if seconds is not None:
        m.latency.labels(surface).observe(seconds)


def command_finished(kind: str, state: str) -> None:
    if _on:
        _metrics().commands.labels(kind, state).inc()


def relay_bytes(direction: str) -> Callable[[float], None] | None:
    """What counts bytes relayed in `direction` (None while metrics are off): one counter's
    `inc`, bound once per side of a connection."""
    return _metrics().relay_bytes.labels(direction).inc if _on else None


def relay_opened() -> None:
    if _on:
        _metrics().relay_open.inc()


def relay_closed() -> None:
    if _on:
        _metrics().relay_open.dec()


def exposition() -> bytes:
    """Every metric in Prometheus' text format (counting what the store holds: blocking)."""
    from prometheus_client import generate_latest

    return generate_latest(_metrics().registry)


class _StoreCollector:
    """Gauges of what the store holds, read at each scrape: a count query per session state and
    one for the agents online (an index each, never a read of the documents)."""

    source: Callable[[], tuple[Store, float]] | None = None

    def describe(self) -> list[Any]:
        return []  # the registry must not collect (and query the store) on registering

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        sessions = GaugeMetricFamily(
            "tether_sessions", "Sessions in the store, by state", labels=["state"]
        )
        agents = GaugeMetricFamily("tether_agents_online", "Agents online now")
        if self.source is None:
            return
        try:
            store, grace = self.source()
            for state in SessionState:
                count = store.count("sessions", [("state", "==", state.value)])
                sessions.add_metric([state.value], count)
            # Online: heard from within the grace (the stored status lags until a sweep).
            since = utcnow() - timedelta(seconds=grace)
            agents.add_metric([], store.count("agents", [("last_heartbeat", ">=", since)]))
        except Exception:  # the store out of reach: a scrape still answers what is counted here
            log.warning("metrics: the store could not be counted", exc_info=True)
            return
        yield sessions
        yield agents
