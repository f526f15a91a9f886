from __future__ import annotations

import pytest
from tether.core.lifecycle import (
    SESSION_TRANSITIONS,
    CommandState,
    SessionState,
    check_command_move,
    check_session_move,
)
from tether.errors import Conflict, InvalidTransition


def test_every_state_has_a_row_and_terminated_is_final() -> None:
    assert set(SESSION_TRANSITIONS) == set(SessionState)
    assert SESSION_TRANSITIONS[SessionState.TERMINATED] == frozenset()


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ("pending", "running"),
        ("running", "hibernating"),
        ("hibernating", "hibernated"),
        ("hibernated", "waking"),
        ("waking", "running"),
        ("running", "terminating"),
        ("hibernated", "terminating"),
        ("terminating", "terminated"),
        ("pending", "failed"),
    ],
)
def test_allowed_moves(src: str, dst: str) -> None:
    check_session_move(SessionState(src), SessionState(dst))


@pytest.mark.parametrize(
    ("src", "dst"),
    [("terminated", "running"), ("hibernated", "running"), ("pending", "hibernated")],
)
def test_invalid_moves_raise_one_error_type_naming_both_states(src: str, dst: str) -> None:
    with pytest.raises(InvalidTransition) as info:
        check_session_move(SessionState(src), SessionState(dst))
    assert info.value.message == f"Cannot transition from '{src}' to '{dst}'"
    assert isinstance(info.value, Conflict)


def test_final_commands_never_move() -> None:
    with pytest.raises(InvalidTransition):
        check_command_move(CommandState.SUCCEEDED, CommandState.FAILED)
    check_command_move(CommandState.PENDING, CommandState.ACKED)
