"""Per-session storage: the real google-cloud-storage client against fake-gcs-server."""

from __future__ import annotations

import pytest
from google.cloud import storage
from tether.errors import Invalid, NotFound, Unavailable
from tether.provision.storage import SessionStorage


def names(bucket: storage.Bucket) -> list[str]:
    return sorted(b.name for b in bucket.list_blobs())


def test_ensure_marks_the_session_prefix_and_is_idempotent(
    store: SessionStorage, bucket: storage.Bucket
) -> None:
    assert store.ensure("ws-1") == f"gs://{bucket.name}/sessions/ws-1/"
    bucket.blob("sessions/ws-1/work.txt").upload_from_string(b"kept")
    assert store.ensure("ws-1") == store.name("ws-1")
    assert names(bucket) == ["sessions/ws-1/", "sessions/ws-1/work.txt"]
    assert bucket.blob("sessions/ws-1/work.txt").download_as_bytes() == b"kept"


def test_delete_removes_every_object_under_the_prefix_only(
    store: SessionStorage, bucket: storage.Bucket
) -> None:
    store.ensure("ws-1")
    for name in ("a.txt", ".tether/session.log", "deep/er/file"):
        bucket.blob(f"sessions/ws-1/{name}").upload_from_string(b"x")
    bucket.blob("sessions/ws-10/file").upload_from_string(b"a neighbour sharing the prefix text")
    bucket.blob("elsewhere").upload_from_string(b"not a session's")

    assert store.delete("ws-1") == 4
    assert names(bucket) == ["elsewhere", "sessions/ws-10/file"]
    assert store.delete("ws-1") == 0, "deleting what is gone succeeds"


@pytest.mark.parametrize("sid", ["../escape", "a/b", "", ".hidden", "x..y"])
def test_session_ids_cannot_leave_their_prefix(
    store: SessionStorage, bucket: storage.Bucket, sid: str
) -> None:
    bucket.blob("keep").upload_from_string(b"x")
    for call in (store.ensure, store.delete, store.name):
        with pytest.raises(Invalid):
            call(sid)
    assert names(bucket) == ["keep"]


def test_read_tail_returns_whole_lines(store: SessionStorage, bucket: storage.Bucket) -> None:
    bucket.blob("sessions/ws-1/log").upload_from_string(b"alpha\nbravo\ncharlie\n")
    assert store.read_tail("ws-1", "log", 1 << 20) == b"alpha\nbravo\ncharlie\n"
    assert store.read_tail("ws-1", "log", 10) == b"charlie\n"  # "o\ncharlie\n": no fragment
    assert store.read_tail("ws-1", "log", 8) == b"charlie\n"  # exactly a line boundary
    with pytest.raises(NotFound):
        store.read_tail("ws-1", "missing", 10)


def test_a_missing_bucket_is_unavailable(gcs_client: storage.Client) -> None:
    store = SessionStorage("tether-no-such-bucket", client=gcs_client)
    with pytest.raises(Unavailable):
        store.ensure("ws-1")
    with pytest.raises(Unavailable):
        store.delete("ws-1")
