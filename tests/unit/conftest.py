"""Fixtures the unit tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.runtime import RuntimeServer


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[RuntimeServer]:
    """The real workspace runtime app on a loopback port, its home under `tmp_path`."""
    server = RuntimeServer(tmp_path / "home")
    server.start()
    yield server
    server.stop()
