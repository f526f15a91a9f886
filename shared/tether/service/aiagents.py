"""SentinelStacks' AI agents on the core: an agent is a session (its workspace is the agent's
sandbox, counted against capacity, TTL and idle rules like any session) plus a record of what
it was started from; its conversations and messages; and its events, which the events
WebSocket and the logs read.

A chat turn (`Chats`, service/agentchat.py) writes here; nothing here calls a model.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tether.core.aiagents import (
    AGENTS,
    CONVERSATIONS,
    EVENTS,
    MESSAGES,
    AgentEvent,
    AiAgent,
    ChatMessage,
    Conversation,
)
from tether.core.lifecycle import SessionState
from tether.core.models import Principal, Session, SessionRequest, utcnow
from tether.core.ports import Filter, Position, Store
from tether.errors import Conflict, NotFound
from tether.service import pages
from tether.service.pages import Page
from tether.service.repo import Repo
from tether.service.sessions import Sessions

HISTORY = 40  # the messages of a conversation a turn sends the model: the latest
EVENT_RETENTION = timedelta(days=1)  # events are for watching and recent logs
MAX_PAGE = 100


def _new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


@dataclass
class Started:
    """What a new agent is made of (from an image, or from the web UI's form)."""

    name: str
    model: str
    template: str = "python"
    description: str = ""
    image: str = ""
    digest: str = ""
    system_prompt: str = ""
    tools: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    capabilities: list[str] = field(default_factory=list)
    is_multimodal: bool = False
    provider: str = "auto"
    ttl_minutes: int | None = None


@dataclass
class AiAgents:
    store: Store
    sessions: Sessions
    retention: timedelta = timedelta(days=7)

    def __post_init__(self) -> None:
        self.repo = Repo(self.store, AGENTS, AiAgent)
        self.conversations = Repo(self.store, CONVERSATIONS, Conversation)
        self.messages = Repo(self.store, MESSAGES, ChatMessage)
        self.events = Repo(self.store, EVENTS, AgentEvent)

    # -- agents ------------------------------------------------------------------------------

    def create(self, principal: Principal, made: Started, wait: float = 30.0) -> AiAgent:
        """Start the agent's session, then record the agent under the session's id. (A crash
        between the two leaves a session no agent names: it ends at its TTL like any other.)"""
        session = self.sessions.create(
            principal,
            SessionRequest(
                template=made.template, provider=made.provider, ttl_minutes=made.ttl_minutes,
                user=principal.username, tags=["ai-agent"],
            ),
            wait=wait,
        )  # fmt: skip
        agent = AiAgent(
            id=session.id, owner=principal.id, name=made.name, description=made.description,
            image=made.image, digest=made.digest, model=made.model,
            system_prompt=made.system_prompt, tools=made.tools, parameters=made.parameters,
            environment=made.environment, capabilities=made.capabilities,
            is_multimodal=made.is_multimodal, purge_at=self._purge_at(session),
        )  # fmt: skip
        self.repo.create(agent.id, agent)
        self.record(agent, "agent_status", f"Agent {agent.name} is {session.state.value}",
                    status=session.state.value)  # fmt: skip
        return agent

    def _purge_at(self, session: Session) -> datetime | None:
        """When the agent's records may go: `retention` after its session can last no longer
        (None: a long-lived session's agent stays until it is deleted)."""
        return session.expires_at + self.retention if session.expires_at else None

    def get(self, principal: Principal, agent_id: str) -> tuple[AiAgent, Session | None]:
        """The caller's agent (any, for an admin) and its session (None once it is purged);
        another user's agent is not found."""
        agent = self.repo.find(agent_id) if _plausible(agent_id) else None
        if agent is None or not (principal.is_admin or agent.owner == principal.id):
            raise NotFound("Agent not found", code="AGENT_NOT_FOUND")
        return agent, self.sessions.repo.find(agent.id)

    def listed(
        self, principal: Principal, limit: int = MAX_PAGE, cursor: str | None = None
    ) -> Page[tuple[AiAgent, Session | None]]:
        """The caller's agents, newest first: one query, and a read of each one's session."""
        where: list[Filter] = [("owner", "==", principal.id)]
        after = pages.position(cursor) if cursor else None
        found = self.repo.query(where, "created_at", True, limit + 1, 0, after)
        more = found[limit - 1] if len(found) > limit else None
        token = pages.cursor(more.created_at, more.id) if more else None
        items = [(a, self.sessions.repo.find(a.id)) for a in found[:limit]]
        return Page(items, len(items), token)

    def delete(self, principal: Principal, agent_id: str) -> AiAgent:
        """Stop the agent's session (without waiting for it) and forget the agent `retention`
        later."""
        agent, session = self.get(principal, agent_id)
        if session is not None and session.state is not SessionState.TERMINATED:
            self.sessions.delete(principal, agent.id, wait=0)
        until = utcnow() + self.retention

        def forget(a: AiAgent) -> AiAgent | None:
            if a.purge_at is not None and a.purge_at <= until:
                return None
            a.purge_at = until
            return a

        agent = self.repo.mutate(agent.id, forget, start=agent)
        self.record(agent, "agent_status", f"Agent {agent.name} is stopping", status="stopping")
        return agent

    def used(self, agent: AiAgent, requests: int, tokens: int) -> AiAgent:
        """Count model calls and tokens against the agent."""

        def add(a: AiAgent) -> AiAgent:
            a.requests, a.tokens, a.last_active = a.requests + requests, a.tokens + tokens, utcnow()
            return a

        return self.repo.mutate(agent.id, add, start=agent)

    # -- conversations -----------------------------------------------------------------------

    def conversation(
        self, agent: AiAgent, conversation_id: str | None, title: str = ""
    ) -> Conversation:
        """The agent's conversation `conversation_id`; with None, the one its chats continue
        (made on first use)."""
        wanted = conversation_id or agent.conversation
        if wanted:
            found = self.conversations.find(wanted) if _plausible(wanted) else None
            if found is None or found.agent_id != agent.id:
                raise NotFound("Conversation not found", code="CONVERSATION_NOT_FOUND")
            return found
        made = self.start_conversation(agent, title)

        def adopt(a: AiAgent) -> AiAgent | None:
            if a.conversation:
                return None  # another connection made one first: both continue that one
            a.conversation = made.id
            return a

        current = self.repo.mutate(agent.id, adopt, start=agent)
        if current.conversation != made.id and current.conversation:
            self.conversations.store.delete(CONVERSATIONS, made.id)
            return self.conversations.get(current.conversation, "Conversation")
        return made

    def start_conversation(self, agent: AiAgent, title: str = "") -> Conversation:
        made = Conversation(
            id=_new_id("conv"), agent_id=agent.id, owner=agent.owner,
            title=title or "Conversation", purge_at=agent.purge_at,
        )  # fmt: skip
        return self.conversations.create(made.id, made)

    def conversations_of(
        self, agent: AiAgent, limit: int = MAX_PAGE, cursor: str | None = None
    ) -> Page[Conversation]:
        after = pages.position(cursor) if cursor else None
        where: list[Filter] = [("agent_id", "==", agent.id)]
        found = self.conversations.query(where, "updated_at", True, limit + 1, 0, after)
        more = found[limit - 1] if len(found) > limit else None
        token = pages.cursor(more.updated_at, more.id) if more else None
        return Page(found[:limit], len(found[:limit]), token)

    def append(
        self, conversation: Conversation, role: str, content: str, **more: Any
    ) -> ChatMessage:
        """Add a message at the conversation's end. Its number is taken from the conversation
        in one compare-and-set, so concurrent chats to one conversation never share one."""
        seq: list[int] = []

        def take(c: Conversation) -> Conversation:
            seq[:] = [c.messages]
            c.messages, c.updated_at = c.messages + 1, utcnow()
            if c.title == "Conversation" and role == "user" and content.strip():
                c.title = content.strip().splitlines()[0][:60]  # named by its first question
            return c

        self.conversations.mutate(conversation.id, take)
        message = ChatMessage(
            id=f"{conversation.id}-{seq[0]:08d}", conversation_id=conversation.id,
            agent_id=conversation.agent_id, seq=seq[0], role=role, content=content,
            purge_at=conversation.purge_at, **more,
        )  # fmt: skip
        try:
            return self.messages.create(message.id, message)
        except Conflict:  # a retry of the same write: it is there
            return self.messages.get(message.id)

    def history(self, conversation: Conversation, limit: int = HISTORY) -> list[ChatMessage]:
        """The conversation's latest `limit` messages, oldest first: one query, whatever its
        length."""
        where: list[Filter] = [("conversation_id", "==", conversation.id)]
        latest = self.messages.query(where, "seq", True, limit)
        return latest[::-1]

    # -- events ------------------------------------------------------------------------------

    def record(
        self, agent: AiAgent, event_type: str, content: str, level: str = "info", **data: Any
    ) -> AgentEvent:
        """An event of the agent's: stored for the events stream and the logs."""
        now = utcnow()
        event = AgentEvent(
            id=f"{agent.id}-{now.strftime('%Y%m%d%H%M%S%f')}-{secrets.token_hex(3)}",
            agent_id=agent.id, event_type=event_type, content=content, level=level,
            data={"agent_id": agent.id, **data}, timestamp=now, purge_at=now + EVENT_RETENTION,
        )  # fmt: skip
        return self.events.create(event.id, event)

    def events_after(
        self, agent_id: str, after: Position | datetime, limit: int = MAX_PAGE
    ) -> list[AgentEvent]:
        """The agent's events after `after` (a position `position_of` gave, or a time),
        oldest first."""
        where: list[Filter] = [("agent_id", "==", agent_id)]
        if isinstance(after, datetime):
            where.append(("timestamp", ">", after))
            return self.events.query(where, "timestamp", False, limit)
        return self.events.query(where, "timestamp", False, limit, 0, after)

    def recent_events(
        self, agent: AiAgent, limit: int, since: datetime | None = None
    ) -> list[AgentEvent]:
        """The agent's latest `limit` events (since `since`), oldest first."""
        where: list[Filter] = [("agent_id", "==", agent.id)]
        if since is not None:
            where.append(("timestamp", ">=", since))
        return self.events.query(where, "timestamp", True, limit)[::-1]

    @staticmethod
    def position_of(event: AgentEvent) -> Position:
        return (event.timestamp, event.id)


def _plausible(doc_id: str) -> bool:
    """Whether `doc_id` can be a stored id at all (the store's own rules refuse others)."""
    return 0 < len(doc_id) <= 200 and "/" not in doc_id and doc_id not in (".", "..")
