"""Session and command lifecycles: enums plus transition tables. Invalid moves raise one error."""

from __future__ import annotations

from enum import StrEnum

from tether.errors import InvalidTransition


class SessionState(StrEnum):
    PENDING = "pending"  # recorded, start command outstanding
    RUNNING = "running"
    HIBERNATING = "hibernating"
    HIBERNATED = "hibernated"
    WAKING = "waking"
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    FAILED = "failed"


_S = SessionState
SESSION_TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    _S.PENDING: frozenset({_S.RUNNING, _S.FAILED, _S.TERMINATING, _S.TERMINATED}),
    _S.RUNNING: frozenset({_S.HIBERNATING, _S.TERMINATING, _S.TERMINATED, _S.FAILED}),
    _S.HIBERNATING: frozenset({_S.HIBERNATED, _S.FAILED, _S.TERMINATING, _S.TERMINATED}),
    _S.HIBERNATED: frozenset({_S.WAKING, _S.TERMINATING, _S.TERMINATED}),
    _S.WAKING: frozenset({_S.RUNNING, _S.FAILED, _S.TERMINATING, _S.TERMINATED}),
    _S.TERMINATING: frozenset({_S.TERMINATED, _S.FAILED}),
    _S.FAILED: frozenset({_S.TERMINATING, _S.TERMINATED}),
    _S.TERMINATED: frozenset(),
}

# States in which a workspace may still hold resources that a terminate must free.
LIVE_SESSION_STATES = frozenset(s for s in SessionState if s not in (_S.TERMINATED,))
# States in which a workspace uses an agent's capacity (a hibernated one holds only storage).
ACTIVE_SESSION_STATES = frozenset(
    {_S.PENDING, _S.RUNNING, _S.HIBERNATING, _S.WAKING, _S.TERMINATING}
)
# States that never change again on their own.
FINAL_SESSION_STATES = frozenset({_S.TERMINATED})


def check_session_move(current: SessionState, target: SessionState) -> None:
    if target not in SESSION_TRANSITIONS[current]:
        raise InvalidTransition(
            f"Cannot transition from '{current.value}' to '{target.value}'",
            field="state",
            current=current.value,
            target=target.value,
        )


class CommandState(StrEnum):
    PENDING = "pending"  # in the outbox; published, maybe again, until an agent acks
    ACKED = "acked"  # the agent has it and is working
    SUCCEEDED = "succeeded"
    FAILED = "failed"


_C = CommandState
COMMAND_TRANSITIONS: dict[CommandState, frozenset[CommandState]] = {
    _C.PENDING: frozenset({_C.ACKED, _C.SUCCEEDED, _C.FAILED}),
    _C.ACKED: frozenset({_C.SUCCEEDED, _C.FAILED}),
    _C.SUCCEEDED: frozenset(),
    _C.FAILED: frozenset(),
}
FINAL_COMMAND_STATES = frozenset({_C.SUCCEEDED, _C.FAILED})


def check_command_move(current: CommandState, target: CommandState) -> None:
    if target not in COMMAND_TRANSITIONS[current]:
        raise InvalidTransition(
            f"Command cannot move from '{current.value}' to '{target.value}'",
            current=current.value,
            target=target.value,
        )
