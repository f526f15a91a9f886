"""A Kubently cluster agent as `tether up` runs it (TETHER_CLUSTERS): the real kubectl against
a server speaking the Kubernetes API (tests/fakes/kube.py), reached through the Kubently
target. The cluster's RBAC is modelled by the token the agent holds: it may not read secrets
nor, where a test says so, pod logs."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from tether.agent.kubectl import Kubectl
from tether.core.models import Role
from tether.errors import Unprocessable
from tether.local.stack import LocalStack
from tether.settings import Settings

from tests.fakes.kube import FakeKube
from tests.surfaces.conftest import ADMIN_KEY, ALICE_KEY, target_client

ALICE = {"X-API-Key": ALICE_KEY}


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with FakeKube.cluster(token="admin") as k:
        k.add_token(
            "agent", user="system:serviceaccount:tether-cluster-agent:agent-dev", forbid={"secrets"}
        )
        k.add_token("no-logs", user="system:serviceaccount:x:y", forbid={"secrets", "pods/log"})
        yield k


@pytest.fixture
def kb(tmp_path: Path, kube: FakeKube) -> Iterator[FlaskClient]:
    dev = kube.write_kubeconfig(tmp_path / "dev", token="agent")
    quiet = kube.write_kubeconfig(tmp_path / "quiet", token="no-logs")
    hole = socket.socket()  # a server that accepts and never answers
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)
    stuck = tmp_path / "stuck.yaml"
    stuck.write_text(
        dev.read_text().replace(kube.url, f"https://127.0.0.1:{hole.getsockname()[1]}")
    )
    settings = Settings(
        home=tmp_path / "home",
        api_key=ADMIN_KEY,
        heartbeat_interval=0.5,
        clusters={"dev": str(dev), "quiet": str(quiet), "stuck": str(stuck)},
    )
    stack = LocalStack(settings, sweep_interval=0.2)
    stack.start()
    stack.services.auth.ensure_user("alice", Role.USER)
    stack.services.auth.add_key("alice", ALICE_KEY)
    try:
        yield target_client("kubently")
    finally:
        stack.stop()
        hole.close()


def run(kb: FlaskClient, cluster: str, args: list[str], **more: object) -> tuple[int, dict]:  # type: ignore[type-arg]
    r = kb.post("/debug/execute", headers=ALICE, json={"cluster_id": cluster, "args": args, **more})
    return r.status_code, r.json


def test_kubectl_reads_the_cluster(kb: FlaskClient, kube: FakeKube) -> None:
    assert kb.get("/debug/clusters", headers=ALICE).json["clusters"] == ["dev", "quiet", "stuck"]
    status, body = run(kb, "dev", ["get", "pods", "-A", "-o", "wide"])
    assert status == 200, body
    assert body["success"] is True and body["exit_code"] == 0
    assert "nginx" in body["output"] and "kube-system" in body["output"]
    status, body = run(kb, "dev", ["describe", "node", "node-1"])
    assert status == 200 and "node-1" in body["output"]
    status, body = run(kb, "dev", ["top", "pods"], command_type=None)
    assert status == 200 and body["success"], body


def test_a_follow_runs_until_its_timeout_and_keeps_what_it_read(kb: FlaskClient) -> None:
    started = time.monotonic()
    status, body = run(kb, "dev", ["logs", "-f", "nginx", "--tail=2"], timeout_seconds=2)
    assert status == 200, body
    assert body["status"] == "success" and body["output"].strip()
    assert 1 <= time.monotonic() - started < 2.5  # answered within its timeout


def test_a_command_that_hangs_is_killed_at_its_timeout(kb: FlaskClient) -> None:
    started = time.monotonic()
    status, body = run(kb, "stuck", ["get", "pods"], timeout_seconds=2)
    assert status == 408, body
    assert body["details"]["code"] == "TIMEOUT"
    assert time.monotonic() - started < 2.5
    # No kubectl is left running against the stuck server.
    leftovers = [
        p
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and _cmd(p).startswith("kubectl") and "stuck" in _cmd(p)
    ]
    assert leftovers == []


def _cmd(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_the_clusters_rbac_is_the_second_line(kb: FlaskClient) -> None:
    status, body = run(kb, "quiet", ["logs", "nginx"])
    assert status == 200
    assert body["status"] == "failure" and body["success"] is False
    assert "forbidden" in (body["error"] or "").lower()


def test_the_agent_checks_the_policy_again(tmp_path: Path) -> None:
    kubectl = Kubectl(cache_dir=tmp_path / "cache")
    with pytest.raises(Unprocessable) as refused:
        kubectl.run(["delete", "pod", "nginx"], 5, 1000)
    assert refused.value.details["argument"] == "delete"


def test_output_is_capped_with_a_marker(tmp_path: Path, kube: FakeKube) -> None:
    config = kube.write_kubeconfig(tmp_path / "cfg", token="agent")
    result = Kubectl(cache_dir=tmp_path / "cache", kubeconfig=config).run(
        ["get", "pods", "-A", "-o", "yaml"], 10, 300
    )
    assert result["truncated"] is True
    assert result["output"].endswith("[output truncated at 300 bytes]")
    assert len(result["output"]) < 400


def test_kubectl_sees_none_of_the_agents_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TETHER_JWT_SECRET", "s3cret")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/var/creds.json")
    show_env = tmp_path / "kubectl"
    show_env.write_text("#!/bin/sh\nenv\n")
    show_env.chmod(0o755)
    result = Kubectl(str(show_env), kubeconfig=tmp_path / "cfg").run(["version"], 5, 10_000)
    assert "s3cret" not in result["output"] and "GOOGLE_" not in result["output"]
    assert f"KUBECONFIG={tmp_path / 'cfg'}" in result["output"]
    assert os.environ["TETHER_JWT_SECRET"] == "s3cret"  # the agent's own is untouched
