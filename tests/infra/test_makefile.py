"""`make up` installs what serving needs and nothing else: the tests' tools (pytest, ruff, mypy,
Playwright, Schemathesis, checkov, ...) come with `make test`, so a first `make up` is quick."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def planned(target: str, tmp_path: Path) -> str:
    """What `make <target>` would run on a machine with nothing installed yet (a dry run)."""
    run = subprocess.run(
        ["make", "-n", "-B", target, f"VENV={tmp_path / 'venv'}"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return run.stdout


def test_make_up_installs_only_what_serving_needs(tmp_path: Path) -> None:
    up = planned("up", tmp_path)
    assert "-r requirements.txt" in up and "tether up" in up
    assert "requirements-dev.txt" not in up and "checkov" not in up


def test_make_test_adds_the_tests_tools(tmp_path: Path) -> None:
    test = planned("test", tmp_path)
    assert "-r requirements.txt" in test and "-r requirements-dev.txt" in test
    assert "checkov-requirements.txt" in test and "pytest" in test
