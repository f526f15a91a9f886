"""A chat turn with an AI agent: the user's message in, the model's answer streamed out, the
tools it asks for run in the agent's own workspace, everything kept in the conversation.

The model is called from here, in the control plane: its key never enters a workspace, so
the code an agent runs (hostile, like any workspace's) cannot read it. Tools reach the
workspace the way an exec does (the bus, the agent, the runtime), with the workspace's
sandbox around them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from tether.core import agent_tools
from tether.core.aiagents import AiAgent, ChatMessage, Conversation
from tether.core.lifecycle import SessionState
from tether.core.llm import Done, Message, ModelRequest, TextDelta, ToolCall
from tether.core.models import Principal
from tether.core.ports import ModelProvider
from tether.errors import InvalidTransition, TetherError
from tether.service.aiagents import AiAgents
from tether.service.sessions import Sessions

MAX_ROUNDS = 8  # model calls in one turn: a model that keeps asking for tools is stopped
TOOL_OUTPUT = 16 * 1024  # characters of a tool's output the model is given back


class Listener(Protocol):
    """What a turn reports as it goes (the chat socket renders each as a frame)."""

    def thinking(self) -> None: ...

    def processing(self, model: str) -> None: ...

    def text(self, delta: str) -> None: ...

    def tool_use(self, call: ToolCall) -> None: ...

    def tool_result(self, call: ToolCall, result: Mapping[str, Any]) -> None: ...


@dataclass
class Outcome:
    """A finished turn: the assistant's last message and what the turn used."""

    message: ChatMessage
    conversation: Conversation
    requests: int
    tokens: int


@dataclass
class Chats:
    agents: AiAgents
    sessions: Sessions
    provider: Callable[[], ModelProvider]  # built on first use (a client library's import)
    model_name: str = ""  # every agent's model when set; else each agent's own

    def ready(self, principal: Principal, agent_id: str) -> AiAgent:
        """The caller's agent, its workspace woken if it was hibernated (an idle agent sleeps
        until spoken to); InvalidTransition naming its state if it does not run."""
        agent, session = self.agents.get(principal, agent_id)
        if session is not None and session.state is SessionState.HIBERNATED:
            session = self.sessions.wake(principal, agent.id)
        if session is None or session.state is not SessionState.RUNNING:
            state = session.state.value if session else "stopped"
            raise InvalidTransition(f"Agent {agent.name} is {state}, not running",
                                    code="AGENT_NOT_RUNNING")  # fmt: skip
        return agent

    def turn(
        self,
        principal: Principal,
        agent_id: str,
        content: str,
        listener: Listener,
        conversation_id: str | None = None,
    ) -> Outcome:
        """Answer `content` in the agent's conversation (its current one when None)."""
        agent = self.ready(principal, agent_id)
        conversation = self.agents.conversation(agent, conversation_id)
        self.agents.append(conversation, "user", content)
        self.agents.record(agent, "message", "Message received", conversation=conversation.id)
        listener.thinking()
        requests = tokens = 0
        try:
            for _ in range(MAX_ROUNDS):
                done, text = self._ask_model(agent, conversation, listener)
                requests, tokens = requests + 1, tokens + done.input_tokens + done.output_tokens
                calls = [_as_dict(c) for c in done.tool_calls]
                reply = self.agents.append(conversation, "assistant", text, tool_calls=calls)
                if not done.tool_calls:
                    return Outcome(reply, conversation, requests, tokens)
                for call in done.tool_calls:
                    self._use_tool(principal, agent, conversation, call, listener)
            stop = "The agent asked for tools too many times in one turn; stopped."
            reply = self.agents.append(conversation, "assistant", stop)
            return Outcome(reply, conversation, requests, tokens)
        except TetherError as exc:
            self.agents.record(agent, "error", exc.message, level="error")
            raise
        finally:
            if requests:
                agent = self.agents.used(agent, requests, tokens)
                self.agents.record(agent, "usage", f"{requests} model call(s), {tokens} tokens",
                                   requests=agent.requests, tokens=agent.tokens)  # fmt: skip

    def _ask_model(
        self, agent: AiAgent, conversation: Conversation, listener: Listener
    ) -> tuple[Done, str]:
        params = agent.parameters
        request = ModelRequest(
            model=self.model_name or agent.model,
            messages=tuple(self._context(agent, conversation)),
            tools=agent_tools.offered(agent.tools),
            temperature=_number(params.get("temperature")),
            max_tokens=_count(params.get("maxTokens") or params.get("max_tokens")),
        )
        self.agents.record(agent, "processing", f"Calling model {request.model}",
                           model=request.model)  # fmt: skip
        listener.processing(request.model)
        text: list[str] = []
        for event in self.provider().stream(request):
            if isinstance(event, TextDelta):
                text.append(event.text)
                listener.text(event.text)
            elif isinstance(event, Done):
                return event, "".join(text)
        raise TetherError("The model's answer ended without its end")  # the port forbids it

    def _context(self, agent: AiAgent, conversation: Conversation) -> Iterator[Message]:
        if agent.system_prompt:
            yield Message("system", agent.system_prompt)
        for m in self.agents.history(conversation):
            calls = tuple(ToolCall(c["id"], c["name"], c.get("arguments", {}))
                          for c in m.tool_calls)  # fmt: skip
            yield Message(m.role, m.content, calls, m.tool_call_id, m.name)  # type: ignore[arg-type]

    def _use_tool(
        self,
        principal: Principal,
        agent: AiAgent,
        conversation: Conversation,
        call: ToolCall,
        listener: Listener,
    ) -> None:
        listener.tool_use(call)
        result = self.run_tool(principal, agent, call.name, call.arguments)
        listener.tool_result(call, result)
        shown = json.dumps(result)[:TOOL_OUTPUT]
        self.agents.append(conversation, "tool", shown, tool_call_id=call.id, name=call.name)

    def run_tool(
        self, principal: Principal, agent: AiAgent, requested: str, arguments: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Run a tool the agent's image declares, in its workspace; a refusal or a failure is
        the result (the model reads it), never an exception."""
        try:
            name = agent_tools.check(agent.tools, requested)
            line = agent_tools.command_for(name, arguments)
            self.agents.record(agent, "tool_use", f"Tool {name} started", tool=name)
            ran = self.sessions.execute(principal, agent.id, line, agent_tools.TIMEOUT,
                                        env=agent.environment or None)  # fmt: skip
        except TetherError as exc:
            self.agents.record(agent, "tool_result", f"Tool {requested} refused: {exc.message}",
                               level="warning", tool=requested, success=False)  # fmt: skip
            return {"success": False, "error": exc.message}
        self.agents.record(agent, "tool_result", f"Tool {name} exited {ran.returncode}",
                           tool=name, success=ran.success, exit_code=ran.returncode)  # fmt: skip
        result: dict[str, Any] = {"success": ran.success, "exit_code": ran.returncode}
        if name == "read_file" and ran.success:
            result["content"] = ran.stdout
        elif name != "write_file" or not ran.success:
            result |= {"stdout": ran.stdout, "stderr": ran.stderr}
        if ran.timed_out:
            result["timed_out"] = True
        if ran.truncated:
            result["truncated"] = True
        return result


def _as_dict(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "name": call.name, "arguments": call.arguments}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _count(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 \
        else None  # fmt: skip
