"""Importing a function target builds no cloud client and loads no gRPC."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("google.cloud.firestore", "google.cloud.pubsub", "grpc", "kubernetes", "google.cloud.run")


def test_importing_the_targets_loads_no_cloud_client() -> None:
    code = (
        "import sys, json; sys.path.insert(0, 'functions'); import main; "
        "print(json.dumps(sorted(m for m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    loaded = json.loads(out)
    assert "main" in loaded and "tether.targets" in loaded
    heavy = [m for m in loaded if m.startswith(HEAVY)]
    assert heavy == [], f"importing functions/main.py loaded {heavy[:5]}"
