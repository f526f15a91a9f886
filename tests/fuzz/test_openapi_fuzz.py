"""Each surface's OpenAPI document, served by a real `tether up`, and Schemathesis run against
it with every check and its stateful links (inferred from the document): a bounded run here,
at least 10,000 cases in `make fuzz` (TETHER_FUZZ_EXAMPLES)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tether.surfaces import kubently, onmemos, openapi, openctrol, sentinelstacks, streamspace

from tests.e2e.conftest import Server, start_server

CONFIG = Path(__file__).with_name("schemathesis.toml")
SURFACES = {
    "onmemos": onmemos,
    "streamspace": streamspace,
    "kubently": kubently,
    "openctrol": openctrol,
    "sentinelstacks": sentinelstacks,
}
# The header each surface's document names for the API key.
KEY_HEADER = {"openctrol": "X-Openctrol-Key"}
EXAMPLES = int(os.environ.get("TETHER_FUZZ_EXAMPLES", "5"))  # per operation and phase
SEED = os.environ.get("TETHER_FUZZ_SEED", "1")  # `make fuzz` picks a fresh one


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Rate limits out of the way: a run sends thousands of requests a minute from one address.
    limits = {"TETHER_RATE_LIMITS": "login=1000000,create=1000000,api=1000000,commands=1000000"}
    srv = start_server(tmp_path_factory.mktemp("fuzz") / "home", limits)
    yield srv
    srv.stop()


@pytest.mark.parametrize("surface", sorted(SURFACES))
def test_the_document_lists_every_operation_and_its_reference_page_is_served(
    server: Server, surface: str
) -> None:
    doc = httpx.get(f"{server.url}/openapi/{surface}.json", timeout=10).json()
    assert doc["openapi"] == "3.1.0"
    listed = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    routed = {
        (openapi.path_of(op), op.method.lower())
        for op in SURFACES[surface].router.operations.values()
        if op.listed
    }
    assert listed == routed
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op["responses"], (path, method)
            if op["security"]:  # every credential-taking operation says how it is refused
                assert "401" in op["responses"], (path, method)
    page = httpx.get(f"{server.url}/openapi/{surface}", timeout=10)
    assert page.headers["content-type"].startswith("text/html")
    assert f"/openapi/{surface}.json" in page.text
    script = httpx.get(f"{server.url}/openapi/{surface}/redoc.standalone.js", timeout=30)
    assert script.status_code == 200 and len(script.content) > 100_000, "make install vendors it"


@pytest.mark.timeout(3900)  # `make fuzz` runs for many minutes; the bounded run, one or two
@pytest.mark.parametrize("surface", sorted(SURFACES))
def test_schemathesis_finds_nothing(server: Server, surface: str, tmp_path: Path) -> None:
    run = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "--config-file", str(CONFIG),
            "run", f"{server.url}/openapi/{surface}.json",
            "--checks", "all",
            # A deleted session stays readable, as "terminated": OnMemOS' own SDK reads that
            # status after a delete (tests/e2e/test_onmemos_examples.py), so a GET after a
            # DELETE answering 200 is the contract here, not a use after free.
            "--exclude-checks", "use_after_free",
            "--header", f"{KEY_HEADER.get(surface, 'X-API-Key')}: {server.key}",
            "--max-examples", str(EXAMPLES),
            "--seed", SEED,
            "--request-timeout", "60",
            "--workers", "1",
            "--no-color",
            "--output-truncate", "true",
        ],
        capture_output=True, text=True, cwd=tmp_path, timeout=3600,
    )  # fmt: skip
    summary = run.stdout[run.stdout.rfind("=== SUMMARY") :] if run.returncode else ""
    print(run.stdout[-3000:])
    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-2000:] + summary
