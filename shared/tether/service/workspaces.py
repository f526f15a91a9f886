"""OnMemOS's workspaces: a named group of one caller's sessions, with the resource package the
client chose for it. Sessions name their workspace by `workspace_id` (a tag), and need no
record of it; a record is what OnMemOS's SDK makes, reads, lists and deletes.

A workspace is the caller's own (the owner comes from the credential): `user_id` is a label,
as a session's `user` is, and another caller's workspace is not found.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from pydantic import Field

from tether.core.lifecycle import LIVE_SESSION_STATES
from tether.core.models import Principal, Record, utcnow
from tether.core.ports import Filter, Store
from tether.errors import Conflict, NotFound
from tether.service.repo import Repo

# The tag a session carries for its OnMemOS workspace.
WORKSPACE_TAG = "onmemos.workspace_id="
# Workspaces one caller keeps (a list answers all of one user's at once).
MAX_WORKSPACES = 1000


class Workspace(Record):
    owner: str  # the principal whose credential made it
    user_id: str
    workspace_id: str
    name: str
    resource_package: str
    description: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


def _key(owner: str, user_id: str, workspace_id: str) -> str:
    """The record's id: the store's ids have rules of their own, the names may not."""
    return hashlib.sha256(f"{owner}\0{user_id}\0{workspace_id}".encode()).hexdigest()


@dataclass
class Workspaces:
    store: Store

    def __post_init__(self) -> None:
        self.repo = Repo(self.store, "workspaces", Workspace)

    def create(
        self,
        principal: Principal,
        user_id: str,
        workspace_id: str,
        name: str,
        resource_package: str,
        description: str | None = None,
    ) -> Workspace:
        """A new workspace; Conflict if the caller has one of that user and id already."""
        if self.repo.count([("owner", "==", principal.id)]) >= MAX_WORKSPACES:
            raise Conflict(
                f"At most {MAX_WORKSPACES} workspaces: delete one first", field="workspace_id"
            )
        made = Workspace(
            owner=principal.id,
            user_id=user_id,
            workspace_id=workspace_id,
            name=name,
            resource_package=resource_package,
            description=description,
        )
        try:
            return self.repo.create(_key(principal.id, user_id, workspace_id), made)
        except Conflict:
            raise Conflict(
                f"Workspace '{workspace_id}' of user '{user_id}' already exists",
                field="workspace_id",
            ) from None

    def get(self, principal: Principal, user_id: str, workspace_id: str) -> Workspace:
        found = self.repo.find(_key(principal.id, user_id, workspace_id))
        if found is None:
            raise NotFound(f"Workspace '{workspace_id}' of user '{user_id}' not found")
        return found

    def listed(self, principal: Principal, user_id: str | None = None) -> list[Workspace]:
        """The caller's workspaces (of `user_id` alone, if given), oldest first."""
        where: list[Filter] = [("owner", "==", principal.id)]
        if user_id is not None:
            where.append(("user_id", "==", user_id))
        found = self.repo.query(where, limit=MAX_WORKSPACES)  # equality only: by id
        return sorted(found, key=lambda w: (w.created_at, w.workspace_id))

    def live_sessions(self, principal: Principal, workspace_id: str) -> int:
        """The caller's sessions in the workspace that are not terminated (one count)."""
        where: list[Filter] = [
            ("owner", "==", principal.id),
            ("tags", "contains", WORKSPACE_TAG + workspace_id),
            ("state", "in", [s.value for s in LIVE_SESSION_STATES]),
        ]
        return self.store.count("sessions", where)

    def delete(self, principal: Principal, user_id: str, workspace_id: str) -> Workspace:
        """Forget a workspace; refused (Conflict) while sessions in it are not terminated."""
        found = self.get(principal, user_id, workspace_id)
        live = self.live_sessions(principal, workspace_id)
        if live:
            raise Conflict(
                f"Workspace '{workspace_id}' has {live} live session(s): delete them first",
                field="workspace_id",
            )
        self.repo.delete(_key(principal.id, user_id, workspace_id))
        return found
