"""The SDK's typed calls (`tether.sdk.Client` and its async twin) against `tether up`, as a user
of the SDK notices them: sessions made, found by metadata, paused, resumed, extended, deleted
on leaving a `with` block; commands whose output arrives while they run; background processes
that outlive their call and die with their session; files streamed both ways without being
held in memory; a server in the workspace reached by its URL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from tether import errors
from tether.sdk import AsyncClient, Client, SessionInfo

from tests.e2e.conftest import Server, start_server


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
    kept = client.create("shell", metadata={"suite": suite, "team": "web"}, keep=True)
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
