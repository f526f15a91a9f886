"""`tether seed`: the first step after a cloud deploy, here against the Firestore emulator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tether.service.auth import Auth
from tether.service.templates import Templates
from tether.store.firestore import FirestoreStore

from tests.conftest import emulator
from tests.contract.conftest import clear_firestore


def seed(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tether.cli.main", "seed"], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_seed_makes_an_admin_key_once_and_the_templates(tmp_path: Path, project: str) -> None:
    emulator("FIRESTORE_EMULATOR_HOST")
    env = {**os.environ, "TETHER_STORE": "firestore", "TETHER_HOME": str(tmp_path),
           "GOOGLE_CLOUD_PROJECT": project}  # fmt: skip
    env.pop("TETHER_API_KEY", None)
    try:
        first = seed(env)
        assert first.returncode == 0, first.stderr
        key = first.stdout.split("Admin API key (shown once): ")[1].split()[0]
        store = FirestoreStore(project=project)
        assert Auth(store).principal_for_key(key).username == "admin"
        assert {"python", "shell"} <= {t.name for t in Templates(store).list()}
        again = seed(env)  # nothing new, nothing shown
        assert again.returncode == 0 and "shown once" not in again.stdout
        assert "Already seeded" in again.stderr
        assert Auth(store).principal_for_key(key).username == "admin"
    finally:
        clear_firestore(project)
