"""In-process Bus: durable-by-name subscriptions, redelivery when a handler raises."""

from __future__ import annotations

import itertools
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tether.bus import COMMANDS_TOPIC, EVENTS_TOPIC, commands_subscription, events_subscription
from tether.core.ports import Handler, Message

log = logging.getLogger(__name__)


class _Subscription:
    """Messages wait in `backlog` while no handler is attached. With one, each goes straight
    to the worker pool, or with `inline` is handled on the publisher's own thread: an event's
    handler is a short store write, cheaper than the thread hop, while a command's may run
    for minutes, so a command is handled inline only when its publisher waits for the result
    anyway (an exec: the pool's hop there and back cost ~0.5 ms of a 5 ms exec)."""

    def __init__(
        self, name: str, agent_id: str | None, redeliver_after: float, inline: bool
    ) -> None:
        self.name = name
        self.agent_id = agent_id
        self.redeliver_after = redeliver_after
        self.inline = inline
        self.backlog: list[Message] = []
        self.handler: Handler | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._waiting = threading.Condition(self._lock)  # a puller, for the backlog

    def put(self, msg: Message, inline: bool = False) -> None:
        with self._lock:
            if self.handler is None:
                self.backlog.append(msg)
                self._waiting.notify()
                return
            if self._pool is not None and not inline:
                self._pool.submit(self._deliver, msg)
                return
        self._deliver(msg)

    def attach(self, handler: Handler, workers: int) -> None:
        with self._lock:
            self.handler = handler
            if not self.inline:
                self._pool = ThreadPoolExecutor(workers, thread_name_prefix=f"bus-{self.name}")
            waiting, self.backlog = self.backlog, []
        for msg in waiting:
            self.put(msg)

    def take(self, most: int, timeout: float) -> list[Message]:
        with self._waiting:
            self._waiting.wait_for(lambda: self.backlog, timeout)
            taken, self.backlog = self.backlog[:most], self.backlog[most:]
            return taken

    def _deliver(self, msg: Message) -> None:
        handler = self.handler
        if handler is None:  # detached while queued: keep it for the next handler
            self.put(msg)
            return
        try:
            handler(msg)
        except Exception:
            log.exception("handler on %s failed; redelivering %s", self.name, msg.message_id)
            timer = threading.Timer(self.redeliver_after, self.put, (msg,))
            timer.daemon = True
            timer.start()

    def close(self) -> None:
        with self._lock:
            self.handler, pool, self._pool = None, self._pool, None
        if pool is not None:
            # Work already queued still runs and, finding no handler, goes back to the backlog.
            pool.shutdown(wait=False)


class LocalBus:
    def __init__(self, workers: int = 8, redeliver_after: float = 0.5) -> None:
        self._workers = workers
        self._redeliver_after = redeliver_after
        self._subs: dict[str, tuple[str, _Subscription]] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)  # message ids, unique per bus as Pub/Sub's are per topic

    def _sub(self, topic: str, name: str, agent_id: str | None) -> _Subscription:
        with self._lock:
            if name not in self._subs:
                sub = _Subscription(name, agent_id, self._redeliver_after, topic == EVENTS_TOPIC)
                self._subs[name] = (topic, sub)
            return self._subs[name][1]

    def _publish(
        self, topic: str, data: dict[str, Any], attributes: dict[str, str], inline: bool = False
    ) -> str:
        msg = Message(data=data, attributes=attributes, message_id=str(next(self._ids)))
        with self._lock:
            targets = [s for t, s in self._subs.values() if t == topic]
        for sub in targets:
            if sub.agent_id is None or sub.agent_id == attributes.get("agent_id"):
                sub.put(msg, inline)
        return msg.message_id

    def publish_command(self, agent_id: str, data: dict[str, Any], awaited: bool = False) -> str:
        # Create the agent's subscription on first publish too, so nothing sent before the
        # agent subscribes is lost (Pub/Sub subscriptions are created at deploy time).
        self._sub(COMMANDS_TOPIC, commands_subscription(agent_id), agent_id)
        return self._publish(COMMANDS_TOPIC, data, {"agent_id": agent_id}, awaited)

    def publish_event(self, data: dict[str, Any]) -> str:
        return self._publish(EVENTS_TOPIC, data, {"type": str(data.get("type", ""))})

    def subscribe_commands(self, agent_id: str, handler: Handler) -> _Subscription:
        sub = self._sub(COMMANDS_TOPIC, commands_subscription(agent_id), agent_id)
        sub.attach(handler, self._workers)
        return sub

    def subscribe_events(self, name: str, handler: Handler) -> _Subscription:
        sub = self._sub(EVENTS_TOPIC, events_subscription(name), None)
        sub.attach(handler, self._workers)
        return sub

    def pull_commands(self, agent_id: str, most: int, timeout: float) -> list[Message]:
        sub = self._sub(COMMANDS_TOPIC, commands_subscription(agent_id), agent_id)
        return sub.take(most, timeout)

    def expect_reply(self, command_id: str) -> None:
        """No inbox: a waiter here watches the command's record, which the events handler of
        this machine writes at once."""
        return None

    def ping(self) -> None:
        return None

    def close(self) -> None:
        with self._lock:
            subs = [s for _, s in self._subs.values()]
        for sub in subs:
            sub.close()
