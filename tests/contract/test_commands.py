"""Commands end to end on each adapter pair: outbox, at-least-once delivery, lease epochs."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

from tether import deferred
from tether.agent.daemon import Agent
from tether.agent.journal import JOURNAL, Journal
from tether.bus.local import LocalBus
from tether.core.lifecycle import CommandState, SessionState
from tether.core.models import (
    Command,
    CommandType,
    Principal,
    Role,
    Session,
    SessionRequest,
    utcnow,
)
from tether.service.commands import FINAL_KEPT, PENDING_KEPT, wire
from tether.service.sessions import new_session_id, start_command
from tether.store.sqlite import SqliteStore

from tests.waiting import wait_for

ADMIN = Principal(id="admin", username="admin", role=Role.ADMIN)


def running_session(stack: Any) -> tuple[str, Path]:
    session = stack.services.sessions.create(ADMIN, SessionRequest(template="shell"))
    assert session.state.value == "running", session.message
    return session.id, Path(session.details["workdir"])


def wait_final(stack: Any, command_id: str, timeout: float = 30) -> Command:
    commands = stack.services.commands
    command: Command = commands.wait(commands.repo.get(command_id), timeout)
    return command


def overwrite(stack: Any, command_id: str, **fields: Any) -> None:
    """Change a command's stored record as another instance would, behind this one's back."""
    store = stack.services.store
    doc = store.get("commands", command_id)
    store.update("commands", command_id, {**doc.data, **fields}, doc.version)


def test_a_command_delivered_twice_has_one_effect(stack: Any) -> None:
    sid, workdir = running_session(stack)
    cmd = stack.services.commands.issue(
        stack.agent.agent_id, CommandType.EXEC, sid, {"command": "echo x >> count", "timeout": 10}
    )
    stack.services.bus.publish_command(stack.agent.agent_id, wire(cmd))  # the duplicate
    done = wait_final(stack, cmd.id)
    assert done.state is CommandState.SUCCEEDED
    time.sleep(1.0)  # give the duplicate time to (not) run
    assert (workdir / "count").read_text() == "x\n"
    assert stack.services.commands.repo.get(cmd.id).state is CommandState.SUCCEEDED


def test_an_exec_answered_in_a_request_is_journalled_once_the_answer_is_out(stack: Any) -> None:
    """The origin serves each request in a `deferred.scope()`: the agent journals a result the
    request waited for after the answer, and a duplicate that comes later still runs nothing."""
    sid, workdir = running_session(stack)
    journal = stack.agent.journal.store
    inline = isinstance(stack.services.bus, LocalBus)  # the agent runs on the caller's thread
    with deferred.scope():
        result = stack.services.sessions.execute(ADMIN, sid, "echo x >> count; echo ran", 10)
        assert result.stdout == "ran\n"
        (cmd,) = stack.services.commands.repo.query(
            [("session_id", "==", sid), ("type", "==", CommandType.EXEC.value)]
        )
        if inline:
            assert journal.get(JOURNAL, cmd.id).data["state"] == "started"
    deadline = time.monotonic() + 10  # a Pub/Sub agent journals a moment after its result
    while journal.get(JOURNAL, cmd.id).data["state"] != "done":
        assert time.monotonic() < deadline, "the result was never journalled"
        time.sleep(0.05)
    stack.services.bus.publish_command(stack.agent.agent_id, wire(cmd))  # a late duplicate
    time.sleep(1.0)  # give the duplicate time to (not) run
    assert (workdir / "count").read_text() == "x\n"
    assert stack.services.commands.repo.get(cmd.id).state is CommandState.SUCCEEDED


def test_an_unpublished_command_is_published_by_the_sweeper(stack: Any) -> None:
    sid, workdir = running_session(stack)
    # A crash between writing the outbox record and publishing it leaves this behind:
    cmd = Command(
        id="cmd-crashed-before-publish",
        agent_id=stack.agent.agent_id,
        session_id=sid,
        type=CommandType.EXEC,
        payload={"command": "echo recovered > out", "timeout": 10},
    )
    stack.services.commands.repo.create(cmd.id, cmd)
    assert stack.services.commands.republish_stale(older_than=0) == 1
    done = wait_final(stack, cmd.id)
    assert done.state is CommandState.SUCCEEDED
    assert (workdir / "out").read_text() == "recovered\n"


def test_a_long_command_is_acked_while_it_runs_and_not_published_again(stack: Any) -> None:
    sid, workdir = running_session(stack)
    commands = stack.services.commands
    cmd = commands.issue(
        stack.agent.agent_id, CommandType.EXEC, sid, {"command": "sleep 4; echo x >> count"}
    )
    deadline = time.monotonic() + 3.5
    while commands.repo.get(cmd.id).state is CommandState.PENDING:
        assert time.monotonic() < deadline, "a running command was never acked"
        time.sleep(0.05)
    assert commands.repo.get(cmd.id).state is CommandState.ACKED
    assert commands.republish_stale(older_than=0) == 0
    assert wait_final(stack, cmd.id).state is CommandState.SUCCEEDED
    assert (workdir / "count").read_text() == "x\n"


def test_a_quick_exec_is_not_queued_behind_long_ones(stack: Any) -> None:
    """Eight long execs would fill the in-process bus's eight workers; an exec waited on runs on
    its caller's thread instead. (The Pub/Sub subscriber has ten, so nine execs fit.)"""
    sid, workdir = running_session(stack)
    sessions = stack.services.sessions
    # Each long exec says it started, then holds its worker until the test releases it: the
    # quick one must finish while all eight still hold theirs, however slow the machine is.
    hold = "echo go >> started; while [ ! -e release ]; do sleep 0.05; done; echo slow"
    with ThreadPoolExecutor(8) as pool:
        try:
            long = [pool.submit(sessions.execute, ADMIN, sid, hold, 120) for _ in range(8)]
            started = workdir / "started"
            assert wait_for(
                lambda: started.exists() and started.read_text().count("go") == 8, timeout=60
            ), "the eight long execs never all ran"
            result = sessions.execute(ADMIN, sid, "echo quick", 60)
            assert result.stdout == "quick\n", "the quick exec was queued behind the long ones"
        finally:
            (workdir / "release").touch()
        # Eight execs at once open eight connections to the runtime: none is refused.
        assert [f.result().stdout for f in long] == ["slow\n"] * 8


def test_a_result_from_an_older_lease_is_rejected(stack: Any) -> None:
    events = stack.services.events
    cmd = Command(
        id="cmd-leased-twice", agent_id="gone-agent", type=CommandType.EXEC, epoch=2, payload={}
    )
    stack.services.commands.repo.create(cmd.id, cmd)
    stale = {"type": "command_result", "agent_id": "gone-agent", "command_id": cmd.id}
    events.handle({**stale, "epoch": 1, "status": "completed", "result": {"stdout": "old"}})
    assert stack.services.commands.repo.get(cmd.id).state is CommandState.PENDING
    events.handle({**stale, "epoch": 2, "status": "completed", "result": {"stdout": "new"}})
    events.handle({**stale, "epoch": 2, "status": "failed", "error": "late duplicate"})
    final = stack.services.commands.repo.get(cmd.id)
    assert final.state is CommandState.SUCCEEDED and final.result == {"stdout": "new"}


def test_a_result_lands_on_a_command_another_instance_changed(stack: Any) -> None:
    """This process remembers the commands it wrote; a result must still land, and nothing
    another instance wrote since may be lost, when that memory is out of date."""
    commands, events = stack.services.commands, stack.services.events
    result = {"type": "command_result", "agent_id": "gone-agent", "status": "completed"}

    republished = commands.issue("gone-agent", CommandType.EXEC, None, {"command": "true"})
    overwrite(stack, republished.id, publish_count=1)
    events.handle({**result, "command_id": republished.id, "epoch": 1, "result": {"n": 1}})
    done = commands.repo.get(republished.id)
    assert done.state is CommandState.SUCCEEDED and done.result == {"n": 1}
    assert done.publish_count == 1  # the other write survived

    leased = commands.issue("gone-agent", CommandType.EXEC, None, {"command": "true"})
    overwrite(stack, leased.id, epoch=2)  # re-leased: a result for epoch 2 is the one that counts
    events.handle({**result, "command_id": leased.id, "epoch": 2, "result": {"n": 2}})
    assert commands.repo.get(leased.id).result == {"n": 2}
    assert commands.wait(leased, 1).result == {"n": 2}


def test_command_records_expire_and_the_sweeper_deletes_them(stack: Any) -> None:
    """Records do not pile up: a finished one goes minutes after, a pending one after a day."""
    sid, _ = running_session(stack)
    commands = stack.services.commands
    before = utcnow()
    assert stack.services.sessions.execute(ADMIN, sid, "true", 10).success
    done = commands.repo.query([("session_id", "==", sid), ("type", "==", "exec")])[0]
    assert before + FINAL_KEPT <= done.expires_at <= utcnow() + FINAL_KEPT
    waiting = commands.issue("gone-agent", CommandType.EXEC, sid, {"command": "true"})
    assert waiting.expires_at - waiting.created_at == PENDING_KEPT

    overwrite(stack, done.id, expires_at=utcnow() - timedelta(seconds=1))  # its time has come
    assert stack.services.sweeper.run()["expired_records"] == 1
    assert commands.repo.find(done.id) is None and commands.repo.find(waiting.id) is not None


def test_the_local_journal_is_purged_by_the_sweep(stack: Any) -> None:
    """The local agent's journal (a SQLite file: no TTL policy) is purged on the sweep's
    timer, and its entries last as long as a pending command can be republished."""
    journal = stack.agent.journal
    assert journal.keep == PENDING_KEPT
    past = utcnow() - timedelta(seconds=1)
    journal.store.create(JOURNAL, "cmd-long-gone", {"state": "done", "expires_at": past})
    journal.begin("cmd-recent", None)
    stack.sweep_interval, stack.journal_purge_interval = 0.2, 0
    threading.Thread(target=stack._sweep, daemon=True).start()
    deadline = time.monotonic() + 10
    while journal.store.get(JOURNAL, "cmd-long-gone") is not None:
        assert time.monotonic() < deadline, "the expired journal entry was never purged"
        time.sleep(0.1)
    assert journal.store.get(JOURNAL, "cmd-recent") is not None


def test_an_exec_interrupted_by_an_agent_crash_is_not_run_again(stack: Any, tmp_path: Path) -> None:
    sid, workdir = running_session(stack)
    cmd = stack.services.commands.issue(
        "crashing-agent", CommandType.EXEC, sid, {"command": "echo ran >> count", "timeout": 10}
    )
    journal = Journal(SqliteStore(tmp_path / "crash-journal.db"))
    journal.begin(cmd.id, sid)  # the dead process had claimed it, then died
    restarted = Agent("crashing-agent", stack.services.bus, stack.provisioner, journal)
    restarted.start()
    try:
        done = wait_final(stack, cmd.id)
    finally:
        restarted.stop()
    assert done.state is CommandState.FAILED and "interrupted" in (done.error or "")
    assert not (workdir / "count").exists()


def test_session_lifecycle_runs_through_the_agent(stack: Any) -> None:
    sid, workdir = running_session(stack)
    result = stack.services.sessions.execute(ADMIN, sid, "echo $HOME; touch made-here", 10)
    assert result.stdout.strip() == "/home/tether"  # inside the sandbox
    assert (workdir / "made-here").exists()
    ended = stack.services.sessions.delete(ADMIN, sid)
    assert ended.state.value == "terminated"
    assert not workdir.exists()


def test_megabytes_of_output_come_back_truncated_on_every_store(stack: Any) -> None:
    """Firestore keeps a document under 1 MiB: the command record with its result must fit."""
    sid, _ = running_session(stack)
    result = stack.services.sessions.execute(
        ADMIN, sid, "head -c 3000000 /dev/zero | tr '\\0' x", 30
    )
    assert result.success and result.truncated
    assert result.stdout.startswith("x" * 1000) and "output truncated" in result.stdout


def test_a_session_recorded_without_its_start_command_is_started_by_the_sweeper(
    stack: Any,
) -> None:
    sessions, agents = stack.services.sessions, stack.services.agents
    agent = agents.repo.get(stack.agent.agent_id)
    # What a create leaves when the store goes away between its two writes (or its process
    # dies there): the session, its slot, and no start command.
    session = Session(
        id=new_session_id("default", "crashed"),
        owner=ADMIN.id,
        template="shell",
        platform=agent.platform,
        agent_id=agent.id,
    )
    session.slot = agents.reserve(agent, session.id)
    sessions.repo.create(session.id, session)
    assert sessions.start_unstarted(older_than=60) == 0, "a create may still be under way"
    assert stack.services.sweeper.run()["started_sessions"] == 0
    assert sessions.start_unstarted(older_than=0) == 1
    running = sessions.wait_while(session.id, {SessionState.PENDING}, 60)
    assert running.state is SessionState.RUNNING, running.message
    assert sessions.start_unstarted(older_than=0) == 0, "started once"
    (start,) = stack.services.commands.repo.query([("session_id", "==", session.id)])
    assert start.id == start_command(session.id) and start.state is CommandState.SUCCEEDED
