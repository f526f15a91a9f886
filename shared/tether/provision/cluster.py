"""A Kubently cluster agent's provisioner: it holds no workspaces (its work is kubectl,
`tether.agent.kubectl`), so every workspace call is refused."""

from __future__ import annotations

from typing import NoReturn

from tether.core.models import ExecResult, WorkspaceInfo, WorkspaceSpec
from tether.errors import Unsupported


class ClusterProvisioner:
    platform = "cluster"

    def _none(self) -> NoReturn:
        raise Unsupported("A cluster agent runs kubectl, not workspaces")

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
