"""Bus contract: every adapter (in-process, SQLite file, Pub/Sub emulator) behaves the same."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tether.core.ports import Bus, Message


def wait_for(pred: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


# `awaited`: the publisher waits for the result, so an in-process bus may deliver on its thread.
awaited = pytest.mark.parametrize("awaited", [False, True], ids=["queued", "awaited"])


@awaited
def test_command_reaches_only_its_agent(bus: Bus, awaited: bool) -> None:
    got_a: list[Message] = []
    got_b: list[Message] = []
    sub_a = bus.subscribe_commands("agent-a", got_a.append)
    sub_b = bus.subscribe_commands("agent-b", got_b.append)
    bus.publish_command("agent-a", {"command_id": "c1"}, awaited)
    bus.publish_command("agent-b", {"command_id": "c2"}, awaited)
    assert wait_for(lambda: len(got_a) >= 1 and len(got_b) >= 1)
    time.sleep(0.5)  # a misrouted or doubled message would have arrived by now
    assert [m.data["command_id"] for m in got_a] == ["c1"]
    assert [m.data["command_id"] for m in got_b] == ["c2"]
    assert got_a[0].attributes["agent_id"] == "agent-a"
    sub_a.close()
    sub_b.close()


def test_commands_published_before_the_agent_subscribes_are_delivered(bus: Bus) -> None:
    bus.publish_command("late-agent", {"command_id": "early"})
    got: list[Message] = []
    sub = bus.subscribe_commands("late-agent", got.append)
    assert wait_for(lambda: len(got) >= 1)
    assert got[0].data == {"command_id": "early"}
    sub.close()


def test_a_puller_takes_its_own_commands_once_and_waits_for_the_next(bus: Bus) -> None:
    bus.publish_command("executor-a", {"command_id": "a1"})
    bus.publish_command("executor-b", {"command_id": "b1"})
    bus.publish_command("executor-a", {"command_id": "a2"})
    taken: list[Message] = []
    assert wait_for(
        lambda: bool(taken.extend(bus.pull_commands("executor-a", 10, 1))) or len(taken) >= 2
    )
    assert sorted(m.data["command_id"] for m in taken) == ["a1", "a2"]
    assert taken[0].attributes["agent_id"] == "executor-a"
    # Taken means gone: an empty pull waits out its timeout and returns nothing.
    started = time.monotonic()
    assert bus.pull_commands("executor-a", 10, 0.5) == []
    assert time.monotonic() - started >= 0.5
    # A pull that is waiting is handed a command published meanwhile.
    later = threading.Timer(0.3, bus.publish_command, ("executor-a", {"command_id": "a3"}))
    later.start()
    got = bus.pull_commands("executor-a", 10, 20)
    assert [m.data["command_id"] for m in got] == ["a3"]
    assert [m.data["command_id"] for m in bus.pull_commands("executor-b", 10, 5)] == ["b1"]


def test_events_fan_out_to_every_named_subscription(bus: Bus) -> None:
    one: list[Message] = []
    two: list[Message] = []
    s1 = bus.subscribe_events("one", one.append)
    s2 = bus.subscribe_events("two", two.append)
    bus.publish_event({"type": "heartbeat", "agent_id": "a"})
    assert wait_for(lambda: len(one) >= 1 and len(two) >= 1)
    assert one[0].data == {"type": "heartbeat", "agent_id": "a"}
    s1.close()
    s2.close()


def inbox_of(bus: Bus, command_id: str) -> tuple[str, Any] | None:
    """The bus's inbox for `command_id` once it has one (Pub/Sub's opens in the background);
    None for the adapters of one machine, which have none."""
    if type(bus).__name__ in ("LocalBus", "SqliteBus"):
        assert bus.expect_reply(command_id) is None
        return None
    assert wait_for(lambda: bus.expect_reply("probe") is not None, 30)
    return bus.expect_reply(command_id)


def test_a_result_sent_to_an_inbox_reaches_its_waiter_and_the_events_handlers(bus: Bus) -> None:
    handled: list[Message] = []
    sub = bus.subscribe_events("handler", handled.append)
    expected = inbox_of(bus, "cmd-1")
    if expected is None:  # no inbox: the result reaches the events handlers, as any event
        bus.publish_event({"type": "command_result", "command_id": "cmd-1", "reply_to": "x"})
        assert wait_for(lambda: len(handled) == 1)
        sub.close()
        return
    inbox, reply = expected
    other_inbox, other = inbox_of(bus, "cmd-2") or ("", None)
    assert other_inbox == inbox  # one inbox per process, a waiter per command
    result = {"type": "command_result", "command_id": "cmd-1", "epoch": 1,
              "status": "completed", "result": {"stdout": "hi"}, "reply_to": inbox}  # fmt: skip
    bus.publish_event(result)
    assert reply.wait(30) == result
    assert other.wait(0.5) is None  # another command's waiter is not woken by it
    assert wait_for(lambda: len(handled) == 1)  # the record is still written from the events
    assert handled[0].data == result
    reply.cancel()
    other.cancel()
    sub.close()


def test_a_waiter_is_woken_empty_when_its_inbox_closes(bus: Bus) -> None:
    expected = inbox_of(bus, "cmd-3")
    if expected is None:
        return  # no inbox (the contract allows it: see the test above)
    _, reply = expected
    woken: list[object] = []
    waiting = threading.Thread(target=lambda: woken.append(reply.wait(60)))
    waiting.start()
    started = time.monotonic()
    bus.close()
    waiting.join(60)
    assert woken == [None] and time.monotonic() - started < 30


@awaited
def test_a_failing_handler_gets_the_message_again(bus: Bus, awaited: bool) -> None:
    calls: list[str] = []
    lock = threading.Lock()

    def flaky(msg: Message) -> None:
        with lock:
            calls.append(msg.data["command_id"])
            if len(calls) == 1:
                raise RuntimeError("agent crashed mid-command")

    sub = bus.subscribe_commands("flaky-agent", flaky)
    bus.publish_command("flaky-agent", {"command_id": "retry-me"}, awaited)  # does not raise
    assert wait_for(lambda: len(calls) >= 2, timeout=60)
    assert set(calls) == {"retry-me"}
    sub.close()


def test_ping_succeeds_on_a_live_backend(bus: Bus) -> None:
    bus.ping()


def test_the_sqlite_bus_carries_commands_between_processes_and_keeps_them_across_a_restart(
    tmp_path: Path,
) -> None:
    """What `tether up --workers N` needs: a command published by another process reaches the
    agent's process, and one published while no agent listens is
    there for the next one to subscribe, in another bus on the same file."""
    from tether.bus.sqlite import SqliteBus

    path = tmp_path / "bus.db"
    SqliteBus(path).publish_command("agent-a", {"command_id": "while-away"})
    bus = SqliteBus(path)
    got: list[Message] = []
    sub = bus.subscribe_commands("agent-a", got.append)
    try:
        assert wait_for(lambda: [m.data["command_id"] for m in got] == ["while-away"])
        publish = (
            "import sys; from tether.bus.sqlite import SqliteBus; "
            "SqliteBus(sys.argv[1]).publish_command('agent-a', {'command_id': 'from-afar'})"
        )
        subprocess.run([sys.executable, "-c", publish, str(path)], check=True)
        assert wait_for(lambda: len(got) == 2)
        assert got[1].data == {"command_id": "from-afar"}
    finally:
        sub.close()
        bus.close()
