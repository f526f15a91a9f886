"""Shared fixtures. Emulator-backed fixtures fail loudly when the emulators are not running:
run the suite with `make test`, which starts them."""

from __future__ import annotations

import os
import uuid

import pytest


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
