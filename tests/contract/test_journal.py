"""The agent's journal on every Store adapter: a command is claimed once, even by two agent
instances at the same moment, and a finished one replays its result."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tether.agent.journal import Journal
from tether.core.ports import Store


def test_a_command_is_claimed_once_then_replays_its_result(store: Store) -> None:
    journal = Journal(store)
    assert journal.begin("cmd-1", "ws-1") == ("new", None)
    assert journal.begin("cmd-1", "ws-1") == ("started", None)  # a duplicate while it runs
    result = {"type": "command_result", "command_id": "cmd-1", "result": {"stdout": "hi\n"}}
    journal.finish("cmd-1", "ws-1", result)
    assert journal.begin("cmd-1", "ws-1") == ("done", result)
    journal.finish("cmd-1", "ws-1", {"late": "duplicate"})  # one that ran elsewhere too
    assert journal.begin("cmd-1", "ws-1") == ("done", result)  # the first result stands


def test_two_instances_claiming_at_once_get_one_new(store: Store) -> None:
    journals = [Journal(store), Journal(store)]
    with ThreadPoolExecutor(2) as pool:
        states = sorted(s for s, _ in pool.map(lambda j: j.begin("cmd-2", None), journals))
    assert states == ["new", "started"]


def test_stopped_sessions_are_remembered(store: Store) -> None:
    journal = Journal(store)
    assert not journal.was_stopped("ws-1")
    journal.mark_stopped("ws-1")
    journal.mark_stopped("ws-1")  # a redelivered stop
    assert journal.was_stopped("ws-1") and not journal.was_stopped("ws-2")
