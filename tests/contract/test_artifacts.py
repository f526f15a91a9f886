"""The ArtifactStore contract, run against every adapter: a directory, Cloud Storage (the real
client against fake-gcs-server) and S3 (boto3 against moto's server, over real HTTP)."""

from __future__ import annotations

import os
import socket
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tether.core.images import build_package, digest_of
from tether.core.models import Principal
from tether.core.ports import ArtifactStore
from tether.errors import Invalid, NotFound, Unavailable
from tether.registry.gcs import GcsArtifacts
from tether.registry.local import DirectoryArtifacts
from tether.registry.s3 import S3Artifacts
from tether.service.images import Images
from tether.store.sqlite import SqliteStore

from tests.fakes.gcs import FakeGcs

SECRET = "s3cr3t-TETHER-do-not-show"  # the dummy S3 secret key: never in an error message


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def s3_client(endpoint: str, attempts: int = 3) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="AKIDTETHERTEST",
        aws_secret_access_key=SECRET,
        config=Config(connect_timeout=1, read_timeout=5, retries={"max_attempts": attempts}),
    )


@pytest.fixture(scope="module")
def gcs() -> Iterator[FakeGcs]:
    server = FakeGcs()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(params=["directory", "gcs", "s3"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def artifacts(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    name = f"tether-{uuid.uuid4().hex[:12]}"
    if kind == "directory":
        return DirectoryArtifacts(tmp_path / "registry")
    if kind == "gcs":
        server: FakeGcs = request.getfixturevalue("gcs")
        client = server.client()
        client.create_bucket(name)
        return GcsArtifacts(name, "images/", client=client)
    endpoint: str = request.getfixturevalue("moto")
    client = s3_client(endpoint)
    client.create_bucket(Bucket=name)
    return S3Artifacts(name, "images", client=client)


@pytest.fixture
def down(kind: str, tmp_path: Path) -> ArtifactStore:
    """The same adapter, its backend unreachable (nothing listens on the port)."""
    url = f"http://127.0.0.1:{free_port()}"
    if kind == "directory":
        blocker = tmp_path / "file"
        blocker.write_bytes(b"")  # a file where the directory should be
        return DirectoryArtifacts(blocker / "registry")
    if kind == "gcs":
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        client = storage.Client(
            project="tether-test",
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": url},
        )
        return GcsArtifacts("tether-down", client=client, deadline=1.0)
    return S3Artifacts("tether-down", client=s3_client(url, attempts=1))


BLOB = b"\x1f\x8b an agent image, or any bytes"
DIGEST = digest_of(BLOB)


def test_put_then_get_and_exists(artifacts: ArtifactStore) -> None:
    assert not artifacts.exists(DIGEST)
    artifacts.put(DIGEST, BLOB)
    assert artifacts.exists(DIGEST)
    assert artifacts.get(DIGEST) == BLOB
    artifacts.ping()


def test_a_second_put_of_a_digest_succeeds_and_changes_nothing(artifacts: ArtifactStore) -> None:
    artifacts.put(DIGEST, BLOB)
    artifacts.put(DIGEST, BLOB)
    assert artifacts.get(DIGEST) == BLOB


def test_bytes_that_are_not_the_digest_are_refused_and_nothing_is_stored(
    artifacts: ArtifactStore,
) -> None:
    with pytest.raises(Invalid) as info:
        artifacts.put(DIGEST, BLOB + b"tampered")
    assert info.value.field == "digest"
    assert not artifacts.exists(DIGEST)
    with pytest.raises(NotFound):
        artifacts.get(DIGEST)


@pytest.mark.parametrize(
    "digest",
    ["", DIGEST[7:], "sha512:" + DIGEST[7:], DIGEST.upper(), DIGEST + "0", "sha256:../../x"],
)
def test_a_digest_not_of_the_form_is_refused(artifacts: ArtifactStore, digest: str) -> None:
    with pytest.raises(Invalid):
        artifacts.put(digest, BLOB)
    with pytest.raises(Invalid):
        artifacts.get(digest)


def test_an_unknown_digest_is_not_found(artifacts: ArtifactStore) -> None:
    with pytest.raises(NotFound):
        artifacts.get(digest_of(b"never stored"))
    assert not artifacts.exists(digest_of(b"never stored"))


def test_a_backend_that_is_down_is_unavailable_naming_no_credential(down: ArtifactStore) -> None:
    for call in (
        lambda: down.put(DIGEST, BLOB),
        lambda: down.get(DIGEST),
        lambda: down.exists(DIGEST),
        down.ping,
    ):
        with pytest.raises(Unavailable) as info:
            call()
        assert SECRET not in str(info.value) and "AKID" not in str(info.value)


def test_blobs_on_disk_are_private(tmp_path: Path) -> None:
    store = DirectoryArtifacts(tmp_path / "registry")
    store.put(DIGEST, BLOB)
    folder = tmp_path / "registry" / "sha256"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / DIGEST[7:]).stat().st_mode) == 0o600
    assert [p.name for p in folder.iterdir()] == [DIGEST[7:]]  # no temporary file left


def test_gcs_and_s3_keep_blobs_under_the_prefix(gcs: FakeGcs, moto: str) -> None:
    bucket = f"tether-{uuid.uuid4().hex[:12]}"
    client = gcs.client()
    client.create_bucket(bucket)
    GcsArtifacts(bucket, "/reg/", client=client).put(DIGEST, BLOB)
    assert [b.name for b in client.list_blobs(bucket)] == [f"reg/sha256/{DIGEST[7:]}"]
    s3 = s3_client(moto)
    s3.create_bucket(Bucket=bucket)
    S3Artifacts(bucket, "reg", client=s3).put(DIGEST, BLOB)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == [f"reg/sha256/{DIGEST[7:]}"]


def test_the_registry_pushes_and_pulls_through_each_store(
    artifacts: ArtifactStore, tmp_path: Path
) -> None:
    """SentinelStacks' push, search and pull on each backend: the bytes a user pulls are the
    bytes pushed; a malformed or oversized package stores nothing."""
    images = Images(SqliteStore(tmp_path / "t.db"), artifacts, max_bytes=64 * 1024)
    alice, bob = Principal(id="alice", username="alice"), Principal(id="bob", username="bob")
    package = build_package("name: probe\nbaseModel: m\ntools: [shell]\n", {"a.txt": b"a"})
    pushed = images.push(alice, package, tag="1")
    assert pushed.digest == digest_of(package) and artifacts.exists(pushed.digest)
    assert [v.ref for v in images.search("probe", 10)[0]] == ["alice/probe:1"]
    assert images.pull(bob, "alice/probe", "1").digest == pushed.digest
    assert images.artifact("alice/probe", "1")[1] == package
    for bad in (b"not a package", build_package("name: big\nbaseModel: m\n",
                                                {"b": os.urandom(70 * 1024)})):  # fmt: skip
        with pytest.raises(Invalid):
            images.push(alice, bad, tag="2")
        assert not artifacts.exists(digest_of(bad))
