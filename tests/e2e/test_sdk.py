"""The SDK's typed calls (`tether.sdk.Client` and its async twin) against `tether up`, as a user
of the SDK notices them: sessions made, found by metadata, paused, resumed, extended, deleted
on leaving a `with` block; commands whose output arrives while they run; background processes
that outlive their call and die with their session; files streamed both ways without being
held in memory; a server in the workspace reached by its URL."""

from __future__ import annotations

import asyncio
import hashlib
import os
import resource
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from tether import errors
from tether.sdk import AsyncClient, BackgroundProcess, Client, CommandFailed, SessionInfo

from tests.e2e.conftest import Server, free_port, start_server
from tests.waiting import wait_for


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("sdk") / "home")
    yield srv
    srv.stop()


@pytest.fixture
def client(stack: Server) -> Iterator[Client]:
    with Client(stack.url, stack.key) as made:
        yield made


def ended(client: Client, session_id: str) -> bool:
    try:
        return client.connect(session_id).info().status in ("terminating", "terminated")
    except errors.NotFound:
        return True


def test_a_session_is_made_found_by_its_metadata_and_deleted_on_leaving(client: Client) -> None:
    suite = uuid.uuid4().hex[:12]
    kept = client.create("shell", name="kept", metadata={"suite": suite, "team": "web"},
                         keep=True)  # fmt: skip
    assert kept.info().metadata == {"name": "kept", "suite": suite, "team": "web"}
    with client.create("shell", metadata={"suite": suite, "team": "ml"}) as s:
        info = s.info()
        assert isinstance(info, SessionInfo) and info.id == s.id
        assert info.status == "running" and info.template == "shell"
        assert info.metadata == {"suite": suite, "team": "ml"}
        assert info.created_at and info.expires_at and info.created_at < info.expires_at
        assert info.last_activity_at is not None and info.last_activity_source
        assert {i.id for i in client.list(metadata={"suite": suite})} == {s.id, kept.id}
        assert [i.id for i in client.list(metadata={"suite": suite, "team": "ml"})] == [s.id]
        assert client.list(metadata={"suite": suite, "team": "nobody"}) == []
        # A handle on it by its id reads the same session.
        assert client.connect(s.id).info().metadata["team"] == "ml"
    assert ended(client, s.id)
    # keep=True: left running after its block; a connected handle's block leaves it too.
    with kept, client.connect(kept.id) as again:
        assert again.info().status == "running"
    assert kept.info().status == "running"
    kept.delete()
    assert ended(client, kept.id)
    assert [i.id for i in client.list(metadata={"suite": suite})] == []


def test_pause_resume_extend_and_set_timeout(client: Client) -> None:
    with client.create("shell") as s:
        assert s.execute("echo before > kept.txt")["returncode"] == 0
        assert s.pause().status == "hibernated" and s.info().status == "hibernated"
        assert s.resume().status == "running"
        assert s.execute("cat kept.txt")["stdout"] == "before\n"  # files outlive a pause
        expires = s.info().expires_at
        assert expires is not None
        assert s.extend(10).expires_at == expires + timedelta(minutes=10)
        soon = s.set_timeout(120).expires_at
        assert soon is not None
        assert abs(soon - (datetime.now(UTC) + timedelta(seconds=120))) < timedelta(seconds=30)
        with pytest.raises(errors.Invalid):
            s.extend(0)


def test_what_cannot_be_done_is_an_error_of_the_tree(client: Client, stack: Server) -> None:
    with pytest.raises(errors.NotFound):
        client.connect("ws-no-such-session")
    with pytest.raises(errors.NotFound):
        client.create("no-such-template")
    stranger = Client(stack.url, "tether_wrongkey0001_" + "0" * 32)
    with stranger, pytest.raises(errors.Unauthenticated):
        stranger.list()


def test_the_async_client_has_the_same_session_calls(stack: Server) -> None:
    suite = uuid.uuid4().hex[:12]

    async def go() -> str:
        async with AsyncClient(stack.url, stack.key) as client:
            async with client.create("shell", metadata={"suite": suite}) as s:
                assert (await s.info()).metadata == {"suite": suite}
                assert [i.id for i in await client.list(metadata={"suite": suite})] == [s.id]
                assert (await s.pause()).status == "hibernated"
                assert (await s.resume()).status == "running"
                assert (await s.extend(5)).expires_at is not None
                again = await client.connect(s.id)
                assert (await again.info()).status == "running"
            kept = await client.create("shell", keep=True)
            async with kept:
                pass
            assert (await kept.info()).status == "running"
            await kept.delete()
            assert await client.list(metadata={"suite": suite}) == []
            return s.id

    with Client(stack.url, stack.key) as client:
        assert ended(client, asyncio.run(go()))


# -- commands: streamed output, exit codes, background processes -------------------------------


def test_run_streams_output_to_the_callbacks_while_the_command_runs(client: Client) -> None:
    with client.create("shell") as s:
        seen: list[tuple[str, str]] = []

        def out(text: str) -> None:
            seen.append(("out", text))
            if "waiting" in text:  # the command goes on only once this arrives
                s.files.write("go", "")

        # Had the output come at the end, the command would wait out its timeout.
        result = s.run(
            "echo waiting; while [ ! -e go ]; do sleep 0.02; done; echo done; echo oops >&2",
            on_stdout=out,
            on_stderr=lambda text: seen.append(("err", text)),
            timeout=60,
        )
        assert not result.timed_out and result.exit_code == 0 and result.check() is result
        assert result.stdout == "waiting\ndone\n" and result.stderr == "oops\n"
        assert "".join(t for k, t in seen if k == "out") == result.stdout
        assert ("err", "oops\n") in seen
        assert result.duration_ms > 0


def test_run_gives_exit_codes_env_cwd_stdin_and_timeouts(client: Client) -> None:
    with client.create("shell") as s:
        failed = s.run("echo partial; echo broken >&2; exit 3")
        assert failed.exit_code == 3 and failed.stdout == "partial\n" and not failed.ok
        with pytest.raises(CommandFailed, match="exited with 3: broken") as raised:
            failed.check()
        assert raised.value.result == failed
        s.files.mkdir("work/here")
        ran = s.run('echo "$WHO in $PWD"; cat', envs={"WHO": "sdk"}, cwd="work/here",
                    stdin="from stdin\n")  # fmt: skip
        assert ran.stdout.splitlines() == [f"sdk in {s.files.stat('work/here').path}",
                                           "from stdin"]  # fmt: skip
        slow = s.run("echo started; sleep 30", timeout=1)
        assert slow.timed_out and slow.exit_code == 124 and slow.stdout == "started\n"
        with pytest.raises(CommandFailed, match="timed out"):
            slow.check()


def marked(marker: str) -> list[int]:
    """Host pids of processes whose command line holds `marker` (a workspace's processes are
    processes of this machine)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:  # ended while we looked
            pass
    return found


def test_a_background_process_outlives_its_run_and_dies_with_the_session(
    client: Client,
) -> None:
    marker = f"marker{uuid.uuid4().hex[:8]}"
    s = client.create("shell", keep=True)
    try:
        sleeper = s.run(f"exec -a {marker} sleep 600", background=True)
        assert isinstance(sleeper, BackgroundProcess)
        assert sleeper.info().running and wait_for(lambda: marked(marker))
        echo = s.run("read line; echo got $line; echo bye >&2; exit 4", background=True)
        assert {p.pid for p in s.processes() if p.running} >= {sleeper.pid, echo.pid}
        echo.send_stdin("hello\n")
        heard: list[str] = []
        result = echo.wait(on_stdout=heard.append)
        assert (result.stdout, result.stderr, result.exit_code) == ("got hello\n", "bye\n", 4)
        assert "".join(heard) == "got hello\n"
        ended_one = echo.info()
        assert ended_one.status == "exited" and ended_one.exit_code == 4
        assert ended_one.ended_at is not None
        with pytest.raises(errors.Conflict):
            echo.send_stdin("too late")
        assert sleeper.info().running  # untouched by the other's end
    finally:
        s.delete()
    assert wait_for(lambda: not marked(marker))  # the session took it with it


def test_a_background_process_can_be_killed(client: Client) -> None:
    with client.create("shell") as s:
        proc = s.run("trap 'echo terminated; exit 7' TERM; touch ready; "
                     "while true; do sleep 0.05; done", background=True)  # fmt: skip
        assert wait_for(lambda: s.files.exists("ready"))  # its trap is set
        proc.kill()
        result = proc.wait()
        assert result.exit_code == 7 and "terminated" in result.stdout
        assert not proc.info().running


# -- files --------------------------------------------------------------------------------------


def test_files_read_write_list_stat_remove(client: Client) -> None:
    with client.create("shell") as s:
        written = s.files.write("notes/today.txt", "héllo\n")
        assert written.size == len("héllo\n".encode()) and written.path.endswith("today.txt")
        assert s.files.read("notes/today.txt") == "héllo\n".encode()
        assert s.files.read_text("notes/today.txt") == "héllo\n"
        s.files.write("notes/raw.bin", bytes(range(256)))
        assert s.files.read("notes/raw.bin") == bytes(range(256))
        assert s.run("cat notes/today.txt").stdout == "héllo\n"  # the command sees it
        assert s.files.mkdir("notes/sub").is_dir
        listed = s.files.list("notes")
        assert [(e.name, e.type) for e in listed] == [
            ("raw.bin", "file"), ("sub", "dir"), ("today.txt", "file")]  # fmt: skip
        stat = s.files.stat("notes/raw.bin")
        assert stat.size == 256 and stat.type == "file" and stat.path == listed[0].path
        s.run("ln -s today.txt notes/link")
        assert s.files.stat("notes/link").type == "symlink"  # described, not followed
        with pytest.raises(errors.Conflict):
            s.files.remove("notes")
        s.files.remove("notes/raw.bin")
        assert not s.files.exists("notes/raw.bin") and s.files.exists("notes/today.txt")
        s.files.remove("notes", recursive=True)
        with pytest.raises(errors.NotFound):
            s.files.read("notes/today.txt")
        with pytest.raises(errors.NotFound):
            s.files.list("notes")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


MIB = 1024 * 1024


def test_a_100_mib_file_goes_up_and_down_streamed(client: Client, tmp_path: Path) -> None:
    """100 MiB is more than one request carries (32 MiB): it goes up in parts, joined in the
    workspace."""
    mib = 100
    source, back = tmp_path / "big.bin", tmp_path / "back" / "big.bin"
    back.parent.mkdir()
    with source.open("wb") as f:
        for _ in range(mib):
            f.write(os.urandom(MIB))
    with client.create("shell") as s:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        told: list[tuple[int, int | None]] = []
        up = s.files.upload(source, "data/big.bin", progress=lambda *sent: told.append(sent))
        assert up.size == mib * MIB and up.sha256 == sha256_of(source)
        # Progress told a MiB at a time, to the end, never past the size.
        assert len(told) >= mib and told[-1] == (mib * MIB, mib * MIB)
        assert max(sent for sent, _ in told) == mib * MIB
        assert s.files.stat("data/big.bin").size == mib * MIB
        assert [e.name for e in s.files.list("data")] == ["big.bin"]  # no pieces left
        assert s.run("sha256sum < data/big.bin").stdout.split()[0] == up.sha256
        told.clear()
        assert s.files.download("data/big.bin", back, lambda *got: told.append(got)) == back
        assert told[-1] == (mib * MIB, mib * MIB) and len(told) >= mib
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak
    assert sha256_of(back) == up.sha256
    assert [p.name for p in back.parent.iterdir()] == ["big.bin"]  # no partial file left
    # Held whole, the file would have grown the test process by its size at least.
    assert grown < 16 * 1024, f"the test process grew by {grown} KiB moving {mib} MiB"


# -- ports --------------------------------------------------------------------------------------


def test_get_url_reaches_a_server_in_the_workspace(client: Client, stack: Server) -> None:
    port = free_port()
    with client.create("python") as s:
        s.files.write("site/index.html", "hello from the workspace\n")
        s.run(f"cd site && exec python3 -m http.server {port} --bind 127.0.0.1",
              background=True)  # fmt: skip
        url = s.get_url(port)
        assert url.startswith(stack.url) and str(port) in url

        def served() -> bool:
            r = httpx.get(url + "index.html", headers={"X-API-Key": stack.key})
            return r.status_code == 200 and r.text == "hello from the workspace\n"

        assert wait_for(served)
        assert httpx.get(url + "index.html").status_code == 401  # the API's: a key needed
        public = s.get_url(port, public=True, expires_in=600)
        assert "/preview/" in public
        assert httpx.get(public + "index.html").text == "hello from the workspace\n"
        nobody = httpx.get(s.get_url(free_port()), headers={"X-API-Key": stack.key})
        assert nobody.status_code == 502 and nobody.json()["code"] == "PORT_UNREACHABLE"


# -- the async twin ------------------------------------------------------------------------------


def test_the_async_client_runs_commands_and_moves_files(stack: Server, tmp_path: Path) -> None:
    source = tmp_path / "up.bin"
    source.write_bytes(os.urandom(33 * MIB))  # two requests' worth

    async def go() -> None:
        async with AsyncClient(stack.url, stack.key) as client, client.create("shell") as s:
            heard: list[str] = []

            async def out(text: str) -> None:  # a coroutine callback is awaited
                heard.append(text)
                if "waiting" in text:
                    await s.files.write("go", "")

            ran = await s.run("echo waiting; while [ ! -e go ]; do sleep 0.02; done; "
                              "echo done; exit 2", on_stdout=out, timeout=60)  # fmt: skip
            assert (ran.stdout, ran.exit_code, "".join(heard)) == (
                "waiting\ndone\n", 2, "waiting\ndone\n")  # fmt: skip
            proc = await s.run("read x; echo got $x", background=True)
            assert proc.pid in [p.pid for p in await s.processes()]
            await proc.send_stdin("it\n", eof=True)
            assert (await proc.wait()).stdout == "got it\n"
            assert (await proc.info()).status == "exited"
            assert (await s.files.write("a/b.txt", "text")).size == 4
            assert await s.files.read_text("a/b.txt") == "text"
            assert [e.name for e in await s.files.list("a")] == ["b.txt"]
            assert (await s.files.mkdir("a/c")).is_dir
            told: list[tuple[int, int | None]] = []
            up = await s.files.upload(source, "a/up.bin", lambda *sent: told.append(sent))
            assert up.sha256 == sha256_of(source)  # in two parts, progress told to the end
            assert told[-1] == (up.size, up.size)
            assert [e.name for e in await s.files.list("a")] == ["b.txt", "c", "up.bin"]
            told.clear()
            await s.files.download("a/up.bin", tmp_path / "down.bin", lambda *g: told.append(g))
            assert told[-1] == (up.size, up.size)
            await s.files.remove("a", recursive=True)
            assert not await s.files.exists("a")
            assert "/preview/" in await s.get_url(8000, public=True)

    asyncio.run(go())
    assert (tmp_path / "down.bin").read_bytes() == source.read_bytes()
