"""Cloud Run workspaces: the real run_v2 client against a fake Admin API, exec and logs over
real HTTP to the real runtime, the session's storage on fake-gcs-server."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from google.cloud import run_v2, storage
from tether.core.models import Template, WorkspaceInfo, WorkspaceSpec
from tether.errors import Forbidden, Invalid, NotFound, Unavailable
from tether.provision.cloudrun import CloudRunProvisioner, account_id, service_id
from tether.provision.storage import SessionStorage

from tests.fakes.cloudrun import FakeCloudRun
from tests.fakes.iam import FakeIam
from tests.fakes.runtime import RuntimeServer
from tests.provision.conftest import PROJECT, REGION, provisioner

# Cloud Run's rule for service names.
VALID_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
TIMESTAMPED = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ")


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


def spec(sid: str, **template: object) -> WorkspaceSpec:
    return WorkspaceSpec(
        session_id=sid,
        namespace="Team A",
        user="dev@example.com",
        env={"FROM_SPEC": "s"},
        template=Template(
            name="python",
            display_name="Python",
            image="europe-docker.pkg.dev/p/r/workspace:1",
            env={"FROM_TEMPLATE": "t", "PORT": "1234"},
            resources={"cpu": "2000m", "memory": "4Gi"},
            **template,  # type: ignore[arg-type]
        ),
    )


def read_back(fake: FakeCloudRun, info: WorkspaceInfo) -> run_v2.Service:
    """The service as Cloud Run holds it, read with a client of its own."""
    name = f"projects/tether-test/locations/us-central1/services/{info.details['service_name']}"
    return fake.client().get_service(name=name)


@pytest.mark.parametrize(
    "sid",
    [
        "ws-default-default-1756062811-ab12",
        "ws-" + "long-namespace-xx" * 2 + "-" + "a-very-long-user-name" + "-1756062811-ab12",
        "42-starts-with-a-digit",
        "WS_Upper.Case",
        "---",
    ],
)
def test_service_names_are_valid_cloud_run_names(sid: str) -> None:
    name = service_id(sid)
    assert VALID_NAME.fullmatch(name) and len(name) <= 49
    assert service_id(sid) == name, "the same session always maps to the same service"


@pytest.mark.parametrize(
    "sid", ["ws-default-default-1756062811-ab12", "WS_Upper.Case", "---", "x" * 200]
)
def test_identity_ids_are_valid_service_account_ids(sid: str) -> None:
    assert re.fullmatch(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", account_id(sid))
    assert account_id(sid) == account_id(sid) and account_id(sid) != account_id(sid + "1")


def test_sessions_differing_only_in_case_get_different_services() -> None:
    assert service_id("ws-a") != service_id("WS-A")
    assert service_id("ws-" + "x" * 60) != service_id("ws-" + "x" * 61)


def test_start_creates_a_service_from_the_template(
    prov: CloudRunProvisioner, cloudrun: FakeCloudRun, runtime: RuntimeServer
) -> None:
    info = prov.start(spec("ws-one", command="python -m http.server"))

    assert info.url == runtime.url
    assert info.details["service_name"] == "tether-ws-one"
    assert info.details["bucket_name"] == prov.storage.name("ws-one")  # type: ignore[union-attr]
    svc = read_back(cloudrun, info)
    (container,) = svc.template.containers
    assert container.image == "europe-docker.pkg.dev/p/r/workspace:1"
    assert dict(container.resources.limits) == {"cpu": "2", "memory": "4Gi"}
    assert [p.container_port for p in container.ports] == [8080]
    env = {e.name: e.value for e in container.env}
    assert env["FROM_TEMPLATE"] == "t" and env["FROM_SPEC"] == "s"
    assert env["HOME"] == "/home/tether" and env["TETHER_SESSION_ID"] == "ws-one"
    assert env["TETHER_MAIN_COMMAND"] == "python -m http.server"
    assert "PORT" not in env, "Cloud Run sets PORT itself and rejects a service that does"
    assert dict(svc.labels) == {
        "tether-session": "ws-one",
        "tether-namespace": "team-a",
        "tether-user": "dev-example-com",
        "managed-by": "tether",
    }
    # The home is the session's storage prefix, mounted.
    (volume,) = svc.template.volumes
    assert volume.gcs.bucket == prov.storage.bucket_name  # type: ignore[union-attr]
    assert list(volume.gcs.mount_options) == ["only-dir=sessions/ws-one"]
    assert [(m.name, m.mount_path) for m in container.volume_mounts] == [("home", "/home/tether")]
    assert svc.template.scaling.max_instance_count == 1, "a workspace is one machine"


def test_a_workspace_image_runs_every_template(
    cloudrun: FakeCloudRun, store: SessionStorage, iam: FakeIam
) -> None:
    """With TETHER_WORKSPACE_IMAGE, templates whose own image lacks the runtime still serve."""
    prov = CloudRunProvisioner(PROJECT, REGION, client=cloudrun.client(), storage=store,
                               image="europe-docker.pkg.dev/p/tether/workspace:abc",
                               iam=iam.iam_client(),
                               id_token=lambda audience: None, poll_interval=0.01)  # fmt: skip
    try:
        info = prov.start(spec("ws-img"))
        (container,) = read_back(cloudrun, info).template.containers
        assert container.image == "europe-docker.pkg.dev/p/tether/workspace:abc"
    finally:
        prov.close()


def test_start_is_idempotent(prov: CloudRunProvisioner, cloudrun: FakeCloudRun) -> None:
    first = prov.start(spec("ws-twice"))
    again = prov.start(spec("ws-twice"))
    assert again == first
    assert list(cloudrun.services) == [
        "projects/tether-test/locations/us-central1/services/tether-ws-twice"
    ]


def test_start_waits_for_a_rollout_that_is_not_done_at_first(
    prov: CloudRunProvisioner, cloudrun: FakeCloudRun, runtime: RuntimeServer
) -> None:
    cloudrun.pending_polls = 3  # the create operation is done at the third GetOperation
    info = prov.start(spec("ws-slow"))
    assert cloudrun.polls() == 3
    assert info.url == runtime.url, "the URL exists only once the rollout is done"
    assert prov.exec("ws-slow", "echo ready", 10).stdout == "ready\n"


def test_a_duplicate_start_during_creation_returns_the_same_workspace(
    prov: CloudRunProvisioner, cloudrun: FakeCloudRun, store: SessionStorage, iam: FakeIam
) -> None:
    cloudrun.pending_polls, cloudrun.paused = 1, True  # the rollout hangs until released
    other = provisioner(cloudrun, iam, store)  # another agent instance got the same command
    results: dict[str, WorkspaceInfo] = {}
    threads = [
        threading.Thread(target=lambda p=p, k=k: results.update({k: p.start(spec("ws-dup"))}))
        for k, p in (("first", prov), ("duplicate", other))
    ]
    threads[0].start()
    wait_for(lambda: "CreateService" in cloudrun.calls)
    threads[1].start()
    # The duplicate finds the service, without a URL yet, and keeps looking.
    wait_for(lambda: cloudrun.calls.count("GetService") >= 2)
    assert not results
    cloudrun.paused = False
    for t in threads:
        t.join(10)
    other.close()
    assert results["first"] == results["duplicate"]
    assert results["first"].url
    assert len(cloudrun.services) == 1


def test_hibernate_scales_to_zero_and_wake_brings_it_back(
    prov: CloudRunProvisioner, cloudrun: FakeCloudRun
) -> None:
    info = prov.start(spec("ws-nap"))
    revision = read_back(cloudrun, info).generation

    prov.hibernate("ws-nap")
    prov.hibernate("ws-nap")  # idempotent
    svc = read_back(cloudrun, info)
    assert svc.scaling.scaling_mode == run_v2.ServiceScaling.ScalingMode.MANUAL
    assert svc.scaling.manual_instance_count == 0
    assert svc.generation == revision, "the workspace's revision is kept, not replaced"
    with pytest.raises(NotFound):
        prov.exec("ws-nap", "true", 5)

    woke = prov.wake("ws-nap")
    assert woke.url == info.url
    assert (
        read_back(cloudrun, info).scaling.scaling_mode != run_v2.ServiceScaling.ScalingMode.MANUAL
    )
    assert prov.exec("ws-nap", "echo back", 5).stdout == "back\n"
    assert prov.wake("ws-nap") == woke  # idempotent


def test_start_of_a_hibernated_workspace_wakes_it(prov: CloudRunProvisioner) -> None:
    prov.start(spec("ws-restart"))
    prov.hibernate("ws-restart")
    prov.start(spec("ws-restart"))
    assert prov.exec("ws-restart", "echo up", 5).returncode == 0


def test_stop_deletes_the_service_and_its_storage(
    prov: CloudRunProvisioner, cloudrun: FakeCloudRun, bucket: storage.Bucket
) -> None:
    prov.start(spec("ws-gone"))
    prov.start(spec("ws-gone2"))
    bucket.blob("sessions/ws-gone/notes.txt").upload_from_string(b"mine")
    bucket.blob("sessions/ws-gone2/notes.txt").upload_from_string(b"the neighbour's")

    prov.stop("ws-gone")
    prov.stop("ws-gone")  # a missing workspace stops fine

    assert [n.rsplit("/", 1)[-1] for n in cloudrun.services] == ["tether-ws-gone2"]
    left = sorted(b.name for b in bucket.list_blobs())
    assert left == ["sessions/ws-gone2/", "sessions/ws-gone2/notes.txt"]
    with pytest.raises(NotFound):
        prov.exec("ws-gone", "true", 5)
    with pytest.raises(NotFound):
        prov.wake("ws-gone")


def test_exec_runs_in_the_workspace_runtime(
    prov: CloudRunProvisioner, runtime: RuntimeServer
) -> None:
    prov.start(spec("ws-exec"))
    ok = prov.exec("ws-exec", "echo hello; echo oops >&2; pwd", 10)
    assert ok.stdout == f"hello\n{runtime.home}\n"
    assert ok.stderr == "oops\n"
    assert (ok.returncode, ok.success, ok.timed_out) == (0, True, False)

    failed = prov.exec("ws-exec", "exit 3", 10)
    assert (failed.returncode, failed.success) == (3, False)
    with pytest.raises(Invalid, match="command"):
        prov.exec("ws-exec", "", 10)  # refused by the runtime: bad input, not a crash


def test_calls_to_the_workspace_carry_an_id_token_for_its_url(
    cloudrun: FakeCloudRun, store: SessionStorage, runtime: RuntimeServer, iam: FakeIam
) -> None:
    audiences: list[str] = []
    prov = CloudRunProvisioner(
        "tether-test",
        "us-central1",
        client=cloudrun.client(),
        storage=store,
        iam=iam.iam_client(),
        id_token=lambda audience: audiences.append(audience) or "token",
        poll_interval=0.01,
    )
    prov.start(spec("ws-auth"))
    assert prov.exec("ws-auth", "true", 5).success
    prov.logs("ws-auth", 5)
    prov.close()
    assert audiences == [runtime.url, runtime.url]


def test_exec_timeout_is_reported_in_the_result(prov: CloudRunProvisioner) -> None:
    prov.start(spec("ws-slowcmd"))
    result = prov.exec("ws-slowcmd", "echo started; sleep 10", 0.5)
    assert result.timed_out and not result.success
    assert result.returncode == 124
    assert result.stdout == "started\n"
    assert result.duration_ms < 5000


def test_logs_of_a_running_workspace_come_from_its_runtime(
    tmp_path: Path, store: SessionStorage, iam: FakeIam
) -> None:
    runtime = RuntimeServer(tmp_path / "main-home", main="echo first; echo second")
    runtime.start()
    fake = FakeCloudRun(runtime.url)
    fake.start()
    prov = provisioner(fake, iam, store)
    try:
        prov.start(spec("ws-logs"))
        wait_for(lambda: any(line.endswith(" second") for line in prov.logs("ws-logs", 100)))
        lines = prov.logs("ws-logs", 100)
        texts = [line.split(" ", 1)[1] for line in lines]
        assert texts.index("first") < texts.index("second")
        assert all(TIMESTAMPED.match(line) for line in lines)
        assert prov.logs("ws-logs", 1) == lines[-1:]
    finally:
        prov.close()
        fake.stop()
        runtime.stop()


def test_logs_of_a_hibernated_workspace_come_from_its_storage(
    prov: CloudRunProvisioner, bucket: storage.Bucket
) -> None:
    prov.start(spec("ws-sleepy"))
    prov.hibernate("ws-sleepy")
    # What the runtime left in the mounted home when its instance went away.
    log = "".join(f"2025-01-01T00:00:0{i}Z line {i}\n" for i in range(5))
    bucket.blob("sessions/ws-sleepy/.tether/session.log").upload_from_string(log.encode())

    assert prov.logs("ws-sleepy", 2) == [
        "2025-01-01T00:00:03Z line 3",
        "2025-01-01T00:00:04Z line 4",
    ]
    assert len(prov.logs("ws-sleepy", 100)) == 5


def test_a_hibernated_workspace_that_never_logged_has_an_empty_log(
    prov: CloudRunProvisioner,
) -> None:
    prov.start(spec("ws-quiet"))
    prov.hibernate("ws-quiet")
    assert prov.logs("ws-quiet", 10) == []


def test_unknown_workspace_is_not_found(prov: CloudRunProvisioner) -> None:
    for call in (
        lambda: prov.exec("ws-nobody", "true", 5),
        lambda: prov.logs("ws-nobody", 5),
        lambda: prov.hibernate("ws-nobody"),
        lambda: prov.wake("ws-nobody"),
    ):
        with pytest.raises(NotFound):
            call()


def test_permission_denied_is_forbidden(prov: CloudRunProvisioner, cloudrun: FakeCloudRun) -> None:
    prov.start(spec("ws-locked"))
    cloudrun.denied.update({service_id("ws-locked"), service_id("ws-never")})
    with pytest.raises(Forbidden):
        prov.start(spec("ws-never"))
    with pytest.raises(Forbidden):
        prov.exec("ws-locked", "true", 5)
    with pytest.raises(Forbidden):
        prov.stop("ws-locked")


def test_cloud_run_unreachable_is_unavailable(store: SessionStorage, iam: FakeIam) -> None:
    fake = FakeCloudRun()
    fake.start()
    fake.stop()  # its port now refuses connections
    prov = provisioner(fake, iam, store)
    prov.call_timeout = 0.5
    with pytest.raises(Unavailable):
        prov.start(spec("ws-down"))
    with pytest.raises(Unavailable):
        prov.exec("ws-down", "true", 5)


def test_runtime_unreachable_is_unavailable(store: SessionStorage, iam: FakeIam) -> None:
    fake = FakeCloudRun("http://127.0.0.1:9")  # nothing listens there
    fake.start()
    prov = provisioner(fake, iam, store)
    try:
        prov.start(spec("ws-dead"))
        with pytest.raises(Unavailable):
            prov.exec("ws-dead", "true", 5)
        with pytest.raises(Unavailable):
            prov.logs("ws-dead", 5)
    finally:
        prov.close()
        fake.stop()


# -- isolation -------------------------------------------------------------------------------


def test_each_workspace_runs_as_an_identity_of_its_own_granted_only_its_prefix(
    prov: CloudRunProvisioner, cloudrun: FakeCloudRun, iam: FakeIam, store: SessionStorage
) -> None:
    a, b = prov.start(spec("ws-a")), prov.start(spec("ws-b"))
    runs_as = {sid: read_back(cloudrun, info).template.service_account
               for sid, info in (("ws-a", a), ("ws-b", b))}  # fmt: skip
    assert runs_as == {
        "ws-a": f"{account_id('ws-a')}@{PROJECT}.iam.gserviceaccount.com",
        "ws-b": f"{account_id('ws-b')}@{PROJECT}.iam.gserviceaccount.com",
    }
    assert sorted(iam.accounts) == sorted(runs_as.values()), "made by the agent, one each"
    # Its one grant: the object role on the managed folder that is its prefix (what the
    # service mounts); no role on the bucket, the project or another session's folder.
    assert sorted(iam.folders) == [store.folder("ws-a"), store.folder("ws-b")]
    for sid, email in runs_as.items():
        assert store.folder(sid).endswith(f"/managedFolders/{store.prefix(sid)}")
        assert iam.policy(store.folder(sid)) == {
            "roles/storage.objectUser": [f"serviceAccount:{email}"]
        }
    assert set(iam.calls) == {"CreateServiceAccount", "CreateManagedFolder", "SetIamPolicy"}
    # A repeated start (a duplicate command) finds the same identity and grant.
    prov.start(spec("ws-a"))
    assert len(iam.accounts) == 2
    assert iam.policy(store.folder("ws-a")) == {
        "roles/storage.objectUser": [f"serviceAccount:{runs_as['ws-a']}"]
    }


def test_stop_deletes_the_identity_and_its_grant_and_nothing_else(
    prov: CloudRunProvisioner, iam: FakeIam, store: SessionStorage
) -> None:
    prov.start(spec("ws-a"))
    prov.start(spec("ws-b"))
    prov.stop("ws-a")
    prov.stop("ws-a")  # again: nothing left to delete, and no error
    assert list(iam.accounts) == [prov.identity("ws-b")]
    assert list(iam.folders) == [store.folder("ws-b")]


def test_a_workspace_whose_identity_cannot_be_made_is_not_created(
    prov: CloudRunProvisioner, cloudrun: FakeCloudRun, iam: FakeIam
) -> None:
    """The identity comes first: never a service running as the default account."""
    iam.denied.add("CreateServiceAccount")
    with pytest.raises(Forbidden, match="IAM refused"):
        prov.start(spec("ws-x"))
    assert cloudrun.services == {} and "CreateService" not in cloudrun.calls


def test_a_workspace_takes_internal_authenticated_traffic_only(
    prov: CloudRunProvisioner, cloudrun: FakeCloudRun
) -> None:
    svc = read_back(cloudrun, prov.start(spec("ws-in")))
    assert svc.ingress == run_v2.IngressTraffic.INGRESS_TRAFFIC_INTERNAL_ONLY
    assert svc.invoker_iam_disabled is False, "run.invoker is checked on every request"
    assert "SetIamPolicy" not in cloudrun.calls, "no invoker granted, allUsers least of all"


def test_the_execution_environment_follows_the_templates_sandbox(
    prov: CloudRunProvisioner, cloudrun: FakeCloudRun, iam: FakeIam
) -> None:
    gen = run_v2.ExecutionEnvironment
    default = read_back(cloudrun, prov.start(spec("ws-gen2")))
    assert default.template.execution_environment == gen.EXECUTION_ENVIRONMENT_GEN2
    assert [v.name for v in default.template.volumes] == ["home"]

    # gVisor is Cloud Run's first generation, which mounts no Cloud Storage volume: a scratch
    # home runs there; a persistent one is refused before anything is made.
    scratch = spec("ws-gen1", sandbox="gvisor").model_copy(update={"persistent_home": False})
    sandboxed = read_back(cloudrun, prov.start(scratch))
    assert sandboxed.template.execution_environment == gen.EXECUTION_ENVIRONMENT_GEN1
    assert list(sandboxed.template.volumes) == []
    assert sandboxed.template.service_account == prov.identity("ws-gen1")
    with pytest.raises(Invalid, match="persist"):
        prov.start(spec("ws-kept", sandbox="gvisor"))
    assert service_id("ws-kept") not in " ".join(cloudrun.services)
    assert prov.identity("ws-kept") not in iam.accounts


def test_activity_is_the_serving_runtimes_word_and_none_once_hibernated(
    prov: CloudRunProvisioner,
) -> None:
    prov.start(spec("ws-busy"))
    assert prov.exec("ws-busy", "true", 5).success
    found = prov.activity("ws-busy")
    assert found is not None and not found.busy
    assert found.last_activity_source == "exec" and found.last_activity_at is not None
    prov.hibernate("ws-busy")
    assert prov.activity("ws-busy") is None  # nothing runs to ask (and nothing is woken)
    assert prov.activity("ws-unknown") is None
