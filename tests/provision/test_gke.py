"""GKE workspaces: the real `kubernetes` client against a Kubernetes API server at the wire
(tests/fakes/kube.py) that enforces the agent's Role from infra/k8s, and the real workspace
runtime on loopback standing in for the pod behind each Service."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from google.cloud import storage
from tether.core.models import Template, WorkspaceSpec
from tether.errors import Forbidden, NotFound, Timeout, Unavailable
from tether.provision.gke import GkeProvisioner
from tether.provision.gke_manifests import HOME, names, pod_manifest
from tether.provision.storage import SessionStorage
from tether.runtime import auth

from tests.fakes.kube import FakeKube
from tests.fakes.runtime import RuntimeServer

ROOT = Path(__file__).resolve().parents[2]
NS = "tether-workspaces"
IMAGE = "us-docker.pkg.dev/tether-test/workspaces/python:3.11"
STAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ")


def agent_role() -> dict[str, Any]:
    docs = yaml.safe_load_all((ROOT / "infra/k8s/10-rbac.yaml").read_text())
    return next(d for d in docs if d["kind"] == "Role")


def spec(sid: str = "s1", **kw: Any) -> WorkspaceSpec:
    template = Template(
        name="python",
        display_name="Python",
        image=IMAGE,
        env={"GREETING": "hi"},
        command="python -m http.server 9000",
    )
    return WorkspaceSpec(
        session_id=sid, template=template, namespace="ml-training", user="researcher", **kw
    )


def eventually(check: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    role = agent_role()
    with FakeKube(
        (NS,),
        ready_delay=0.15,
        termination_delay=0.15,
        rules=role["rules"],
        rules_namespace=role["metadata"]["namespace"],
    ) as server:
        yield server


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[RuntimeServer]:
    """The runtime a workspace pod would run, its main process already logging."""
    server = RuntimeServer(tmp_path / "home", main="echo hello from the main process")
    server.start()
    eventually(lambda: (server.home / ".tether/session.log").exists())
    yield server
    server.stop()


@pytest.fixture
def nowhere() -> Iterator[str]:
    """A loopback address that refuses connections: a Service without a ready endpoint."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, never listening: connecting is refused
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def provisioner(kube: FakeKube, ws: RuntimeServer, nowhere: str, **kw: Any) -> GkeProvisioner:
    def route(session_id: str) -> str:
        # What cluster DNS and kube-proxy do for the agent: the Service leads to the runtime
        # only while a Ready pod backs it.
        return ws.url if kube.ready_endpoint(NS, names(session_id).service) else nowhere

    kw.setdefault("start_timeout", 10)
    return GkeProvisioner(NS, api=kube.client(), runtime_url=route, **kw)


@pytest.fixture
def gke(kube: FakeKube, ws: RuntimeServer, nowhere: str) -> Iterator[GkeProvisioner]:
    p = provisioner(kube, ws, nowhere)
    yield p
    p.close()


def test_start_creates_pod_service_and_home_and_returns_once_the_pod_is_ready(
    gke: GkeProvisioner, kube: FakeKube
) -> None:
    t0 = time.monotonic()
    info = gke.start(spec("s1"))
    elapsed = time.monotonic() - t0
    n = names("s1")
    assert info.url == f"http://{n.service}.{NS}.svc.cluster.local:8080"
    assert info.details == {
        "pod_name": n.pod,
        "service_name": n.service,
        "pvc_name": n.pvc,
        "k8s_namespace": NS,
    }
    pod = kube.get("pods", NS, n.pod)
    assert pod is not None and pod["status"]["phase"] == "Running", "start waited for Running"
    assert elapsed >= kube.ready_delay
    # Listed while Pending, then watched from that list's resourceVersion until Ready.
    watches = [path for _, path, verb in kube.requests if verb == "watch"]
    assert watches and "fieldSelector=metadata.name%3D" + n.pod in watches[0]
    assert "resourceVersion=" in watches[0]
    # What the cluster got is exactly the generated manifest (test_gke_manifests validates it).
    assert pod["spec"] == pod_manifest(spec("s1"), NS)["spec"]
    container = pod["spec"]["containers"][0]
    assert container["image"] == IMAGE
    assert {"name": "GREETING", "value": "hi"} in container["env"]
    assert container["resources"] == {
        "requests": {"cpu": "1000m", "memory": "1Gi", "ephemeral-storage": "2Gi"},
        "limits": {"cpu": "1000m", "memory": "1Gi", "ephemeral-storage": "2Gi"},
    }
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert {"name": "home", "persistentVolumeClaim": {"claimName": n.pvc}} in pod["spec"]["volumes"]
    assert pod["metadata"]["labels"]["tether-session"] == "s1"
    assert pod["metadata"]["labels"]["tether-namespace"] == "ml-training"
    assert pod["metadata"]["labels"]["tether-user"] == "researcher"
    assert kube.get("persistentvolumeclaims", NS, n.pvc) is not None
    assert kube.ready_endpoint(NS, n.service), "the Service selects the pod"
    assert gke.exec("s1", "echo ready", 10).stdout == "ready\n", "usable as soon as started"


def test_start_lists_again_when_the_watch_history_has_expired(
    gke: GkeProvisioner, kube: FakeKube
) -> None:
    kube.expire_watches = 1  # the first watch from the list's resourceVersion gets 410 Gone
    gke.start(spec("s1"))
    pod = kube.get("pods", NS, names("s1").pod)
    assert pod is not None and pod["status"]["phase"] == "Running"
    verbs = [verb for _, _, verb in kube.requests if verb in ("list", "watch")]
    # Listed again after the 410; a watch after that only if the pod was not running yet.
    assert verbs[:3] == ["list", "watch", "list"]


def test_start_is_idempotent(gke: GkeProvisioner, kube: FakeKube) -> None:
    first = gke.start(spec("s1"))
    again = gke.start(spec("s1"))
    assert again == first
    n = names("s1")
    assert kube.names("pods", NS) == [n.pod]
    assert kube.names("services", NS) == [n.service]
    assert kube.names("persistentvolumeclaims", NS) == [n.pvc]


def test_odd_session_ids_and_user_names_still_make_valid_objects(
    gke: GkeProvisioner, kube: FakeKube
) -> None:
    # The fake refuses invalid names and labels with 422, as the API server does.
    odd = "Team_A/Session.42:" + "x" * 80
    odd_spec = spec(odd).model_copy(update={"namespace": "ML Training!", "user": "r@example.com"})
    info = gke.start(odd_spec)
    assert len(info.details["service_name"]) <= 63
    pod = kube.get("pods", NS, info.details["pod_name"])
    assert pod is not None
    assert pod["metadata"]["annotations"]["tether.dev/session-id"] == odd
    labels = pod["metadata"]["labels"]
    assert labels["tether-namespace"].startswith("ML-Training")
    assert labels["tether-user"].startswith("r-example.com")
    # Ids that differ only where names are lossy still get workspaces of their own.
    assert names("Case").pod != names("case").pod
    assert gke.exec(odd, "echo ok", 10).stdout == "ok\n"


def test_with_the_workspace_image_every_template_runs_from_it(
    kube: FakeKube, ws: RuntimeServer, nowhere: str
) -> None:
    image = "europe-docker.pkg.dev/tether-test/tether/workspace:abc123"
    # TETHER_WORKSPACE_SERVICE_ACCOUNT may hold the Cloud Run workspaces' Google account,
    # which cannot name a pod's account: the pod runs as the namespace default instead.
    email = "tether-workspace@tether-test.iam.gserviceaccount.com"
    gke = provisioner(kube, ws, nowhere, image=image, service_account=email)
    gke.start(spec("s1"))
    pod = kube.get("pods", NS, names("s1").pod)
    assert pod is not None
    (container,) = pod["spec"]["containers"]
    assert container["image"] == image
    # Its entrypoint (tini, which reaps orphaned processes) stays; only its arguments change.
    assert "command" not in container and container["args"][:3] == [
        "python",
        "-m",
        "tether.runtime",
    ]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["TETHER_MAIN_COMMAND"] == spec("s1").template.command
    assert "serviceAccountName" not in pod["spec"]


def test_without_a_persistent_home_there_is_no_claim(gke: GkeProvisioner, kube: FakeKube) -> None:
    info = gke.start(spec("s1", persistent_home=False))
    assert "pvc_name" not in info.details
    assert kube.names("persistentvolumeclaims", NS) == []
    pod = kube.get("pods", NS, names("s1").pod)
    assert pod is not None
    assert {"name": "home", "emptyDir": {"sizeLimit": "10Gi"}} in pod["spec"]["volumes"]


def test_hibernate_deletes_the_pod_but_keeps_home_and_log_and_wake_brings_it_back(
    gke: GkeProvisioner, kube: FakeKube
) -> None:
    gke.start(spec("s1"))
    n = names("s1")
    log = gke.logs("s1", 50)
    assert any(line.endswith("hello from the main process") for line in log)
    gke.hibernate("s1")
    eventually(lambda: kube.get("pods", NS, n.pod) is None)
    assert kube.get("services", NS, n.service) is not None
    assert kube.get("persistentvolumeclaims", NS, n.pvc) is not None
    with pytest.raises(NotFound):
        gke.exec("s1", "true", 5)
    assert gke.logs("s1", 50) == log, "a hibernated workspace still has its log"
    assert gke.logs("s1", 1) == log[-1:]
    gke.hibernate("s1")  # again: nothing more to do, and the kept log stays
    assert gke.logs("s1", 50) == log

    info = gke.wake("s1")
    assert info == gke.start(spec("s1"))
    pod = kube.get("pods", NS, n.pod)
    assert pod is not None and pod["status"]["phase"] == "Running"
    assert {"name": "home", "persistentVolumeClaim": {"claimName": n.pvc}} in pod["spec"]["volumes"]
    assert gke.exec("s1", "echo back", 10).stdout == "back\n"


def test_wake_right_after_hibernate_waits_for_the_old_pod_to_terminate(
    gke: GkeProvisioner, kube: FakeKube
) -> None:
    gke.start(spec("s1"))
    n = names("s1")
    old = kube.get("pods", NS, n.pod)
    gke.hibernate("s1")
    terminating = kube.get("pods", NS, n.pod)
    assert terminating is not None and "deletionTimestamp" in terminating["metadata"]
    gke.wake("s1")  # its create meets the terminating pod (409) and must not take it for ours
    pod = kube.get("pods", NS, n.pod)
    assert old is not None and pod is not None
    assert pod["metadata"]["uid"] != old["metadata"]["uid"]
    assert pod["status"]["phase"] == "Running" and "deletionTimestamp" not in pod["metadata"]
    assert gke.exec("s1", "echo awake", 10).stdout == "awake\n"


def test_stop_removes_everything_and_stopping_again_succeeds(
    gke: GkeProvisioner, kube: FakeKube
) -> None:
    gke.start(spec("s1"))
    gke.stop("s1")
    assert kube.names("services", NS) == []
    assert kube.names("persistentvolumeclaims", NS) == []
    eventually(lambda: kube.names("pods", NS) == [])
    gke.stop("s1")
    gke.stop("never-started")
    for call in (
        lambda: gke.exec("s1", "true", 5),
        lambda: gke.logs("s1", 10),
        lambda: gke.hibernate("s1"),
        lambda: gke.wake("s1"),
    ):
        with pytest.raises(NotFound):
            call()


def test_exec_reports_output_exit_code_and_timeout(gke: GkeProvisioner) -> None:
    gke.start(spec("s1"))
    r = gke.exec("s1", "echo out; echo err >&2; exit 3", 10)
    assert (r.stdout, r.returncode, r.success, r.timed_out) == ("out\n", 3, False, False)
    assert "err" in r.stderr
    t0 = time.monotonic()
    slow = gke.exec("s1", "sleep 5; echo never", 0.5)
    assert slow.timed_out and slow.returncode == 124 and not slow.success
    assert "never" not in slow.stdout
    assert time.monotonic() - t0 < 4, "the command was stopped at its timeout"


def test_logs_come_from_the_workspace_runtime(gke: GkeProvisioner) -> None:
    gke.start(spec("s1"))
    lines = gke.logs("s1", 100)
    assert lines and all(STAMPED.match(line) for line in lines)
    assert any(line.endswith("hello from the main process") for line in lines)
    assert gke.logs("s1", 1) == lines[-1:]
    with pytest.raises(NotFound):
        gke.logs("unknown", 10)


def test_a_call_rbac_forbids_is_forbidden(gke: GkeProvisioner, kube: FakeKube) -> None:
    kube.forbid("create", "pods")
    with pytest.raises(Forbidden) as caught:
        gke.start(spec("s1"))
    assert 'cannot create resource "pods"' in caught.value.message


def test_api_server_errors_and_outages_are_unavailable(
    gke: GkeProvisioner, kube: FakeKube, ws: RuntimeServer, nowhere: str
) -> None:
    gke.start(spec("s1"))
    kube.fail("get", "services", 503)
    with pytest.raises(Unavailable):
        gke.hibernate("s1")
    kube.fail("create", "pods", 500)
    with pytest.raises(Unavailable):
        gke.start(spec("s2"))

    from kubernetes import client

    down = GkeProvisioner(NS, api=client.ApiClient(client.Configuration(host=nowhere)))
    with pytest.raises(Unavailable):
        down.start(spec("s3"))
    outside = GkeProvisioner(NS)  # the in-cluster default, loaded on first use: not here
    with pytest.raises(Unavailable) as caught:
        outside.stop("s1")
    assert "in-cluster" in caught.value.message
    elsewhere = GkeProvisioner("no-such-namespace", api=kube.client())
    kube.rules = None  # past RBAC, to the namespace check
    with pytest.raises(Unavailable) as caught:
        elsewhere.start(spec("s4"))
    assert "no-such-namespace" in caught.value.message


def test_an_image_that_cannot_be_pulled_fails_fast_and_leaves_no_pod(
    gke: GkeProvisioner, kube: FakeKube
) -> None:
    kube.broken_images.add(IMAGE)
    t0 = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        gke.start(spec("s1"))
    assert "ImagePullBackOff" in caught.value.message
    assert time.monotonic() - t0 < 3, "not after the whole start timeout"
    eventually(lambda: kube.names("pods", NS) == [])
    assert kube.names("services", NS) == [names("s1").service], "kept for a retry"


def test_a_pod_that_cannot_be_scheduled_times_out_with_the_reason(
    kube: FakeKube, ws: RuntimeServer, nowhere: str
) -> None:
    kube.schedulable = False
    gke = provisioner(kube, ws, nowhere, start_timeout=1)
    with pytest.raises(Timeout) as caught:
        gke.start(spec("s1"))
    assert "Unschedulable" in caught.value.message and "Insufficient cpu" in caught.value.message
    eventually(lambda: kube.names("pods", NS) == [])


def test_the_agent_role_grants_exactly_what_the_provisioner_uses(
    gke: GkeProvisioner, kube: FakeKube
) -> None:
    """Every call goes through the Role in infra/k8s (the fixture enforces it); a full
    lifecycle must use each verb it grants, or the grant is more than least privilege."""
    gke.start(spec("s1"))
    gke.exec("s1", "true", 5)
    gke.hibernate("s1")
    gke.logs("s1", 5)
    gke.wake("s1")
    gke.stop("s1")
    granted = {
        (verb, resource)
        for rule in agent_role()["rules"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert kube.used == granted


def test_what_the_cluster_gets_keeps_every_isolation_field(
    gke: GkeProvisioner, kube: FakeKube
) -> None:
    """Through the real client's models and over the wire: nothing the generator sets (the
    security contexts, the sandbox, the network label) is lost on the way."""
    template = spec().template.model_copy(
        update={
            "sandbox": "gvisor",
            "network": "egress",
            "resources": {"cpu": "2", "memory": "2Gi"},
        }
    )
    gke.start(spec("s1").model_copy(update={"template": template}))
    pod = kube.get("pods", NS, names("s1").pod)
    assert pod is not None
    assert pod["metadata"]["labels"]["tether.dev/network"] == "egress"
    assert pod["spec"]["runtimeClassName"] == "gvisor"
    assert pod["spec"]["tolerations"][0]["key"] == "sandbox.gke.io/runtime"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["spec"]["automountServiceAccountToken"] is False
    (container,) = pod["spec"]["containers"]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["limits"] == {
        "cpu": "2",
        "memory": "2Gi",
        "ephemeral-storage": "2Gi",
    }


def test_session_storage_is_not_mounted_and_pods_get_no_google_identity(
    kube: FakeKube, ws: RuntimeServer, nowhere: str, store: SessionStorage, bucket: storage.Bucket
) -> None:
    """Cloud Storage FUSE in a pod needs the metadata server, which workspaces may not reach:
    an agent given a bucket still runs pods with nothing but their own volume."""
    # The account as terraform names it ("namespace/name").
    account = "tether-workspaces/tether-workspace"
    gke = provisioner(kube, ws, nowhere, storage=store, service_account=account)
    info = gke.start(spec("s1"))
    assert "bucket_name" not in info.details
    pod = kube.get("pods", NS, names("s1").pod)
    assert pod is not None and pod["spec"]["serviceAccountName"] == "tether-workspace"
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["home"]
    assert "gke-gcsfuse/volumes" not in pod["metadata"]["annotations"]
    assert not list(bucket.list_blobs()), "nothing made in the bucket for it"
    gke.stop("s1")


def test_importing_the_provisioner_loads_no_kubernetes_client() -> None:
    code = "import sys, json, tether.provision.gke; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded = [m for m in json.loads(out) if m.startswith(("kubernetes", "google.cloud.storage"))]
    assert loaded == [], "the client is imported on first use, not with the module"


def test_the_pod_command_starts_the_runtime_with_the_templates_main_process(
    tmp_path: Path,
) -> None:
    """The container's command, run here as the image would run it (the home mounted at a
    temporary directory, this interpreter as the image's python, a free port for 8080)."""
    template = spec("s1").template.model_copy(update={"command": "echo main says $GREETING"})
    pod = pod_manifest(spec("s1").model_copy(update={"template": template}))
    (container,) = pod["spec"]["containers"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = str(tmp_path)
    args = [a.replace(HOME, home) for a in container["command"]]
    args = [sys.executable if a == "python" else a for a in args]
    args[args.index("--port") + 1] = str(port)
    env = {e["name"]: e["value"].replace(HOME, home) for e in container["env"]}
    env |= {"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(p for p in sys.path if p)}
    proc = subprocess.Popen(args, env=env, cwd=home, stdout=subprocess.DEVNULL)
    try:
        log = tmp_path / ".tether/session.log"
        eventually(lambda: log.exists() and "main says hi" in log.read_text(), timeout=10)
        # And the runtime answers the readiness probe's path on the pod's port.
        eventually(lambda: _health(port), timeout=10)
    finally:
        proc.terminate()
        proc.wait(5)


def _health(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_each_runtime_is_given_its_sessions_token_and_the_agent_sends_it(
    kube: FakeKube, tmp_path: Path, nowhere: str
) -> None:
    """No front end checks who calls a pod (Google's does for a Cloud Run service): the runtime
    asks for its session's token, which the pod is given and the agent (and the relay, with
    the same key) sends. Another session's token, or none, opens nothing."""
    key = "k" * 64
    token = auth.token_for(key, "s1")
    guarded = RuntimeServer(tmp_path / "home", token=token)
    guarded.start()
    try:
        agent = provisioner(kube, guarded, nowhere, runtime_key=key)
        info = agent.start(spec("s1"))
        assert info.url == f"http://{names('s1').service}.{NS}.svc.cluster.local:8080"
        (container,) = kube.get("pods", NS, names("s1").pod)["spec"]["containers"]
        assert {"name": auth.ENV, "value": token} in container["env"]
        assert agent.exec("s1", "echo in", 10).stdout == "in\n"
        assert agent.logs("s1", 5) is not None
        assert agent.activity("s1") is not None
        for refused in (httpx.post(guarded.url + "/exec", json={"command": "id"}),
                        httpx.post(guarded.url + "/exec", json={"command": "id"},
                                   headers={auth.HEADER: auth.token_for(key, "s2")})):  # fmt: skip
            assert refused.status_code == 401, refused.text
        # The kubelet's readiness probe carries no credential: /health answers it all the same.
        assert httpx.get(guarded.url + "/health").status_code == 200
        stranger = provisioner(kube, guarded, nowhere, runtime_key="other" * 10)
        with pytest.raises((Forbidden, Unavailable)):
            stranger.exec("s1", "echo in", 10)
        stranger.close()
        agent.close()
    finally:
        guarded.stop()


def test_a_workspace_service_is_headless_and_named_in_the_clusters_domain(
    kube: FakeKube, ws: RuntimeServer, nowhere: str
) -> None:
    """Its name resolves to the ready pod's own address, which a VPC-native cluster routes from
    the VPC (the relay's side), where a cluster IP would answer inside the cluster only."""
    gke = provisioner(kube, ws, nowhere, cluster_domain="tether.internal")
    info = gke.start(spec("s1"))
    gke.close()
    assert info.url == f"http://{names('s1').service}.{NS}.svc.tether.internal:8080"
    service = kube.get("services", NS, names("s1").service)
    assert service["spec"]["clusterIP"] == "None"
