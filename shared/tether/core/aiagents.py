"""SentinelStacks' AI agents: an agent is a session started from an image, with the image's
model, prompt and tools; its conversations, their messages, and what happened to it (events).

Every record carries `purge_at`, set when it is written, so the store forgets an agent's
history some time after the agent itself can no longer be used (Firestore's TTL policies in
the cloud, the sweeper locally): what is kept does not grow with history.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from tether.core.lifecycle import SessionState
from tether.core.models import Record, utcnow

AGENTS = "ai_agents"
CONVERSATIONS = "ai_conversations"
MESSAGES = "ai_messages"
EVENTS = "ai_events"

# The document's agent states, from the session's.
STATUS = {
    SessionState.PENDING: "starting",
    SessionState.RUNNING: "running",
    SessionState.HIBERNATED: "stopped",
    SessionState.TERMINATING: "stopping",
    SessionState.TERMINATED: "stopped",
    SessionState.FAILED: "error",
}


class AiAgent(Record):
    id: str  # its session's id
    owner: str
    name: str
    description: str = ""
    image: str = ""  # the reference it was started from ("alice/helper:1.0"); "" for none
    digest: str = ""
    model: str
    system_prompt: str = ""
    tools: list[str] = Field(default_factory=list)  # the image's declared tools, as written
    parameters: dict[str, Any] = Field(default_factory=dict)
    # Variables its tools run with: the owner's, never shown back nor logged.
    environment: dict[str, str] = Field(default_factory=dict)
    capabilities: list[str] = Field(default_factory=list)
    is_multimodal: bool = False
    conversation: str | None = None  # the one a chat opened without naming one continues
    requests: int = 0  # model calls made
    tokens: int = 0  # tokens they used, in and out
    created_at: datetime = Field(default_factory=utcnow)
    last_active: datetime = Field(default_factory=utcnow)
    purge_at: datetime | None = None


class Conversation(Record):
    id: str
    agent_id: str
    owner: str
    title: str = ""
    messages: int = 0  # how many it holds: the next message's sequence number
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    purge_at: datetime | None = None


class ChatMessage(Record):
    id: str  # <conversation>-<seq>
    conversation_id: str
    agent_id: str
    seq: int
    role: str  # system | user | assistant | tool
    content: str
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None  # a tool message: the tool
    timestamp: datetime = Field(default_factory=utcnow)
    purge_at: datetime | None = None


class AgentEvent(Record):
    id: str
    agent_id: str
    event_type: str  # agent_status, message, processing, tool_use, tool_result, error, usage
    content: str
    level: str = "info"
    data: dict[str, Any] = Field(default_factory=dict)
    timestamp: datetime = Field(default_factory=utcnow)
    purge_at: datetime | None = None
