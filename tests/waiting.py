"""Waiting for a state, never for a fixed time: how every test waits."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(check: Callable[[], object], timeout: float = 30.0, step: float = 0.02) -> bool:
    """Whether `check()` came true within `timeout` seconds (polled every `step`)."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
