"""Kubently's request and answer bodies: the document's (docs/specs/kubently-api.md), with what
its real clients send and read besides (the server's `extra_args`, the CLI's `success`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tether.surfaces.http import INTEGRAL

ClusterId = Annotated[
    str, Field(min_length=1, max_length=100, pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
]
Label = Annotated[str, Field(max_length=200)]
Arg = Annotated[str, Field(min_length=1, max_length=1024)]
Verb = Literal[
    "get",
    "describe",
    "logs",
    "top",
    "events",
    "version",
    "api-resources",
    "api-versions",
    "explain",
]  # fmt: skip  (tether.core.kubectl_policy.READ_VERBS)
Namespace = Annotated[str, Field(max_length=63, pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")]


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class CreateSession(Body):
    cluster_id: ClusterId
    user_id: Label | None = None
    correlation_id: Label | None = None
    service_identity: Label | None = None
    ttl_seconds: Annotated[int, Field(ge=60, le=3600), INTEGRAL] | None = 300


class Execute(Body):
    cluster_id: ClusterId
    session_id: Label | None = None
    correlation_id: Label | None = None
    # The verb; without it, the first of `args` (as the real CLI sends them). A verb the
    # policy refuses is a 422 naming it, so any text is taken here.
    command_type: Annotated[str, Field(max_length=64)] | None = None
    args: Annotated[list[Arg], Field(min_length=1, max_length=20)]
    namespace: Annotated[str, Field(max_length=63)] | None = "default"
    timeout_seconds: Annotated[int, Field(ge=1, le=30), INTEGRAL] | None = 10
    extra_args: Annotated[list[Arg], Field(max_length=20)] | None = None  # the server's


class NewToken(Body):
    token: Annotated[str, Field(min_length=32, max_length=128)] | None = None


class Rules(Body):
    verbs: Annotated[list[Verb], Field(max_length=20)] = []
    namespaces: Annotated[list[Namespace], Field(max_length=200)] = []


class AuditQuery(BaseModel):
    event_type: Label | None = None
    cluster_id: Label | None = None
    session_id: Label | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = Field(100, ge=1, le=1000)


class WaitQuery(BaseModel):
    wait: int = Field(30, ge=0, le=60, description="Seconds to wait for a command")


class Outcome(Body):
    """A command's result as an executor reports it: the document's fields, and the real
    executor's (`return_code`, `status`, `stdout`, `stderr`; `executed_at` as Unix time)."""

    model_config = ConfigDict(extra="allow")

    success: bool
    output: str | None = None
    error: str | None = None
    exit_code: int | None = None
    return_code: int | None = None
    status: Annotated[str, Field(max_length=32)] | None = None
    execution_time_ms: int | None = None
    executed_at: float | datetime | None = None


class FlatResult(Outcome):
    command_id: Annotated[str, Field(min_length=1, max_length=200)]


class NestedResult(Body):
    command_id: Annotated[str, Field(min_length=1, max_length=200)]
    result: Outcome


# -- answers ----------------------------------------------------------------------------------


class SessionOut(BaseModel):
    session_id: str
    cluster_id: str
    status: Literal["active", "idle", "expired", "ended"]
    created_at: str
    expires_at: str
    ttl_seconds: int
    last_activity: str | None = None
    command_count: int = 0
    user_id: str | None = None
    correlation_id: str | None = None
    service_identity: str | None = None


class Ended(BaseModel):
    message: str
    session_id: str


class CommandOut(BaseModel):
    command_id: str
    operation_id: str
    session_id: str | None = None
    cluster_id: str
    status: Literal["pending", "success", "failure", "timeout", "awaiting_approval", "denied"]
    success: bool  # what the real CLI reads
    correlation_id: str | None = None
    output: str | None = None
    error: str | None = None
    exit_code: int | None = None
    truncated: bool = False
    execution_time_ms: int | None = None
    executed_at: str | None = None


class Accepted(BaseModel):
    operation_id: str
    status: Literal["pending", "awaiting_approval"]
    poll_url: str


class Operation(BaseModel):
    operation_id: str
    status: Literal["pending", "awaiting_approval", "completed", "denied"]
    command: list[str]
    cluster_id: str
    result: CommandOut | None = None
    created_at: str
    completed_at: str | None = None
    decided_by: str | None = None


class Clusters(BaseModel):
    clusters: list[str]
    count: int


class ClusterDetail(BaseModel):
    id: str
    connected: bool
    status: Literal["connected", "disconnected"]
    lastSeen: str | None = None
    agent: Literal["tether", "executor"]  # a Tether cluster agent, or a third-party executor
    hasToken: bool
    version: str | None = None
    kubernetesVersion: str | None = None
    capabilities: dict[str, Any] | None = None
    mode: str | None = None


class AgentSummary(BaseModel):
    id: str
    connected: bool
    lastSeen: str | None = None


class Agents(BaseModel):
    clusters: list[AgentSummary]
    count: int


class TokenOut(BaseModel):
    token: str
    clusterId: str
    createdAt: str


class RulesOut(BaseModel):
    verbs: list[str]
    namespaces: list[str]
    updated_by: str
    updated_at: str


class AuditEntry(BaseModel):
    """Flat, as the real CLI's CSV export writes it."""

    timestamp: str | None = None
    type: Literal["command_executed", "command_refused"]
    service_identity: str | None = None
    username: str
    cluster_id: str
    session_id: str | None = None
    command_id: str
    command: str
    outcome: str
    error: str | None = None
    correlation_id: str | None = None
    execution_time_ms: int | None = None
    decided_by: str | None = None


class Audit(BaseModel):
    entries: list[AuditEntry]
    count: int
    service_identity: str


class Pending(BaseModel):
    operations: list[Operation]
    count: int


class ValidationProblem(BaseModel):
    field: str
    message: str


class ErrorDetails(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str
    field: str | None = None
    errors: list[ValidationProblem] | None = None


class Error(BaseModel):
    """Every Kubently error (`detail` too: the real server is FastAPI, whose clients read it)."""

    error: str
    detail: str
    details: ErrorDetails
    request_id: str
    timestamp: str


class HandedOut(BaseModel):
    id: str
    args: list[str]
    timeout: float
    session_id: str | None = None


class Handed(BaseModel):
    commands: list[HandedOut]


class Stored(BaseModel):
    message: str
    command_id: str


class AcceptedResult(BaseModel):
    status: Literal["accepted"]
    command_id: str


class AgentStatus(BaseModel):
    cluster_id: str
    is_active: bool
    queue_depth: int


class Beat(BaseModel):
    status: Literal["success"]
    message: str
