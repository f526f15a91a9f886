"""The ports. Every adapter passes the same contract suite in tests/contract/.

Documents are plain dicts whose values are JSON types or timezone-aware `datetime`s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from tether.core.llm import ModelEvent, ModelRequest
from tether.core.models import ExecResult, WorkspaceActivity, WorkspaceInfo, WorkspaceSpec

# "contains": an array field holds the value; "contains_any": it holds one of the values.
Op = Literal["==", "in", "<", "<=", ">", ">=", "contains", "contains_any"]
Filter = tuple[str, Op, Any]
# Where a page ended: the last document's `order_by` value (None without one) and its id.
Position = tuple[Any, str]


@dataclass(frozen=True)
class Stored:
    """One document as read from a Store: its id, compare-and-set version and data."""

    id: str
    version: int
    data: dict[str, Any]


class Store(Protocol):
    """Document store with per-document versions.

    - Not found: `get` returns None; `update` raises `NotFound`; `delete` returns False (as
      it does when the document is no longer the one `expected`).
    - Idempotency: `create` of an existing id raises `Conflict` (callers treat it as "already done"
      where that is what they meant).
    - Atomicity: each call is atomic on one document. `update` is a compare-and-set on `version`:
      a lost race raises `Conflict` and changes nothing. Every write bumps `version` by one;
      `create` yields version 1.
    - Ordering: `query` returns documents matching every filter, ordered by `order_by` (then id),
      at most `limit`, skipping `offset` of them or starting just `after` a position (a page's
      last document, so a walk neither repeats nor skips what stays put while others come and
      go). Without `order_by` the order is by id. A query may hold at most one `contains` or
      `contains_any` filter, and paging (`offset`, `after`) asks for no range filter on any
      field but `order_by`.
    - Cost: a query reads what it returns (plus what `offset` skips), never the whole kind;
      `count` reads an index, not documents.
    """

    def get(self, kind: str, doc_id: str) -> Stored | None: ...

    def create(self, kind: str, doc_id: str, data: dict[str, Any]) -> Stored: ...

    def update(
        self, kind: str, doc_id: str, data: dict[str, Any], expected_version: int
    ) -> Stored: ...

    def patch(self, kind: str, doc_id: str, fields: dict[str, Any]) -> None:
        """Set top-level `fields` of a document without reading it or checking its version
        (which is bumped): for a field only one writer sets, where the last write may simply
        win (a heartbeat's time). One write. Raises `NotFound` for a missing document."""
        ...

    def delete(self, kind: str, doc_id: str, expected: Stored | None = None) -> bool:
        """Whether it deleted one. With `expected`, only if the document is still exactly
        that (its version and data): one changed, or deleted and made again, since it was
        read stays."""
        ...

    def query(
        self,
        kind: str,
        where: Sequence[Filter] = (),
        order_by: str | None = None,
        descending: bool = False,
        limit: int | None = None,
        offset: int = 0,
        after: Position | None = None,
    ) -> list[Stored]: ...

    def count(self, kind: str, where: Sequence[Filter] = ()) -> int:
        """How many documents match every filter."""
        ...

    def watch(self, kind: str, doc_id: str, after_version: int, timeout: float) -> Stored | None:
        """Block until the document's version exceeds `after_version` (or it is deleted, then
        None) or `timeout` seconds pass (then the current document). Sees writes made by other
        processes too."""
        ...

    def ping(self) -> None:
        """Raise `Unavailable` when the backend cannot be reached."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Message:
    data: dict[str, Any]
    attributes: dict[str, str] = field(default_factory=dict)
    message_id: str = ""


Handler = Callable[[Message], None]


class Subscription(Protocol):
    def close(self) -> None: ...


class Reply(Protocol):
    """A command's result on its way back to the process that waits for it."""

    def wait(self, timeout: float) -> dict[str, Any] | None:
        """The result event once it comes, or None after `timeout` seconds."""
        ...

    def cancel(self) -> None:
        """Stop waiting (always called, whether or not it came)."""
        ...


class Bus(Protocol):
    """Two topics: `agent-commands` (to one agent, attribute `agent_id`) and `agent-events`
    (from agents: register, heartbeat, command_ack, command_result).

    - Delivery is at least once: a handler may see a message twice and must be idempotent.
    - A handler that returns acks the message; one that raises has it redelivered later.
    - `subscribe_commands(agent_id, ...)` delivers only messages whose `agent_id` attribute
      matches (adapters enforce this themselves even where the backend's filter does not).
    - No ordering guarantee between messages.
    - Subscriptions are durable by name: messages published while no handler runs are delivered
      once one subscribes (the subscription is created on first use).
    - `awaited=True` says the publisher blocks on the command's result anyway: an in-process
      bus may then run the handler on the publisher's thread, sparing two thread hops.
    """

    def publish_command(
        self, agent_id: str, data: dict[str, Any], awaited: bool = False
    ) -> str: ...

    def publish_event(self, data: dict[str, Any]) -> str: ...

    def subscribe_commands(self, agent_id: str, handler: Handler) -> Subscription: ...

    def subscribe_events(self, name: str, handler: Handler) -> Subscription: ...

    def pull_commands(self, agent_id: str, most: int, timeout: float) -> list[Message]:
        """Take up to `most` of the commands waiting for `agent_id`, waiting up to `timeout`
        seconds for the first: for an agent that polls over HTTP (a third-party Kubently
        executor) instead of subscribing. What is returned is taken (acked): the caller owns
        its delivery. [] when none came in time."""
        ...

    def expect_reply(self, command_id: str) -> tuple[str, Reply] | None:
        """Get ready for `command_id`'s result, before the command is published: this
        process's inbox, which the command carries as `reply_to` (an agent publishes its
        result event with the same `reply_to`, and the bus delivers it there as well as to
        the events subscriptions), and the `Reply` to wait on. None where the adapter has no
        inbox, or not yet: the caller then watches the command's record instead."""
        ...

    def ping(self) -> None:
        """Raise `Unavailable` when the backend cannot be reached."""
        ...

    def close(self) -> None: ...


class Provisioner(Protocol):
    """Owns workspaces on one platform. Every call is idempotent on `session_id`:
    starting a started workspace returns its info; stopping a missing one succeeds."""

    platform: str

    def start(self, spec: WorkspaceSpec) -> WorkspaceInfo: ...

    def stop(self, session_id: str) -> None: ...

    def hibernate(self, session_id: str) -> None: ...

    def wake(self, session_id: str) -> WorkspaceInfo: ...

    def exec(self, session_id: str, command: str, timeout: float) -> ExecResult:
        """Run `command` with a shell in the workspace. Raise `NotFound` for an unknown or
        stopped workspace; report a timeout in the result, not as an exception."""
        ...

    def logs(self, session_id: str, tail: int) -> list[str]:
        """The last `tail` lines of the workspace's log (its main process's output), oldest
        first, each `<UTC ISO timestamp> <text>`. Raise `NotFound` for an unknown workspace;
        a hibernated one still has its log."""
        ...

    def activity(self, session_id: str) -> WorkspaceActivity | None:
        """What the workspace's runtime says it is doing (asked before an idle hibernation).
        None when it cannot say: no runtime up (hibernated, stopped, unknown), or one that does
        not answer or answers nonsense. Never starts or wakes anything; never raises for the
        workspace's sake."""
        ...


class ArtifactStore(Protocol):
    """Content-addressed blobs (SentinelStacks' agent images), each named by its digest,
    `sha256:<64 lowercase hex>` of its bytes.

    - Not found: `get` raises `NotFound`; `exists` is False.
    - Integrity: `put` refuses (`Invalid`) bytes whose sha256 is not `digest`, and a digest
      not of that form, before anything is stored.
    - Idempotency: a `put` of a digest already stored succeeds and changes nothing (the same
      digest is the same bytes; a stored blob is never rewritten or removed).
    - Atomicity: a reader sees a blob whole or not at all, never a part of one.
    - Unavailable: a backend that cannot be reached raises `Unavailable`, naming no credential.
    """

    def put(self, digest: str, data: bytes) -> None: ...

    def get(self, digest: str) -> bytes: ...

    def exists(self, digest: str) -> bool: ...

    def ping(self) -> None:
        """Raise `Unavailable` when the backend cannot be reached."""
        ...


class ModelProvider(Protocol):
    """A language model's API, streaming.

    - `stream` yields the answer as it comes: `TextDelta`s and `ToolCall`s (each complete, its
      arguments parsed), then exactly one `Done`, last, carrying the token counts and every
      tool call again. Nothing after it.
    - Errors: the provider unreachable, overloaded (429, 5xx) or too slow raises `Unavailable`;
      a request it refuses (an unknown model, a bad parameter) raises `Invalid`. Either may be
      raised before or while streaming. No error, log line or message ever holds the API key.
    - No retries inside a stream once text has been yielded (the caller would see it twice).
    """

    name: str  # "offline", "openai", "vertex"

    def stream(self, request: ModelRequest) -> Iterator[ModelEvent]: ...
