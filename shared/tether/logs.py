"""Logging: one JSON object a line in Cloud Logging's structured format in the cloud, readable
text locally, and the ids that tie a line to its request, trace, session and command.

The ids live in a context variable: `bind` sets them for a scope (a request, a command), and
every line logged inside it carries them, whichever module logs it. A line logged inside a span
(`tether.tracing`, when tracing is on) carries that span's trace and span ids over the bound
ones: the caller's trace, continued.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

from tether import tracing

FORMAT_ENV = "TETHER_LOG_FORMAT"  # json | text
# The ids a line carries, bound by `bind` or passed as `extra=`.
IDS = ("request_id", "session_id", "command_id", "agent_id")
# `extra=` keys written as they are (an event's name, say, which log-based metrics count).
EXTRAS = ("event",)
TRACE_KEY = "logging.googleapis.com/trace"
SPAN_KEY = "logging.googleapis.com/spanId"
SAMPLED_KEY = "logging.googleapis.com/trace_sampled"
# Libraries whose INFO lines print whole URLs, credentials in query strings too (a ticket, a
# preview token): WARNING and up only.
URL_LOGGERS = ("httpx", "httpcore")


class Headers(Protocol):
    def get(self, key: str, default: str) -> str: ...


_bound: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("tether_log_ids")
# W3C `traceparent` (version-trace-span-flags) and Google's `X-Cloud-Trace-Context`
# (TRACE/SPAN;o=1, the span in decimal).
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_CLOUD_TRACE = re.compile(r"([0-9a-fA-F]{32})(?:/(\d{1,20}))?(?:;o=([01]))?")
_LEVELS = {"WARNING": "WARNING", "CRITICAL": "CRITICAL", "ERROR": "ERROR", "INFO": "INFO"}


@contextlib.contextmanager
def bind(**ids: str | None) -> Iterator[None]:
    """Lines logged in this scope carry `ids` (those not None), besides any bound outside."""
    token = _bound.set({**_bound.get({}), **{k: v for k, v in ids.items() if v}})
    try:
        yield
    finally:
        _bound.reset(token)


def bound(name: str) -> str | None:
    """The id `name` bound in this scope, if any."""
    return _bound.get({}).get(name)


def trace_ids(headers: Headers) -> dict[str, str]:
    """The trace a request belongs to (`trace`, `span`, `sampled`), from its `traceparent` or
    `X-Cloud-Trace-Context` header; empty when it has neither (or a malformed one)."""
    found = _TRACEPARENT.fullmatch(headers.get("traceparent", "").strip().lower())
    if found and found.group(1) != "0" * 32:
        flags = int(found.group(3), 16)
        return {"trace": found.group(1), "span": found.group(2), "sampled": str(flags & 1)}
    found = _CLOUD_TRACE.fullmatch(headers.get("X-Cloud-Trace-Context", "").strip())
    if found:
        ids = {"trace": found.group(1).lower(), "sampled": found.group(3) or "0"}
        if found.group(2):
            ids["span"] = f"{int(found.group(2)) % 2**64:016x}"
        return ids
    return {}


def traceparent() -> str | None:
    """The bound trace as a `traceparent` header, to pass it on (to an agent, a runtime)."""
    ids = _bound.get({})
    if "trace" not in ids:
        return None
    return f"00-{ids['trace']}-{ids.get('span', '0' * 15 + '1')}-0{ids.get('sampled', '0')}"


def _ids(record: logging.LogRecord) -> dict[str, Any]:
    """The ids bound where `record` was logged, its trace's from the span it was logged in
    when there is one (`tether.tracing`: a line and its span agree), and those it was given
    as `extra=`."""
    extra = {k: getattr(record, k) for k in IDS if hasattr(record, k)}
    return {**_bound.get({}), **tracing.current_ids(), **extra}


class CloudJson(logging.Formatter):
    """A line Cloud Logging reads as a structured entry: `severity`, `message`, `time`, the
    trace it belongs to (in the project's trace name), the source line, and the bound ids."""

    def __init__(self, project: str | None = None) -> None:
        super().__init__()
        self.project = project

    def format(self, record: logging.LogRecord) -> str:
        ids = _ids(record)
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        entry: dict[str, Any] = {
            "severity": _LEVELS.get(record.levelname, "DEBUG"),
            "message": message,
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
            "logging.googleapis.com/sourceLocation": {
                "file": record.pathname, "line": record.lineno, "function": record.funcName,
            },
        }  # fmt: skip
        if "trace" in ids:
            project = self.project or "-"
            entry[TRACE_KEY] = f"projects/{project}/traces/{ids['trace']}"
            if "span" in ids:
                entry[SPAN_KEY] = ids["span"]
            entry[SAMPLED_KEY] = ids.get("sampled") == "1"
        entry.update((k, str(ids[k])) for k in IDS if ids.get(k))
        entry.update((k, getattr(record, k)) for k in EXTRAS if hasattr(record, k))
        return json.dumps(entry, default=str)


class Text(logging.Formatter):
    """Local lines: time, level, logger, message, then the bound ids that there are."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = _ids(record)
        tags = " ".join(f"{k}={ids[k]}" for k in IDS if ids.get(k))
        return f"{line} [{tags}]" if tags else line


def in_the_cloud() -> bool:
    """Cloud Run (functions too) sets K_SERVICE; GKE pods get KUBERNETES_SERVICE_HOST."""
    return bool(os.environ.get("K_SERVICE") or os.environ.get("KUBERNETES_SERVICE_HOST"))


def configure(fmt: str | None = None, stream: TextIO | None = None) -> logging.Handler:
    """The root logger writes `fmt` lines (TETHER_LOG_FORMAT; JSON in the cloud, text
    elsewhere) at INFO to `stream` (stderr). Replaces the handler it installed before."""
    fmt = fmt or os.environ.get(FORMAT_ENV) or ("json" if in_the_cloud() else "text")
    if fmt not in ("json", "text"):
        raise ValueError(f"{FORMAT_ENV} must be json or text, not {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    project = os.environ.get("GOOGLE_CLOUD_PROJECT")
    handler.setFormatter(CloudJson(project) if fmt == "json" else Text())
    handler.set_name("tether")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "tether"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for name in URL_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler
