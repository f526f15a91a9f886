"""Shared fixtures. Emulator-backed fixtures fail loudly when the emulators are not running:
run the suite with `make test`, which starts them."""

from __future__ import annotations

import io
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tether import logs
from tether.service.ratelimit import RateLimits

from tests import secretscan


def emulator(var: str) -> str:
    host = os.environ.get(var)
    if not host:
        pytest.fail(f"{var} is not set: run tests with `make test` (it starts the emulators)")
    return host


# `make test` runs the suite on two workers, a file at a time (pytest-xdist's loadfile): the
# files that take minutes go out first, so neither worker is left with one at the end while
# the other has nothing to do.
LONGEST_FIRST = ("sandbox", "fuzz")


def pytest_configure(config: pytest.Config) -> None:
    """Each process of the suite keeps its log lines where the secret scan reads them; the
    first (the controller under pytest-xdist) makes the place, its workers inherit it."""
    if secretscan.DIR_ENV not in os.environ:
        made = tempfile.mkdtemp(prefix="tether-test-logs-")
        os.chmod(made, 0o1777)  # a run nested as an ordinary user (tests/sandbox) writes too
        os.environ[secretscan.DIR_ENV] = made
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    secretscan.keep(Path(os.environ[secretscan.DIR_ENV]) / f"{worker}-{os.getpid()}.log")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After every test: no credential in any line the suite logged, in process or in the
    servers it started. Found ones fail the run."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return  # the controller scans, once all its workers are done
    roots = [Path(os.environ[secretscan.DIR_ENV]), session.config._tmp_path_factory.getbasetemp()]
    count, hits = secretscan.scan(roots)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_line(f"secret scan: {count} log lines, {len(hits)} credentials found")
        for path, kind, line in hits[:20]:
            reporter.write_line(f"  {kind} in {path}: {line}", red=True)
    if hits:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        where = item.path.relative_to(item.config.rootpath).parts[1:2]
        return LONGEST_FIRST.index(where[0]) if where and where[0] in LONGEST_FIRST else 99

    items.sort(key=rank)  # stable: the order within each file stays


@pytest.fixture
def project() -> str:
    """The emulators' project for this worker: `clear_firestore` empties a whole project, so
    each pytest-xdist worker has its own, and never empties another's under its tests."""
    base = os.environ.get("GOOGLE_CLOUD_PROJECT", "tether-test")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return f"{base}-{worker}" if worker else base


@pytest.fixture
def unique() -> str:
    """A short unique prefix so tests sharing an emulator never see each other's data."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def rate_window() -> Callable[[], None]:
    """Rate limits count in fixed one-minute windows (StreamSpace's spec): a test that counts
    requests calls this first, so its requests do not straddle two windows."""

    def wait(needed: float = 15.0) -> None:
        left = RateLimits.window - time.time() % RateLimits.window
        if left < needed:
            time.sleep(left + 0.1)

    return wait


CLOUD_PROJECT = "acme-prod"


@pytest.fixture
def json_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """What is logged during the test, as Tether logs it in the cloud (project `acme-prod`)."""
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", CLOUD_PROJECT)
    out = io.StringIO()
    handler = logs.configure("json", out)
    yield out
    logging.getLogger().removeHandler(handler)
