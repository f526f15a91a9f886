"""Shared fixtures. Emulator-backed fixtures fail loudly when the emulators are not running:
run the suite with `make test`, which starts them."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable

import pytest
from tether.service.ratelimit import RateLimits


def emulator(var: str) -> str:
    host = os.environ.get(var)
    if not host:
        pytest.fail(f"{var} is not set: run tests with `make test` (it starts the emulators)")
    return host


@pytest.fixture
def project() -> str:
    return os.environ.get("GOOGLE_CLOUD_PROJECT", "tether-test")


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
