"""Files on the real runtime app: a big upload and download streamed both ways with matching
digests, entries as lstat sees them, and the documented answers for what is wrong."""

from __future__ import annotations

import hashlib
import os
import resource
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.fakes.runtime import RuntimeServer

MiB = 1 << 20


def generated(size: int, digest: hashlib._Hash) -> Iterator[bytes]:
    """`size` bytes made as they are sent (never whole in memory), hashed into `digest`."""
    block = os.urandom(MiB)
    for i in range(size // MiB):
        chunk = block[i % 251 :] + block[: i % 251]  # no two chunks alike
        digest.update(chunk)
        yield chunk


def test_a_big_file_goes_up_and_comes_back_the_same(runtime: RuntimeServer) -> None:
    size, sent = 64 * MiB, hashlib.sha256()
    url = f"{runtime.url}/files/content"
    with httpx.Client(timeout=60) as client:
        r = client.put(url, params={"path": "deep/er/big.bin"}, content=generated(size, sent))
        assert r.status_code == 201, r.text
        stored = runtime.home / "deep/er/big.bin"
        assert r.json() == {"path": str(stored), "size": size, "sha256": sent.hexdigest()}
        assert os.listdir(stored.parent) == ["big.bin"]  # no temp file left beside it
        assert oct(stored.stat().st_mode & 0o777) == "0o644"
        got = hashlib.sha256()
        with client.stream("GET", url, params={"path": "deep/er/big.bin"}) as down:
            assert down.status_code == 200
            assert down.headers["content-type"] == "application/octet-stream"
            assert down.headers["content-length"] == str(size)
            for chunk in down.iter_raw():
                got.update(chunk)
    assert got.hexdigest() == sent.hexdigest()


def test_entries_are_lstat_and_sorted(runtime: RuntimeServer) -> None:
    home = runtime.home
    (home / "b.txt").write_text("hello")
    (home / "a").mkdir()
    (home / "c").symlink_to(home / "a")
    (home / "dangling").symlink_to(home / "nowhere")
    os.chmod(home / "b.txt", 0o640)
    listed = httpx.get(f"{runtime.url}/files", params={"path": "."}).json()
    assert listed["path"] == str(home) and listed["truncated"] is False
    kinds = [(e["name"], e["type"]) for e in listed["entries"]]
    assert kinds == [("a", "dir"), ("b.txt", "file"), ("c", "symlink"), ("dangling", "symlink")]
    b = httpx.get(f"{runtime.url}/files/stat", params={"path": "b.txt"}).json()
    assert (b["size"], b["mode"], b["path"]) == (5, "0640", str(home / "b.txt"))
    assert b["modified"].endswith("Z")
    link = httpx.get(f"{runtime.url}/files/stat", params={"path": str(home / "c")}).json()
    assert link["type"] == "symlink"
    # removing a link to a directory removes the link, not what it leads to
    assert httpx.delete(f"{runtime.url}/files", params={"path": "c"}).status_code == 200
    assert (home / "a").is_dir() and not (home / "c").exists()


def test_what_is_wrong_gets_its_status_and_code(runtime: RuntimeServer) -> None:
    (runtime.home / "full" / "inner").mkdir(parents=True)
    (runtime.home / "file").write_text("x")
    url = runtime.url
    cases = [
        ("GET", "/files/stat", {}, 400, "INVALID_PATH"),
        ("GET", "/files/stat", {"path": "missing"}, 404, "FILE_NOT_FOUND"),
        ("GET", "/files/content", {"path": "missing"}, 404, "FILE_NOT_FOUND"),
        ("GET", "/files/content", {"path": "full"}, 400, "NOT_A_FILE"),
        ("GET", "/files", {"path": "file"}, 400, "NOT_A_DIRECTORY"),
        ("DELETE", "/files", {"path": "full"}, 409, "DIRECTORY_NOT_EMPTY"),
        ("DELETE", "/files", {"path": "missing"}, 404, "FILE_NOT_FOUND"),
        ("POST", "/files/mkdir", {"path": "file"}, 409, "FILE_EXISTS"),
        ("PUT", "/files/content", {"path": "full"}, 400, "NOT_A_FILE"),
    ]
    for method, path, params, status, code in cases:
        r = httpx.request(
            method, url + path, params=params, content=b"x" if method == "PUT" else None
        )
        assert (r.status_code, r.json()["code"]) == (status, code), (method, path, params)
        assert r.json()["detail"].startswith("path")
    assert os.listdir(runtime.home / "full") == ["inner"]  # the refused upload left nothing
    r = httpx.delete(f"{url}/files", params={"path": "full", "recursive": "true"})
    assert r.status_code == 200 and r.json() == {"deleted": str(runtime.home / "full")}
    for _ in range(2):  # a directory that exists already is fine
        r = httpx.post(f"{url}/files/mkdir", params={"path": "made/here"})
        assert r.status_code == 201 and r.json()["type"] == "dir"


def test_a_fifo_is_no_file_to_read(runtime: RuntimeServer) -> None:
    os.mkfifo(runtime.home / "pipe")
    r = httpx.get(f"{runtime.url}/files/content", params={"path": "pipe"}, timeout=10)
    assert (r.status_code, r.json()["code"]) == (400, "NOT_A_FILE")


def test_an_upload_past_the_bound_is_413_and_leaves_nothing(tmp_path: Path) -> None:
    runtime = RuntimeServer(tmp_path / "home", max_bytes=MiB)
    runtime.start()
    try:
        url = f"{runtime.url}/files/content"
        declared = httpx.put(url, params={"path": "a/big"}, content=b"x" * (MiB + 1))
        streamed = httpx.put(url, params={"path": "a/big"}, content=iter([b"x" * MiB, b"y"]))
        fits = httpx.put(url, params={"path": "a/fits"}, content=b"x" * MiB)
        for r in (declared, streamed):
            assert (r.status_code, r.json()["code"]) == (413, "FILE_TOO_LARGE")
        assert fits.status_code == 201
        assert os.listdir(runtime.home / "a") == ["fits"]
    finally:
        runtime.stop()


def test_the_file_size_limit_is_413_too(runtime: RuntimeServer) -> None:
    """EFBIG (a file past RLIMIT_FSIZE: Python ignores SIGXFSZ, so the write fails)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4 * MiB, hard))
    try:
        r = httpx.put(
            f"{runtime.url}/files/content", params={"path": "f"}, content=b"x" * (8 * MiB)
        )
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert (r.status_code, r.json()["code"]) == (413, "FILE_TOO_LARGE")
    assert os.listdir(runtime.home) == []
