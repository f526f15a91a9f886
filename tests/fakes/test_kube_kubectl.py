"""The real `kubectl` against the Kubernetes API server at the wire (tests/fakes/kube.py) with
the sample cluster of kube_data/: every read verb Kubently's cluster agent runs answers as
it would from a cluster, and RBAC (per token) and authentication fail as they would."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.fakes.kube import FakeKube

TOKEN = "admin-token"
VIEWER = "viewer-token"  # what RBAC gives the agent: no secrets
KUBECTL = shutil.which("kubectl") or "kubectl"


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with FakeKube.cluster(token=TOKEN) as server:
        server.add_token(VIEWER, user="system:serviceaccount:kubently:agent", forbid={"secrets"})
        yield server


def env(home: Path) -> dict[str, str]:
    """kubectl caches discovery under $HOME/.kube: each test its own."""
    out = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    out["HOME"] = str(home)
    return out


def kubectl(
    kube: FakeKube, tmp_path: Path, *args: str, token: str = TOKEN, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    config = kube.write_kubeconfig(tmp_path / f"kubeconfig-{token}", token=token)
    done = subprocess.run(
        [KUBECTL, "--kubeconfig", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env(tmp_path),
    )
    if ok:
        assert done.returncode == 0, done.stderr
    return done


class Follow:
    """A long-running kubectl (logs -f, get -w) whose output lines are awaited, never slept
    for; killed at the end."""

    def __init__(self, kube: FakeKube, tmp_path: Path, *args: str) -> None:
        config = kube.write_kubeconfig(tmp_path / "kubeconfig-follow", token=TOKEN)
        self.proc = subprocess.Popen(
            [KUBECTL, "--kubeconfig", str(config), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env(tmp_path),
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def next(self, timeout: float = 20) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output line within {timeout}s") from None

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


def rows(output: str) -> dict[str, list[str]]:
    """A kubectl table by its first column (after NAMESPACE when there is one)."""
    lines = output.strip().splitlines()
    skip = 1 if lines[0].startswith("NAMESPACE") else 0
    return {line.split()[skip]: line.split() for line in lines[1:]}


def test_get_pods_in_all_namespaces(kube: FakeKube, tmp_path: Path) -> None:
    out = kubectl(kube, tmp_path, "get", "pods", "-A").stdout
    assert out.splitlines()[0].split() == [
        "NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE",
    ]  # fmt: skip
    table = rows(out)
    assert table["nginx"][:4] == ["default", "nginx", "1/1", "Running"]
    assert table["crashy"][2:5] == ["0/1", "CrashLoopBackOff", "4"]
    assert table["coredns-5d78c9869d-7hb2n"][0] == "kube-system"
    assert any(call.route == "/api/v1/pods" for call in kube.calls())


def test_get_pods_wide_in_a_namespace(kube: FakeKube, tmp_path: Path) -> None:
    out = kubectl(kube, tmp_path, "get", "pods", "-n", "default", "-o", "wide").stdout
    assert "IP" in out.splitlines()[0] and "NODE" in out.splitlines()[0]
    table = rows(out)
    assert set(table) == {"nginx", "crashy", "web-7d4b9c8f6d-x8k2p", "web-7d4b9c8f6d-q4m7z"}
    assert table["nginx"][5:7] == ["10.8.0.12", "node-1"]


def test_get_one_pod_as_json_and_yaml(kube: FakeKube, tmp_path: Path) -> None:
    pod = json.loads(kubectl(kube, tmp_path, "get", "pod", "nginx", "-o", "json").stdout)
    assert (pod["kind"], pod["metadata"]["name"]) == ("Pod", "nginx")
    assert pod["spec"]["containers"][0]["image"] == "nginx:1.27"
    assert pod["status"]["podIP"] == "10.8.0.12"
    same = yaml.safe_load(kubectl(kube, tmp_path, "get", "pod", "nginx", "-o", "yaml").stdout)
    assert same["metadata"]["uid"] == pod["metadata"]["uid"]
    missing = kubectl(kube, tmp_path, "get", "pod", "nope", ok=False)
    assert missing.returncode != 0
    assert 'Error from server (NotFound): pods "nope" not found' in missing.stderr


def test_selectors_filter_on_the_server(kube: FakeKube, tmp_path: Path) -> None:
    out = kubectl(kube, tmp_path, "get", "pods", "-l", "app=web", "-o", "name").stdout
    assert out.split() == ["pod/web-7d4b9c8f6d-q4m7z", "pod/web-7d4b9c8f6d-x8k2p"]
    out = kubectl(
        kube, tmp_path, "get", "pods", "-A", "--field-selector", "spec.nodeName=node-2", "-o",
        "name",
    ).stdout  # fmt: skip
    assert out.split() == [
        "pod/crashy", "pod/web-7d4b9c8f6d-q4m7z", "pod/coredns-5d78c9869d-7hb2n",
    ]  # fmt: skip
    queries = [call.query for call in kube.calls("/api/v1/")]
    assert {"labelSelector": "app=web"}.items() <= next(
        q for q in queries if "labelSelector" in q
    ).items()
    bad = kubectl(kube, tmp_path, "get", "pods", "--field-selector", "spec.image=x", ok=False)
    assert 'field label not supported: "spec.image"' in bad.stderr


def test_get_deployments(kube: FakeKube, tmp_path: Path) -> None:
    table = rows(kubectl(kube, tmp_path, "get", "deploy").stdout)
    assert table["web"] == ["web", "2/2", "2", "2", table["web"][4]]
    wide = rows(kubectl(kube, tmp_path, "get", "deploy", "-A", "-o", "wide").stdout)
    assert wide["coredns"][0] == "kube-system"
    assert "ghcr.io/tether/web:2.4.1" in wide["web"] and "app=web" in wide["web"]


def test_describe_pod(kube: FakeKube, tmp_path: Path) -> None:
    out = kubectl(kube, tmp_path, "describe", "pod", "crashy").stdout
    assert re.search(r"^Name:\s+crashy$", out, re.M)
    assert re.search(r"^Node:\s+node-2/10\.132\.0\.3$", out, re.M)
    assert re.search(r"Reason:\s+CrashLoopBackOff", out)
    assert re.search(r"Last State:\s+Terminated", out)
    assert re.search(r"Restart Count:\s+4", out)
    assert re.search(r"Warning\s+BackOff\s+.*Back-off restarting failed container app", out)
    pod = kube.get("pods", "default", "crashy")
    assert pod is not None
    uid = pod["metadata"]["uid"]
    # The pod's events are found by its uid, as on a real server.
    assert any(
        f"involvedObject.uid={uid}" in call.query.get("fieldSelector", "")
        for call in kube.calls("/api/v1/namespaces/default/events")
    )


def test_describe_node(kube: FakeKube, tmp_path: Path) -> None:
    out = kubectl(kube, tmp_path, "describe", "node", "node-1").stdout
    assert re.search(r"^Name:\s+node-1$", out, re.M)
    assert re.search(r"HolderIdentity:\s+node-1", out)
    assert re.search(r"^\s+Ready\s+True\s", out, re.M)
    assert "Non-terminated Pods:          (2 in total)" in out
    assert re.search(r"default\s+nginx\s+100m \(2%\)", out)
    assert re.search(r"Normal\s+NodeReady\s+.*Node node-1 status is now: NodeReady", out)


def test_logs_tail_previous_and_timestamps(kube: FakeKube, tmp_path: Path) -> None:
    tail = kubectl(kube, tmp_path, "logs", "nginx", "--tail", "2").stdout.splitlines()
    assert len(tail) == 2 and '"GET /healthz HTTP/1.1" 404' in tail[-1]
    assert kubectl(kube, tmp_path, "logs", "crashy").stdout == "connecting to db:5432\n"
    previous = kubectl(kube, tmp_path, "logs", "crashy", "--previous").stdout
    assert "connect: connection refused" in previous and "exiting with status 1" in previous
    stamped = kubectl(kube, tmp_path, "logs", "nginx", "--timestamps", "--tail=3").stdout
    assert all(
        re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z ", line) for line in stamped.splitlines()
    )
    none = kubectl(kube, tmp_path, "logs", "nginx", "--previous", ok=False)
    assert 'previous terminated container "nginx" in pod "nginx" not found' in none.stderr


def test_logs_follow_streams_new_lines(kube: FakeKube, tmp_path: Path) -> None:
    follow = Follow(kube, tmp_path, "logs", "-f", "nginx", "--tail=2")
    try:
        assert "GET / HTTP/1.1" in follow.next()
        assert "GET /healthz HTTP/1.1" in follow.next()
        kube.append_log("default", "nginx", "GET /after-follow 200")
        assert follow.next() == "GET /after-follow 200"
    finally:
        follow.stop()
    assert kube.calls("/api/v1/namespaces/default/pods/nginx/log")[-1].query["follow"] == "true"


def test_get_watch_shows_changes(kube: FakeKube, tmp_path: Path) -> None:
    follow = Follow(kube, tmp_path, "get", "pods", "-w")
    try:
        assert follow.next().split()[:3] == ["NAME", "READY", "STATUS"]
        seen = {follow.next().split()[0] for _ in range(4)}
        assert "nginx" in seen
        pod = kube.get("pods", "default", "nginx")
        assert pod is not None
        pod["status"]["containerStatuses"][0].update(
            ready=False, state={"terminated": {"exitCode": 137, "reason": "OOMKilled"}}
        )
        kube.put(pod)
        assert follow.next().split()[:3] == ["nginx", "0/1", "OOMKilled"]
    finally:
        follow.stop()


def test_logs_of_a_deployment_pick_one_of_its_pods(kube: FakeKube, tmp_path: Path) -> None:
    done = kubectl(kube, tmp_path, "logs", "deployment/web")
    assert done.stdout.startswith("web 2.4.1 listening on :8080\n")
    assert "Found 2 pods, using pod/web-7d4b9c8f6d-" in done.stderr


def test_top_pods(kube: FakeKube, tmp_path: Path) -> None:
    table = rows(kubectl(kube, tmp_path, "top", "pods").stdout)
    assert table["nginx"] == ["nginx", "2m", "7Mi"]
    assert table["web-7d4b9c8f6d-x8k2p"][1:] == ["15m", "48Mi"]
    every = rows(kubectl(kube, tmp_path, "top", "pods", "-A").stdout)
    assert every["coredns-5d78c9869d-7hb2n"] == [
        "kube-system", "coredns-5d78c9869d-7hb2n", "3m", "21Mi",
    ]  # fmt: skip


def test_top_nodes(kube: FakeKube, tmp_path: Path) -> None:
    table = rows(kubectl(kube, tmp_path, "top", "nodes").stdout)
    assert table["node-1"] == ["node-1", "183m", "4%", "1650Mi", "12%"]
    assert table["node-2"][1] == "96m"


def test_events(kube: FakeKube, tmp_path: Path) -> None:
    out = kubectl(kube, tmp_path, "events").stdout
    assert out.splitlines()[0].split()[:3] == ["LAST", "SEEN", "TYPE"]
    assert re.search(r"\(x12 over \S+\)\s+Warning\s+BackOff\s+Pod/crashy", out)
    assert re.search(r"Normal\s+Scheduled\s+Pod/nginx\s+Successfully assigned", out)


def test_get_events(kube: FakeKube, tmp_path: Path) -> None:
    out = kubectl(kube, tmp_path, "get", "events").stdout
    assert re.search(r"Warning\s+BackOff\s+pod/crashy\s+Back-off restarting", out)
    assert re.search(r"Normal\s+ScalingReplicaSet\s+deployment/web", out)
    warnings = kubectl(
        kube, tmp_path, "get", "events", "-A", "--field-selector", "type=Warning"
    ).stdout.splitlines()
    assert warnings[0].split()[:3] == ["NAMESPACE", "LAST", "SEEN"]
    assert sorted((line.split()[0], line.split()[3]) for line in warnings[1:]) == [
        ("default", "BackOff"),
        ("kube-system", "Unhealthy"),
    ]


def test_version(kube: FakeKube, tmp_path: Path) -> None:
    out = kubectl(kube, tmp_path, "version").stdout
    assert "Client Version: v1.32" in out and "Server Version: v1.32.4" in out


def test_api_resources_and_versions(kube: FakeKube, tmp_path: Path) -> None:
    resources = kubectl(kube, tmp_path, "api-resources").stdout.splitlines()
    assert resources[0].split() == ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    listed = {tuple(line.split()) for line in resources[1:]}
    assert ("pods", "po", "v1", "true", "Pod") in listed
    assert ("deployments", "deploy", "apps/v1", "true", "Deployment") in listed
    assert ("nodes", "metrics.k8s.io/v1beta1", "false", "NodeMetrics") in listed
    versions = kubectl(kube, tmp_path, "api-versions").stdout.split()
    assert versions == [
        "apps/v1", "coordination.k8s.io/v1", "events.k8s.io/v1", "metrics.k8s.io/v1beta1", "v1",
    ]  # fmt: skip


def test_explain(kube: FakeKube, tmp_path: Path) -> None:
    out = kubectl(kube, tmp_path, "explain", "pods.spec").stdout
    assert re.search(r"^KIND:\s+Pod$", out, re.M) and re.search(r"^VERSION:\s+v1$", out, re.M)
    assert "FIELD: spec <PodSpec>" in out
    assert "containers\t<[]Container> -required-" in out
    deploy = kubectl(kube, tmp_path, "explain", "deployment.spec.replicas").stdout
    assert re.search(r"^GROUP:\s+apps$", deploy, re.M) and "FIELD: replicas <integer>" in deploy


def test_secrets_are_forbidden_to_a_token_without_the_permission(
    kube: FakeKube, tmp_path: Path
) -> None:
    denied = kubectl(kube, tmp_path, "get", "secrets", token=VIEWER, ok=False)
    assert denied.returncode != 0 and denied.stdout == ""
    assert (
        "Error from server (Forbidden): secrets is forbidden: User "
        '"system:serviceaccount:kubently:agent" cannot list resource "secrets" in API group "" '
        'in the namespace "default"'
    ) in denied.stderr
    one = kubectl(kube, tmp_path, "get", "secret", "db-password", "-o", "yaml", token=VIEWER,
                  ok=False)  # fmt: skip
    assert 'secrets "db-password" is forbidden' in one.stderr
    assert "aHVudGVy" not in one.stdout + one.stderr
    # The same token reads everything else; a token with the permission sees the secret.
    assert "nginx" in kubectl(kube, tmp_path, "get", "pods", token=VIEWER).stdout
    assert "db-password" in kubectl(kube, tmp_path, "get", "secrets").stdout


def test_a_wrong_token_is_unauthorized(kube: FakeKube, tmp_path: Path) -> None:
    done = kubectl(kube, tmp_path, "get", "pods", token="not-a-token", ok=False)
    assert done.returncode != 0 and done.stdout == ""
    # What kubectl says when discovery, its first call, gets a 401.
    assert (
        "error: You must be logged in to the server "
        "(the server has asked for the client to provide credentials)"
    ) in done.stderr
    assert not any(call.route.startswith("/api/v1/namespaces") for call in kube.calls())


def test_the_python_client_reaches_the_same_cluster_over_tls(kube: FakeKube) -> None:
    from kubernetes import client

    api = client.CoreV1Api(kube.client(TOKEN))
    names = [p.metadata.name for p in api.list_namespaced_pod("kube-system").items if p.metadata]
    assert names == ["coredns-5d78c9869d-7hb2n"]
    assert kube.url.startswith("https://127.0.0.1:")
