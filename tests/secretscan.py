"""The suite's log lines, kept and scanned for credentials at its end (`tests/conftest.py`):
API keys, JWTs, tickets, webhook secrets, bearer tokens and passwords written out.

Every process of the suite (the pytest-xdist workers, and the servers the tests start, whose
output goes to `*.log` files under pytest's temporary directory) writes where the scan reads.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from tether import logs

DIR_ENV = "TETHER_TEST_LOG_DIR"
WORKSPACE_FILES = ".tether"
# `tether up`'s first start shows the admin's generated key and password on the console, on
# the line after this one (README, "Quickstart"): the operator's, by design, not a log line.
SHOWN_ONCE = "(shown once"
SECRETS = {
    "API key": re.compile(r"\btether_[A-Za-z0-9]{4,}_[A-Za-z0-9]{20,}"),
    "JWT": re.compile(r"\beyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]{16,}"),
    "ticket": re.compile(r"\btkt_[\w-]{16,}"),
    "webhook secret": re.compile(r"\bwhsec_[\w-]{16,}"),
    "bearer token": re.compile(r"\bBearer\s+(?!\[)[\w.~+/=-]{16,}"),
    # `password=...`, `"password": "..."`: a value given to the name, not the word in a
    # sentence ("password: field required").
    "password": re.compile(
        r"""(?i)\bpassw(?:or)?d["']?\s*(?:=\s*["']?|:\s*["'])[^\s"',}*<\[]{4,}"""
    ),
}


def found(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(kind, line) for each credential in `lines`."""
    for line in lines:
        for kind, pattern in SECRETS.items():
            if pattern.search(line):
                yield kind, line.strip()[:200]


def keep(path: Path) -> logging.Handler:
    """Every record this process logs from now on (INFO and up, tracebacks too), in `path`."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(min(root.level or logging.WARNING, logging.INFO))
    for name in logs.URL_LOGGERS:  # as Tether's processes have them (`tether.logs.configure`)
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler


def logs_under(root: Path) -> Iterator[Path]:
    """The `*.log` files under `root` that Tether's processes wrote: not the files inside a
    workspace (its `.tether` directory holds what the workspace's own commands print, a test's
    multi-gigabyte log among them)."""
    for path in sorted(root.rglob("*.log")) if root.is_dir() else []:
        if WORKSPACE_FILES not in path.relative_to(root).parts and path.is_file():
            yield path


def scan(roots: Iterable[Path]) -> tuple[int, list[tuple[str, str, str]]]:
    """Lines read from the logs under `roots`, and (file, kind, line) for each credential."""
    count, hits = 0, []
    for root in roots:
        for path in logs_under(root):
            with path.open(encoding="utf-8", errors="replace") as f:
                shown = False
                for line in f:  # a line at a time: a log may be long
                    count += 1
                    if not shown:
                        hits += [(str(path), kind, text) for kind, text in found([line])]
                    shown = SHOWN_ONCE in line
    return count, hits
