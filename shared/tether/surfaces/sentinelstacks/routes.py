"""SentinelStacks' REST routes (docs/specs/sentinelstacks-api.md, and what its real clients
send and read: the web UI's web-ui/src/services/api.ts, the registry clients of
internal/registry/client/registry_client.go, the server's internal/api/*.go). Its
WebSockets (`/v1/agents/{id}/chat`, `/events`) are the relay's (tether.relay.agentchat).

Every route but sign-in and health needs a credential (a JWT from /v1/auth/login, or an API
key); errors are `{"error": "..."}`. CORS answers only the origins TETHER_CORS_ORIGINS lists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from werkzeug.wrappers import Request, Response

from tether import bootstrap, errors
from tether.core.aiagents import STATUS, AiAgent, ChatMessage, Conversation
from tether.core.models import Session, utcnow
from tether.service.aiagents import Started
from tether.surfaces import openapi
from tether.surfaces.http import (
    Router,
    caller,
    client_address,
    iso,
    json_response,
    proxy_matcher,
)
from tether.surfaces.sentinelstacks import models as m
from tether.surfaces.shapes import sentinelstacks as render_error

VERSION = "1.0.0"
AGENT = "/v1/agents/<agent_id>"
# The reference server's, for an agent started with no image and no name or model.
DEFAULT_NAME, DEFAULT_MODEL = "Agent", "default-model"
CORS_HEADERS = "Authorization, Content-Type, Idempotency-Key, X-API-Key"
CORS_METHODS = "GET, POST, PUT, DELETE, OPTIONS"

router = Router(render_error, owner=lambda request: caller(request).id)
T = TypeVar("T")


def handle(request: Request) -> Response:
    """Route; a CORS preflight from an allowed origin is answered here, and every answer to
    one carries its headers."""
    allowed = _allowed_origin(request.headers.get("Origin"))
    preflight = request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
    if preflight and allowed:
        response = Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
        response.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
        response.headers["Access-Control-Max-Age"] = "600"
    else:
        response = router(request)
    if allowed:
        response.headers["Access-Control-Allow-Origin"] = allowed
        response.headers.add("Vary", "Origin")
    return response


def _allowed_origin(origin: str | None) -> str | None:
    """What Access-Control-Allow-Origin answers `origin`: itself when listed, `*` when any
    is allowed; never an unlisted origin reflected."""
    listed = bootstrap.services().settings.cors_origins
    if not origin:
        return None
    if "*" in listed:
        return "*"
    return origin if origin.rstrip("/") in listed else None


def found(name: str, lookup: Callable[[], T]) -> T:
    """`lookup`'s answer; an image name (from a path, or a body's pattern allows) that no
    image could have is not found."""
    try:
        return lookup()
    except errors.Invalid:
        raise errors.NotFound(f"Image {name} not found", code="IMAGE_NOT_FOUND") from None


# -- auth and health --------------------------------------------------------------------------


@router.route("/v1/auth/login", ["POST"], body=m.Login, answers={200: m.LoggedIn}, public=True,
              errors=(401, 429))  # fmt: skip
def login(request: Request, body: m.Login) -> Response:
    """Sign in with a username and password: a JWT (24 hours)."""
    services = bootstrap.services()
    trusted = proxy_matcher(services.settings.trusted_proxies)
    quota = services.limits.hit(f"login:addr:{client_address(request, trusted)}",
                                services.settings.rate_limits["login"])  # fmt: skip
    if not quota.allowed:
        wait = quota.retry_after
        refused = render_error(errors.RateLimited(f"Too many sign-ins; try again in {wait} "
                                                  "seconds", retry_after=wait), 429)  # fmt: skip
        refused.headers["Retry-After"] = str(wait)
        return refused
    user = services.users.login(body.username, body.password)
    token, expires = services.tokens.issue(user)
    shown = m.User(id=user.uid, username=user.username, role=user.role.value,
                   email=user.email or f"{user.username}@localhost")  # fmt: skip
    return json_response(m.LoggedIn(token=token, username=user.username,
                                    expires=iso(expires) or "", user=shown))  # fmt: skip


@router.route("/v1/health", ["GET"], answers={200: m.Health}, public=True)
def health(request: Request) -> Response:
    """The API's status and version."""
    return json_response(m.Health(version=VERSION))


# -- agents -----------------------------------------------------------------------------------


def ws_base() -> str:
    """The public origin as a WebSocket URL's start."""
    url = bootstrap.services().settings.public_url.rstrip("/")
    return "wss" + url[5:] if url.startswith("https") else "ws" + url.removeprefix("http")


def _uptime(session: Session | None) -> str | None:
    if session is None or session.started_at is None or STATUS[session.state] != "running":
        return None
    minutes = int((utcnow() - session.started_at).total_seconds() // 60)
    return f"{minutes // 60}h {minutes % 60}m"


def agent_json(agent: AiAgent, session: Session | None) -> m.Agent:
    status = STATUS[session.state] if session is not None else "stopped"
    created, active = iso(agent.created_at) or "", iso(agent.last_active) or ""
    base = f"{ws_base()}/v1/agents/{agent.id}"
    return m.Agent(
        id=agent.id, name=agent.name, description=agent.description, image=agent.image,
        status=status, created_at=created, created=created, last_active=active,
        lastActive=active, model=agent.model, is_multimodal=agent.is_multimodal,
        isMultimodal=agent.is_multimodal, system_prompt=agent.system_prompt,
        systemPrompt=agent.system_prompt, capabilities=agent.capabilities, tools=agent.tools,
        tags=[], uptime=_uptime(session),
        memory=session.resources.get("memory") if session is not None else None,
        api_usage=m.ApiUsage(requests=agent.requests, tokens=agent.tokens),
        endpoints=m.Endpoints(chat=f"{base}/chat", events=f"{base}/events"),
    )  # fmt: skip


def _started(request: Request, body: m.CreateAgent) -> Started:
    """What the new agent is made of: its image's definition, with the body's overrides."""
    params = dict(body.parameters)
    named = params.get("name") if isinstance(params.get("name"), str) else None
    model = params.get("model") if isinstance(params.get("model"), str) else None
    if body.image is None:
        return Started(
            name=body.name or named or DEFAULT_NAME, model=body.model or model or DEFAULT_MODEL,
            description=body.description or "", system_prompt=body.system_prompt or "",
            tools=body.tools or [], parameters=params, environment=body.environment,
            is_multimodal=bool(body.is_multimodal), template=body.template or "python",
            provider=body.provider or "auto", ttl_minutes=body.ttl_minutes,
        )  # fmt: skip
    images, ref = bootstrap.services().images, body.image
    record, spec = found(ref, lambda: images.resolve(caller(request), ref))
    return Started(
        name=body.name or named or spec.name, model=body.model or model or spec.base_model,
        description=body.description or spec.description, image=body.image,
        digest=record.digest, system_prompt=body.system_prompt or spec.system_prompt,
        tools=body.tools if body.tools is not None else list(spec.tools),
        parameters=spec.parameters | params, environment=body.environment,
        capabilities=list(spec.capabilities), is_multimodal=bool(body.is_multimodal),
        template=body.template or spec.template, provider=body.provider or "auto",
        ttl_minutes=body.ttl_minutes,
    )  # fmt: skip


@router.route("/v1/agents", ["POST"], body=m.CreateAgent, answers={201: m.Agent},
              errors=(404, 409), idempotent=True)  # fmt: skip
def create_agent(request: Request, body: m.CreateAgent) -> Response:
    """Start an agent from an image (or from the web UI's form): a session whose workspace is
    the agent's sandbox."""
    services = bootstrap.services()
    agent = services.aiagents.create(caller(request), _started(request, body))
    _, session = services.aiagents.get(caller(request), agent.id)
    return json_response(agent_json(agent, session), 201)


@router.route("/v1/agents", ["GET"], query=m.AgentsQuery, answers={200: m.Agents})
def list_agents(request: Request, query: m.AgentsQuery) -> Response:
    """The caller's agents, newest first (`next_cursor` resumes the list)."""
    page = bootstrap.services().aiagents.listed(caller(request), query.limit, query.cursor)
    out = [agent_json(a, s) for a, s in page.items]
    return json_response(m.Agents(agents=out, next_cursor=page.next_cursor))


@router.route(AGENT, ["GET"], answers={200: m.Agent}, errors=(404,))
def get_agent(request: Request, agent_id: str) -> Response:
    """One of the caller's agents."""
    return json_response(agent_json(*bootstrap.services().aiagents.get(caller(request), agent_id)))


@router.route(AGENT, ["DELETE"], answers={200: m.Stopping}, errors=(404,))
def delete_agent(request: Request, agent_id: str) -> Response:
    """Stop and delete an agent (its session ends; its history is kept a while)."""
    agent = bootstrap.services().aiagents.delete(caller(request), agent_id)
    return json_response(m.Stopping(id=agent.id))


_LEVELS = {"warning": "warning", "error": "error", "debug": "debug"}


@router.route(f"{AGENT}/logs", ["GET"], query=m.LogsQuery, answers={200: m.Logs}, errors=(404,))
def agent_logs(request: Request, agent_id: str, query: m.LogsQuery) -> Response:
    """What happened to the agent, oldest first: status changes, messages, model calls, tool
    use, errors (its events of the last day)."""
    services = bootstrap.services()
    agent, _ = services.aiagents.get(caller(request), agent_id)
    events = services.aiagents.recent_events(agent, query.limit, query.since)
    logs = [m.LogEntry(timestamp=iso(e.timestamp) or "", level=_LEVELS.get(e.level, "info"),
                       message=e.content) for e in events]  # fmt: skip
    return json_response(m.Logs(logs=logs))


@router.route(f"{AGENT}/chat", ["GET"], listed=False)
@router.route(f"{AGENT}/events", ["GET"], listed=False)
def websocket_only(request: Request, agent_id: str) -> Response:
    raise errors.Invalid("This path is a WebSocket: ask for an upgrade", field="Upgrade")


# -- conversations ----------------------------------------------------------------------------


def summary(c: Conversation) -> dict[str, Any]:
    created, updated = iso(c.created_at) or "", iso(c.updated_at) or ""
    return {"id": c.id, "agentId": c.agent_id, "agent_id": c.agent_id, "title": c.title,
            "created": created, "updated": updated, "messages_count": c.messages}  # fmt: skip


def message_json(msg: ChatMessage) -> m.Message:
    return m.Message(id=msg.id, role=msg.role, content=msg.content, agentId=msg.agent_id,
                     timestamp=iso(msg.timestamp) or "",
                     conversation_id=msg.conversation_id)  # fmt: skip


@router.route(f"{AGENT}/conversations", ["GET"], answers={200: m.Conversations},
              errors=(404,))  # fmt: skip
def conversations(request: Request, agent_id: str) -> Response:
    """The agent's conversations, most recent first (an array, as the web UI reads it)."""
    services = bootstrap.services()
    agent, _ = services.aiagents.get(caller(request), agent_id)
    return json_response([summary(c) for c in services.aiagents.conversations_of(agent).items])


@router.route(f"{AGENT}/conversations", ["POST"], body=m.NewConversation,
              answers={201: m.ConversationSummary}, errors=(404,))  # fmt: skip
def new_conversation(request: Request, agent_id: str, body: m.NewConversation) -> Response:
    """Start a conversation; a chat names it with `?conversation=<id>`."""
    services = bootstrap.services()
    agent, _ = services.aiagents.get(caller(request), agent_id)
    return json_response(summary(services.aiagents.start_conversation(agent, body.title or "")),
                         201)  # fmt: skip


@router.route(f"{AGENT}/conversations/<conversation_id>", ["GET"],
              answers={200: m.ConversationOut}, errors=(404,))  # fmt: skip
def conversation(request: Request, agent_id: str, conversation_id: str) -> Response:
    """A conversation with its latest messages, oldest first."""
    services = bootstrap.services()
    agent, _ = services.aiagents.get(caller(request), agent_id)
    found = services.aiagents.conversation(agent, conversation_id)
    shown = [message_json(x) for x in services.aiagents.history(found, 200) if x.role != "tool"]
    return json_response({**summary(found), "messages": [x.model_dump() for x in shown]})


class _Quiet:
    """A turn's progress, unheard: a REST call answers with the whole reply."""

    def thinking(self) -> None: ...
    def processing(self, model: str) -> None: ...
    def text(self, delta: str) -> None: ...
    def tool_use(self, call: Any) -> None: ...
    def tool_result(self, call: Any, result: Any) -> None: ...


@router.route(f"{AGENT}/conversations/<conversation_id>/messages", ["POST"], body=m.NewMessage,
              answers={201: m.Message}, errors=(404, 409))  # fmt: skip
def send_message(
    request: Request, agent_id: str, conversation_id: str, body: m.NewMessage
) -> Response:
    """Say something in a conversation; the answer is the agent's reply (tools it used ran in
    its workspace)."""
    chats = bootstrap.services().chats
    done = chats.turn(caller(request), agent_id, body.content, _Quiet(), conversation_id)
    return json_response(message_json(done.message), 201)


def document() -> dict[str, Any]:
    return openapi.document(
        router,
        title="SentinelStacks (Tether)",
        version=VERSION,
        description="AI agents started from images, their conversations, the image registry "
        "(on Cloud Storage). Chat and events are WebSockets at /v1/agents/{id}/chat and "
        "/v1/agents/{id}/events. Authenticate with a JWT from /v1/auth/login or an API key "
        "(Authorization: Bearer).",
        error=m.Error,
        security={
            "Bearer": {"type": "http", "scheme": "bearer", "description": "A JWT or API key"},
            "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        },
    )


openapi.serve(router, "sentinelstacks", document)
