"""SentinelStacks' request and answer models: its OpenAPI schema.

Answers carry the reference's snake_case fields and, where the web UI reads others
(web-ui/src/services/api.ts and its slices: `created`, `lastActive`, `systemPrompt`,
`isMultimodal`, `agentId`), those too; bodies are read in both vocabularies.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

NAME = r"^[^\x00-\x1f\x7f]{1,128}$"  # a display name: any printable text


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Error(BaseModel):
    error: str


# -- auth -------------------------------------------------------------------------------------


class Login(Body):
    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)


class User(BaseModel):
    id: str
    username: str
    email: str
    role: str  # admin | user


class LoggedIn(BaseModel):
    token: str
    username: str
    expires: str
    user: User


class Health(BaseModel):
    status: str = "ok"
    version: str


# -- agents -----------------------------------------------------------------------------------


class CreateAgent(Body):
    """The reference's `{image, parameters, environment}`, or the web UI's form (`name`,
    `description`, `model`, `systemPrompt`, `isMultimodal`) with no image."""

    image: str | None = Field(None, min_length=1, max_length=300)
    parameters: dict[str, Any] = Field(default_factory=dict)
    environment: dict[str, str] = Field(default_factory=dict, max_length=64)
    name: str | None = Field(None, pattern=NAME)
    description: str | None = Field(None, max_length=2000)
    model: str | None = Field(None, min_length=1, max_length=200)
    system_prompt: str | None = Field(
        None, max_length=64 * 1024, validation_alias=AliasChoices("systemPrompt", "system_prompt")
    )
    is_multimodal: bool | None = Field(
        None, validation_alias=AliasChoices("isMultimodal", "is_multimodal")
    )
    tools: list[str] | None = Field(None, max_length=64)
    template: str | None = Field(None, min_length=1, max_length=64)
    provider: str | None = Field(None, pattern=r"^(auto|local|cloud_run|gke)$")
    ttl_minutes: int | None = Field(None, ge=1, le=7 * 24 * 60)


class Endpoints(BaseModel):
    chat: str
    events: str


class ApiUsage(BaseModel):
    requests: int
    tokens: int


class Agent(BaseModel):
    id: str
    name: str
    description: str
    image: str
    status: str  # starting | running | stopping | stopped | error
    created_at: str
    created: str
    last_active: str
    lastActive: str
    model: str
    is_multimodal: bool
    isMultimodal: bool
    system_prompt: str
    systemPrompt: str
    capabilities: list[str]
    tools: list[str]
    tags: list[str]
    uptime: str | None
    memory: str | None  # the workspace's memory limit
    api_usage: ApiUsage
    endpoints: Endpoints


class Agents(BaseModel):
    agents: list[Agent]
    next_cursor: str | None = None


class AgentsQuery(BaseModel):
    limit: int = Field(100, ge=1, le=100)
    cursor: str | None = Field(None, max_length=1000)


class Stopping(BaseModel):
    id: str
    status: str = "stopping"


class LogsQuery(BaseModel):
    limit: int = Field(100, ge=1, le=1000)
    since: str | None = Field(None, max_length=64)


class LogEntry(BaseModel):
    timestamp: str
    level: str  # debug | info | warning | error
    message: str


class Logs(BaseModel):
    logs: list[LogEntry]


# -- conversations ----------------------------------------------------------------------------


class ConversationSummary(BaseModel):
    id: str
    agentId: str
    agent_id: str
    title: str
    created: str
    updated: str
    messages_count: int


class Message(BaseModel):
    id: str
    role: str  # system | user | assistant | tool
    content: str
    timestamp: str
    agentId: str
    conversation_id: str


class ConversationOut(ConversationSummary):
    messages: list[Message]


class NewConversation(Body):
    title: str | None = Field(None, pattern=NAME)


class NewMessage(Body):
    """The web UI's `{role, content}` (its role is the user's: it is the one speaking)."""

    content: str = Field(min_length=1, max_length=64 * 1024)
    role: str | None = Field(None, pattern=r"^user$")
