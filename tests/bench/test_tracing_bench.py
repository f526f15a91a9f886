"""What tracing costs a request: the same requests with tracing off (the default locally: no
provider, no OpenTelemetry loaded on the way) and on (an SDK provider handing each span to an
in-memory exporter as it ends, as `console` or `cloud` would hand it on), measured in the same
run, in alternating batches. Two requests: an exec through the function target, the in-process
bus, the agent and the workspace runtime (its spans: the target's, the agent's and the
runtime call's), and a session read, whose only span is the target's (the most tracing can
add to a request, relatively). Prints figures; asserts only correctness.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tether import tracing
from tether.local.stack import LocalStack
from tether.settings import Settings

from tests.bench.test_exec_bench import pct
from tests.surfaces.conftest import target_client

KEY = "tether_admin0000001_" + "b" * 32
ROUNDS = int(os.environ.get("TETHER_BENCH_TRACING_ROUNDS", "200"))
BATCH = 20  # requests in a row with tracing off, then on: machine noise hits both alike


@pytest.mark.bench
@pytest.mark.timeout(600)
def test_tracing_cost(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stack = LocalStack(Settings(home=tmp_path / "home", api_key=KEY), sweep_interval=3600)
    stack.start()
    try:
        api = target_client("onmemos")
        headers = {"X-API-Key": KEY}
        created = api.post("/v1/sessions", json={"template": "shell"}, headers=headers)
        assert created.status_code == 201, created.get_json()
        sid = created.get_json()["id"]

        def run_exec() -> None:
            ran = api.post(f"/v1/sessions/{sid}/execute", json={"command": "true"},
                           headers=headers)  # fmt: skip
            assert ran.status_code == 200 and ran.get_json()["success"], ran.get_json()

        def read() -> None:
            assert api.get(f"/v1/sessions/{sid}", headers=headers).status_code == 200

        times: dict[str, list[float]] = {}
        spans: dict[str, int] = {}
        for name, call in (("exec", run_exec), ("session read", read)):
            for _ in range(BATCH):  # warm up, both ways
                call()
            for on in (False, True, False, True):
                if on:
                    tracing.install(SimpleSpanProcessor(InMemorySpanExporter()))
                for _ in range(BATCH // 2):
                    call()
                tracing.uninstall()
            for batch in range(max(1, ROUNDS // BATCH) * 2):
                on = batch % 2 == 1
                key = f"{name} tracing {'on' if on else 'off'}"
                exporter = InMemorySpanExporter()  # one a batch: uninstalling shuts it down
                if on:
                    tracing.install(SimpleSpanProcessor(exporter))
                for _ in range(BATCH):
                    started = time.perf_counter()
                    call()
                    times.setdefault(key, []).append((time.perf_counter() - started) * 1000)
                if on:
                    spans[name] = len(exporter.get_finished_spans()) // BATCH
                    assert spans[name] >= 1
                    tracing.uninstall()
    finally:
        tracing.uninstall()
        stack.stop()

    with capsys.disabled():
        print(f"\n\ntracing off vs on (in-memory exporter), {ROUNDS} requests each, "
              f"alternating batches of {BATCH} (ms)")  # fmt: skip
        for key, xs in times.items():
            print(f"  {key:<28} p50 {pct(xs, 0.5):7.3f}  p99 {pct(xs, 0.99):7.3f}")
        for name in ("exec", "session read"):
            off, on = times[f"{name} tracing off"], times[f"{name} tracing on"]
            print(f"  {name:<12} on / off   p50 ratio {pct(on, 0.5) / pct(off, 0.5):.3f}x"
                  f"  ({spans[name]} spans a request)")  # fmt: skip
        print()
