"""The provisioner of agents that hold no workspaces: Kubently's cluster agents (their work
is kubectl, `tether.agent.kubectl`) and Openctrol's desktop agents (the display they run on,
`tether.agent.desktop`). Every workspace call is refused."""

from __future__ import annotations

from typing import NoReturn

from tether.core.models import ExecResult, WorkspaceActivity, WorkspaceInfo, WorkspaceSpec
from tether.errors import Unsupported


class NoWorkspaces:
    def __init__(self, platform: str = "cluster") -> None:
        self.platform = platform

    def _none(self) -> NoReturn:
        raise Unsupported(f"A {self.platform} agent holds no workspaces")

    def start(self, spec: WorkspaceSpec) -> WorkspaceInfo:
        self._none()

    def stop(self, session_id: str) -> None:
        self._none()

    def hibernate(self, session_id: str) -> None:
        self._none()

    def wake(self, session_id: str) -> WorkspaceInfo:
        self._none()

    def exec(self, session_id: str, command: str, timeout: float) -> ExecResult:
        self._none()

    def logs(self, session_id: str, tail: int) -> list[str]:
        self._none()

    def activity(self, session_id: str) -> WorkspaceActivity | None:
        return None  # nothing to ask
