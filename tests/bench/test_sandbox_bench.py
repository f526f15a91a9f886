"""What isolation costs a local workspace: create -> running and an exec's round trip through
the provisioner, hardened (bubblewrap: namespaces, seccomp, limits, its own disk; and gVisor
as root) next to the same workspace unconfined (TETHER_SANDBOX=none), in interleaved rounds
of the same run, plus the start of a workspace with egress (its user-mode network). Prints
figures; asserts only that every workspace answered.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import pytest
from tether.core.models import Template, WorkspaceSpec
from tether.provision.local import LocalProvisioner

ROUNDS = int(os.environ.get("TETHER_BENCH_SANDBOX_ROUNDS", "7"))
EXECS = 40


def spec(sid: str, network: str = "none") -> WorkspaceSpec:
    return WorkspaceSpec(
        session_id=sid,
        template=Template(name="bench", display_name="Bench", network=network),  # type: ignore[arg-type]
    )


def ms(xs: list[float]) -> float:
    return statistics.median(xs) * 1000


@pytest.mark.bench
def test_sandbox_cost(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kinds = {
        "none": LocalProvisioner(tmp_path / "none", sandbox="none"),
        "bubblewrap": LocalProvisioner(tmp_path / "bwrap"),
    }
    if os.geteuid() == 0:  # gVisor's runsc needs root here
        kinds["gvisor"] = LocalProvisioner(tmp_path / "gvisor", sandbox="gvisor")
    start: dict[str, list[float]] = {k: [] for k in [*kinds, "bubblewrap+egress"]}
    execs: dict[str, list[float]] = {k: [] for k in kinds}
    try:
        for n in range(ROUNDS):  # interleaved, so machine noise hits every series alike
            for kind, prov in [*kinds.items(), ("bubblewrap+egress", kinds["bubblewrap"])]:
                sid = f"ws-{n}-{kind.replace('+', '-')}"
                network = "egress" if kind.endswith("egress") else "none"
                began = time.perf_counter()
                prov.start(spec(sid, network))
                start[kind].append(time.perf_counter() - began)
                if kind in execs:
                    for _ in range(EXECS):
                        began = time.perf_counter()
                        assert prov.exec(sid, "true", 10).returncode == 0
                        execs[kind].append(time.perf_counter() - began)
                prov.stop(sid)
    finally:
        for prov in kinds.values():
            prov.close()
    base_start, base_exec = ms(start["none"]), ms(execs["none"])
    with capsys.disabled():
        print(f"\nsandbox cost, medians of {ROUNDS} rounds ({EXECS} execs of `true` each):")
        for kind, xs in start.items():
            extra = ms(xs) - base_start
            print(f"  create->running {kind:18} {ms(xs):7.1f} ms  "
                  f"({ms(xs) / base_start:4.2f}x unconfined, {extra:+6.1f} ms)")  # fmt: skip
        for kind, xs in execs.items():
            print(f"  exec round trip {kind:18} {ms(xs):7.2f} ms  "
                  f"({ms(xs) / base_exec:4.2f}x unconfined)")  # fmt: skip
        print(f"  isolation: {kinds['bubblewrap'].isolation()}")
