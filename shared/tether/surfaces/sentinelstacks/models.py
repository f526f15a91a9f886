"""SentinelStacks' request and answer models: its OpenAPI schema.

Answers carry the reference's snake_case fields and, where the web UI reads others
(web-ui/src/services/api.ts and its slices: `created`, `lastActive`, `systemPrompt`,
`isMultimodal`, `agentId`), those too; bodies are read in both vocabularies.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AliasChoices, AwareDatetime, BaseModel, ConfigDict, Field, RootModel

from tether.surfaces.http import INTEGRAL, REQUEST_ID_FIELD

NAME = r"^[^\x00-\x1f\x7f]{1,128}$"  # a display name: any printable text
# An image as POST /v1/agents and the registry name it: `sha256:<hex>`, or `[namespace/]name`
# with an optional `:tag` (tether.core.images' rules; a name none could hold is not found).
IMAGE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}(/[A-Za-z0-9][A-Za-z0-9._-]{0,63})?$"
IMAGE_TAG = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$"
IMAGE_REF = r"^(sha256:[0-9a-f]{64}|[A-Za-z0-9][A-Za-z0-9._-]{0,63}(/[A-Za-z0-9][A-Za-z0-9._-]{0,63})?(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?)$"  # noqa: E501
# An environment variable's name, as the agent's tools get it.
Variable = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Error(BaseModel):
    error: str
    request_id: str = Field(description=REQUEST_ID_FIELD)


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

    image: str | None = Field(None, pattern=IMAGE_REF)
    parameters: dict[str, Any] = Field(default_factory=dict)
    environment: dict[Variable, Annotated[str, Field(max_length=8192)]] = Field(
        default_factory=dict, max_length=64, json_schema_extra={"additionalProperties": False}
    )
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
    ttl_minutes: Annotated[int, Field(ge=1, le=7 * 24 * 60), INTEGRAL] | None = None


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
    since: AwareDatetime | None = None


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


class Conversations(RootModel[list[ConversationSummary]]):
    """An array, as the web UI reads it."""


class ConversationOut(ConversationSummary):
    messages: list[Message]


class NewConversation(Body):
    title: str | None = Field(None, pattern=NAME)


class NewMessage(Body):
    """The web UI's `{role, content}` (its role is the user's: it is the one speaking)."""

    content: str = Field(min_length=1, max_length=64 * 1024)
    role: str | None = Field(None, pattern=r"^user$")


# -- images and the registry ------------------------------------------------------------------


class ImageMetadata(BaseModel):
    author: str
    version: str
    template: str  # the Tether workspace template its agents' sandbox uses


class Image(BaseModel):
    """An image: the reference's ImageResponse and the server's ImageInfo in one."""

    id: str  # its digest, sha256:...
    name: str
    tag: str
    ref: str  # name:tag, what POST /v1/agents takes as `image`
    description: str
    created_at: str
    size: int
    base_model: str
    llm: str
    features: list[str]
    capabilities: list[str]
    tools: list[str]
    parameters: dict[str, Any]
    metadata: ImageMetadata
    author: str
    downloads: int = 0
    stars: int = 0


class Images(BaseModel):
    images: list[Image]
    next_cursor: str | None = None


class ImagesQuery(BaseModel):
    limit: int = Field(100, ge=1, le=100)
    cursor: str | None = Field(None, max_length=1000)


class SearchQuery(BaseModel):
    query: str | None = Field(None, max_length=200)
    q: str | None = Field(None, max_length=200)  # the registry clients' name for it
    tags: str | None = Field(None, max_length=200)  # comma-separated, each also searched for
    type: str | None = Field(None, max_length=32)  # the registry client's; only agents here
    limit: int = Field(10, ge=1, le=100)
    offset: int = Field(0, ge=0, le=10_000)


class SearchResults(BaseModel):
    results: list[Image]
    total: int
    offset: int
    limit: int


class Push(Body):
    """The server's `{name, tag, description, metadata, file}` (`file`: the package, or a bare
    Sentinelfile, base64) or the document's `{image_id, tag}` (tag an image already here)."""

    file: str | None = Field(None, max_length=12 << 20)
    name: str | None = Field(None, pattern=IMAGE_NAME)
    tag: str | None = Field(None, pattern=IMAGE_TAG)
    image_id: str | None = Field(None, pattern=IMAGE_REF)
    # What the client says the package's digest is (`id`, as the server's clients send it,
    # or `digest`): checked against the bytes when it is one.
    id: str | None = Field(None, max_length=300)
    digest: str | None = Field(None, max_length=300)
    description: str | None = Field(None, max_length=2000)
    metadata: dict[str, str] = Field(default_factory=dict)


class Pushed(BaseModel):
    id: str
    name: str
    tag: str
    status: str  # pushed | unchanged | tagged
    message: str
    image: Image


class Pull(Body):
    name: str = Field(pattern=IMAGE_NAME)
    tag: str | None = Field(None, pattern=IMAGE_TAG)


class Pulled(BaseModel):
    id: str
    name: str
    tag: str
    status: str = "pulled"
    message: str
    image: Image


class PackageSummary(BaseModel):
    """A registry client's search result (`Client.Search`, `RegistryClient.SearchPackages`)."""

    name: str
    version: str
    type: str = "agent"
    description: str
    author: str
    license: str = ""
    createdAt: str
    tags: list[str]
    downloads: int = 0
    verified: bool = False
    labels: dict[str, str] = Field(default_factory=dict)


class PackageSearch(BaseModel):
    results: list[PackageSummary]
    total: int
    items: list[PackageSummary]  # RegistryClient's names for the same
    totalCount: int


class PackageInfo(BaseModel):
    name: str
    version: str
    description: str
    author: str
    license: str = ""
    createdAt: str
    updatedAt: str
    size: int
    digest: str
    metadata: dict[str, Any]
    tags: list[str]


class Tags(BaseModel):
    tags: list[str]


class Published(BaseModel):
    name: str
    version: str
    digest: str
    size: int
    status: str  # pushed | unchanged
