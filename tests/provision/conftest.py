"""Cloud Run and Cloud Storage at the wire: the real client libraries against a fake Cloud Run
Admin API (gRPC), a fake IAM and Storage Control API (gRPC), fake-gcs-server, and the real
workspace runtime on loopback."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.cloud import storage
from tether.provision.cloudrun import CloudRunProvisioner
from tether.provision.storage import SessionStorage

from tests.fakes.cloudrun import FakeCloudRun
from tests.fakes.gcs import FakeGcs
from tests.fakes.iam import FakeIam
from tests.fakes.runtime import RuntimeServer

PROJECT = "tether-test"
REGION = "us-central1"


@pytest.fixture(scope="session")
def gcs() -> Iterator[FakeGcs]:
    server = FakeGcs()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gcs_client(gcs: FakeGcs) -> storage.Client:
    return gcs.client(PROJECT)


@pytest.fixture
def bucket(gcs_client: storage.Client) -> storage.Bucket:
    """A fresh bucket per test (terraform makes the real one)."""
    return gcs_client.create_bucket(f"tether-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def iam() -> Iterator[FakeIam]:
    fake = FakeIam()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def store(bucket: storage.Bucket, gcs_client: storage.Client, iam: FakeIam) -> SessionStorage:
    return SessionStorage(bucket.name, client=gcs_client, control=iam.control_client())


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[RuntimeServer]:
    server = RuntimeServer(tmp_path / "home")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def cloudrun(runtime: RuntimeServer) -> Iterator[FakeCloudRun]:
    fake = FakeCloudRun(runtime.url)
    fake.start()
    yield fake
    fake.stop()


def provisioner(
    fake: FakeCloudRun, iam: FakeIam, store: SessionStorage | None = None
) -> CloudRunProvisioner:
    return CloudRunProvisioner(
        PROJECT,
        REGION,
        client=fake.client(),
        storage=store,
        id_token=lambda audience: None,  # the runtime on loopback wants no Google ID token
        iam=iam.iam_client(),
        poll_interval=0.01,
        call_timeout=2.0,
    )


@pytest.fixture
def prov(
    cloudrun: FakeCloudRun, store: SessionStorage, iam: FakeIam
) -> Iterator[CloudRunProvisioner]:
    p = provisioner(cloudrun, iam, store)
    yield p
    p.close()
