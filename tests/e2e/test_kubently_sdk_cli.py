"""Kubently from `tether.sdk` and `tether kubectl`, against `tether up` running a cluster agent
(TETHER_CLUSTERS) whose real kubectl reads a server speaking the Kubernetes API
(tests/fakes/kube.py): what a user sees — the pods table, kubectl's exit codes, a timeout, a
refusal in one line, a command held for an admin, debug sessions ended on leaving the block —
and the README's Kubently examples, run as written."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tether import errors
from tether.sdk import AsyncClient, Client

from tests.e2e.conftest import Server, start_server
from tests.e2e.test_readme import Block, blocks, ran_as_written
from tests.e2e.test_readme import run as run_block
from tests.fakes.kube import FakeKube
from tests.waiting import wait_for

PODS_HEADER = "NAMESPACE     NAME"


@pytest.fixture(scope="module")
def kube() -> Iterator[FakeKube]:
    with FakeKube.cluster(token="admin") as k:
        k.add_token("agent", user="system:serviceaccount:tether-cluster-agent:agent-dev",
                    forbid={"secrets"})  # fmt: skip
        yield k


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, kube: FakeKube) -> Iterator[Server]:
    """`tether up` with two clusters: `dev` (the fake API server) and `stuck` (a server that
    accepts connections and never answers)."""
    tmp = tmp_path_factory.mktemp("kubently-sdk")
    dev = kube.write_kubeconfig(tmp / "dev.yaml", token="agent")
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)
    stuck = tmp / "stuck.yaml"
    stuck.write_text(
        dev.read_text().replace(kube.url, f"https://127.0.0.1:{hole.getsockname()[1]}")
    )
    srv = start_server(
        tmp / "home",
        {
            "TETHER_CLUSTERS": f"dev={dev},stuck={stuck}",
            "TETHER_RATE_LIMITS": "create=1000,api=10000,commands=1000",
        },
    )
    try:
        assert wait_for(lambda: _connected(srv, "dev") and _connected(srv, "stuck"), 60)
        yield srv
    finally:
        srv.stop()
        hole.close()


def _connected(server: Server, cluster: str) -> bool:
    r = httpx.get(f"{server.url}/debug/clusters/{cluster}", headers={"X-API-Key": server.key})
    return r.status_code == 200 and bool(r.json()["connected"])


@pytest.fixture(scope="module")
def key(server: Server) -> str:
    """The API key of `sre`, a user who is not an admin (the admin approves)."""
    admin = {"Authorization": f"Bearer {server.key}"}
    with httpx.Client(base_url=server.url, timeout=30) as c:
        user = {"username": "sre", "password": "pw-sre-12345", "email": "sre@example.com"}
        assert c.post("/api/v1/users", json=user, headers=admin).status_code == 201
        login = c.post("/api/v1/auth/login", json={"username": "sre", "password": "pw-sre-12345"})
        bearer = {"Authorization": f"Bearer {login.json()['token']}"}
        made = c.post("/api/v1/api-keys", json={"name": "kubectl"}, headers=bearer)
        assert made.status_code == 201, made.text
        return str(made.json()["key"])


@pytest.fixture
def client(server: Server, key: str) -> Iterator[Client]:
    with Client(server.url, key) as c:
        yield c


def tether(
    server: Server, key: str, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "tether.cli.main", *args]
    return subprocess.run(argv, env=cli_env(server, key), input="", capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def cli_env(server: Server, key: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    return {**env, "TETHER_URL": server.url, "TETHER_API_KEY": key}


def one_line(stderr: str) -> str:
    assert stderr.startswith("tether: ") and stderr.count("\n") == 1, stderr
    return stderr


# -- the SDK ----------------------------------------------------------------------------------


def test_kubectl_returns_kubectls_result(client: Client) -> None:
    assert client.clusters() == ["dev", "stuck"]
    assert client.cluster("dev")["connected"] is True
    pods = client.kubectl("dev", "get", "pods", "-A")
    assert pods["success"] is True and pods["exit_code"] == 0 and pods["status"] == "success"
    assert pods["output"].startswith(PODS_HEADER) and "coredns" in pods["output"]
    # No namespace: the server's default; one given: used where the args name none.
    assert "coredns" not in client.kubectl("dev", "get", "pods")["output"]
    assert "coredns" in client.kubectl("dev", "get", "pods", namespace="kube-system")["output"]
    # kubectl failing is a result, with kubectl's error and exit code, not an exception.
    missing = client.kubectl("dev", "get", "pod", "no-such-pod")
    assert missing["success"] is False and missing["exit_code"] == 1
    assert 'pods "no-such-pod" not found' in missing["error"] and missing["output"] == ""
    # What happened is an operation too.
    done = client.operation(missing["operation_id"])
    assert done["status"] == "completed" and done["result"]["exit_code"] == 1


def test_refusals_timeouts_and_unknown_clusters_raise_the_sdks_errors(client: Client) -> None:
    with pytest.raises(errors.Unprocessable) as refused:
        client.kubectl("dev", "delete", "pod", "nginx")
    assert refused.value.details["code"] == "COMMAND_FORBIDDEN"
    assert refused.value.details["argument"] == "delete" and "'delete'" in refused.value.message
    with pytest.raises(errors.Unprocessable) as piped:
        client.kubectl("dev", "get", "pods", "|", "wc", "-l")
    assert piped.value.details["argument"] == "|" and "pipes" in piped.value.message
    started = time.monotonic()
    with pytest.raises(errors.Timeout) as late:
        client.kubectl("stuck", "get", "pods", timeout=2)
    assert late.value.details["code"] == "TIMEOUT" and late.value.details["operation_id"]
    assert time.monotonic() - started < 10
    with pytest.raises(errors.NotFound):
        client.kubectl("no-such-cluster", "get", "pods")
    with pytest.raises(errors.Invalid):
        client.kubectl("dev")  # no arguments: nothing is sent


def test_a_debug_session_counts_its_commands_and_ends_with_the_block(client: Client) -> None:
    with client.debug_session("dev", ttl=120) as s:
        assert s.info["status"] == "active" and s.cluster == "dev"
        nodes = s.kubectl("get", "nodes")
        assert nodes["session_id"] == s.id and "node-1" in nodes["output"]
        assert s.kubectl("describe", "pod", "nginx")["success"]
        assert s.refresh()["command_count"] == 2
    assert client.get_debug_session(s.id)["status"] == "ended"
    with pytest.raises(errors.Conflict):  # an ended session runs nothing more
        s.kubectl("get", "pods")


def test_a_debug_session_is_ended_when_the_block_raises(client: Client) -> None:
    with pytest.raises(errors.Unprocessable), client.debug_session("dev") as s:
        s.kubectl("get", "pods")
        s.kubectl("exec", "nginx", "--", "sh")
    assert client.get_debug_session(s.id)["status"] == "ended"
    with pytest.raises(KeyError), client.debug_session("dev") as other:
        raise KeyError("the caller's own")
    assert client.get_debug_session(other.id)["status"] == "ended"


def test_the_async_twin(server: Server, key: str) -> None:
    async def main() -> tuple[str, list[str]]:
        async with AsyncClient(server.url, key) as client:
            clusters = await client.clusters()
            with pytest.raises(RuntimeError):
                async with client.debug_session("dev") as s:
                    pods = await s.kubectl("get", "pods", "-A")
                    assert pods["output"].startswith(PODS_HEADER)
                    missing = await s.kubectl("get", "pod", "no-such-pod")
                    assert missing["exit_code"] == 1
                    assert (await s.refresh())["command_count"] == 2
                    raise RuntimeError("boom")
            queued = await client.kubectl_async("dev", "get", "nodes")
            result = await client.kubectl_result(queued["operation_id"], wait=30)
            assert "node-2" in result["output"]
            with pytest.raises(errors.Timeout):
                await client.kubectl("stuck", "get", "pods", timeout=1)
            return (await client.get_debug_session(s.id))["status"], clusters

    status, clusters = asyncio.run(main())
    assert status == "ended" and clusters == ["dev", "stuck"]


# -- the approval gate ------------------------------------------------------------------------


@pytest.fixture
def held(server: Server) -> Iterator[httpx.Client]:
    """`describe` needs an admin's approval while a test runs; yields the admin's client."""
    admin = httpx.Client(base_url=server.url, headers={"X-API-Key": server.key}, timeout=30)
    assert admin.put("/admin/approval-rules", json={"verbs": ["describe"]}).status_code == 200
    try:
        yield admin
    finally:
        for op in admin.get("/admin/approvals").json()["operations"]:
            admin.post(f"/debug/operations/{op['operation_id']}/deny")
        admin.put("/admin/approval-rules", json={"verbs": [], "namespaces": []})
        admin.close()


def decide_next(admin: httpx.Client, verdict: str) -> threading.Thread:
    """An admin who approves (or denies) the next held command once it is waiting."""

    def waiting() -> str | None:
        ops = admin.get("/admin/approvals").json()["operations"]
        return str(ops[0]["operation_id"]) if ops else None

    def decide() -> None:
        assert wait_for(waiting, 60)
        op = waiting()
        assert admin.post(f"/debug/operations/{op}/{verdict}").status_code == 200

    thread = threading.Thread(target=decide, daemon=True)
    thread.start()
    return thread


def test_kubectl_waits_for_an_admins_decision(client: Client, held: httpx.Client) -> None:
    approver = decide_next(held, "approve")
    described = client.kubectl("dev", "describe", "pod", "nginx", wait=60)
    approver.join(60)
    assert described["success"] is True and "Name:" in described["output"]
    assert client.operation(described["operation_id"])["decided_by"] == "admin"

    denier = decide_next(held, "deny")
    with pytest.raises(errors.Forbidden) as denied:
        client.kubectl("dev", "describe", "node", "node-1", wait=60)
    denier.join(60)
    assert denied.value.details["code"] == "DENIED" and "denied by admin" in denied.value.message

    # wait=0: the held command at once; a short wait that runs out says it is still queued.
    now = client.kubectl("dev", "describe", "pod", "nginx", wait=0)
    assert now["status"] == "awaiting_approval" and now["poll_url"].endswith(now["operation_id"])
    with pytest.raises(errors.Timeout) as late:
        client.kubectl_result(now["operation_id"], wait=0.5)
    assert late.value.details["code"] == "AWAITING_APPROVAL"
    assert client.operation(now["operation_id"])["status"] == "awaiting_approval"


def test_the_cli_waits_for_an_admin(server: Server, key: str, held: httpx.Client) -> None:
    approver = decide_next(held, "approve")
    done = tether(server, key, "kubectl", "dev", "--", "describe", "pod", "nginx")
    approver.join(60)
    assert done.returncode == 0, done.stderr
    assert "Name:" in done.stdout and "nginx" in done.stdout
    assert "waits for an admin's approval" in done.stderr

    denier = decide_next(held, "deny")
    refused = tether(server, key, "kubectl", "dev", "--", "describe", "pod", "nginx")
    denier.join(60)
    assert refused.returncode == 126 and "denied by admin" in refused.stderr.splitlines()[-1]


def test_ctrl_c_leaves_the_held_command_queued(
    server: Server, key: str, held: httpx.Client
) -> None:
    cli = subprocess.Popen([sys.executable, "-m", "tether.cli.main", "kubectl", "dev", "--",
                            "describe", "pod", "nginx"], env=cli_env(server, key),
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)  # fmt: skip
    said = bytearray()

    def read() -> None:
        assert cli.stderr is not None
        while chunk := os.read(cli.stderr.fileno(), 4096):
            said.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert wait_for(lambda: b"waits for an admin" in said, 60), said
        cli.send_signal(signal.SIGINT)
        assert cli.wait(60) == 130
    finally:
        if cli.poll() is None:
            cli.kill()
    reader.join(10)
    ops = held.get("/admin/approvals").json()["operations"]
    assert len(ops) == 1 and ops[0]["command"][:3] == ["describe", "pod", "nginx"]
    op = ops[0]["operation_id"]
    assert f"left operation {op} queued" in said.decode()
    shown = tether(server, key, "operation", op)
    assert shown.returncode == 0 and '"status": "awaiting_approval"' in shown.stdout


# -- the CLI ----------------------------------------------------------------------------------


def test_cli_prints_kubectls_output_and_exits_with_its_code(server: Server, key: str) -> None:
    pods = tether(server, key, "kubectl", "dev", "--", "get", "pods", "-A")
    assert pods.returncode == 0, pods.stderr
    lines = pods.stdout.splitlines()
    assert lines[0].startswith(PODS_HEADER)
    assert any(line.split()[:2] == ["default", "nginx"] for line in lines)
    assert any(line.split()[:1] == ["kube-system"] for line in lines)
    assert pods.stderr == ""
    ns = tether(server, key, "kubectl", "dev", "-n", "kube-system", "--", "get", "pods")
    assert ns.returncode == 0 and "coredns" in ns.stdout and "nginx" not in ns.stdout

    missing = tether(server, key, "kubectl", "dev", "--", "get", "pod", "no-such-pod")
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr == 'Error from server (NotFound): pods "no-such-pod" not found\n'


def test_cli_timeout_refusal_and_its_own_failures(server: Server, key: str) -> None:
    started = time.monotonic()
    late = tether(server, key, "kubectl", "--timeout", "2", "stuck", "--", "get", "pods")
    assert late.returncode == 124, late
    assert "timed out" in one_line(late.stderr) and time.monotonic() - started < 20

    refused = tether(server, key, "kubectl", "dev", "--", "delete", "pod", "x")
    assert refused.returncode == 126 and refused.stdout == ""
    assert one_line(refused.stderr).startswith("tether: refused: kubectl 'delete' is not allowed")

    unknown = tether(server, key, "kubectl", "nope", "--", "get", "pods")
    assert unknown.returncode == 125 and "nope" in one_line(unknown.stderr)
    no_key = tether(server, "", "kubectl", "dev", "--", "get", "pods")
    assert no_key.returncode == 125 and "TETHER_API_KEY" in one_line(no_key.stderr)
    usage = tether(server, key, "kubectl", "--timeout", "99", "dev", "--", "get", "pods")
    assert usage.returncode == 2 and "1 to 30" in usage.stderr


def test_cli_runs_in_a_session_and_lists_clusters(server: Server, key: str, client: Client) -> None:
    listed = tether(server, key, "clusters")
    assert listed.returncode == 0
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert [r[:3] for r in rows] == [
        ["dev", "connected", "tether"],
        ["stuck", "connected", "tether"],
    ]
    with client.debug_session("dev") as s:
        ran = tether(server, key, "kubectl", "--session", s.id, "dev", "--", "get", "deployments")
        assert ran.returncode == 0 and "web" in ran.stdout
        assert s.refresh()["command_count"] == 1
    help_text = tether(server, key, "kubectl", "--help").stdout
    assert (
        "124" in help_text
        and "126" in help_text
        and "tether kubectl dev -- get pods -A" in help_text
    )


# -- the README -------------------------------------------------------------------------------

README_BLOCKS = [b for b in blocks() if b.note and Path(__file__).name in b.note]


def test_the_readme_shows_kubently_examples() -> None:
    assert {b.lang for b in README_BLOCKS} == {"python", "bash"}


@pytest.mark.parametrize("block", README_BLOCKS, ids=str)
def test_readme_example_runs_as_written(block: Block, server: Server) -> None:
    ran_as_written(block, run_block(block, server))
