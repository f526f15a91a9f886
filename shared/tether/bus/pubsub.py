"""Pub/Sub Bus: one topic per direction, one durable subscription per agent or event consumer.

Clients are built lazily (no `google.cloud` import at module import) so cold start stays cheap.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from tether.bus import COMMANDS_TOPIC, EVENTS_TOPIC, commands_subscription, events_subscription
from tether.core.ports import Handler, Message
from tether.errors import Unavailable

if TYPE_CHECKING:
    from google.cloud.pubsub_v1 import PublisherClient, SubscriberClient
    from google.cloud.pubsub_v1.subscriber.futures import StreamingPullFuture
    from google.cloud.pubsub_v1.subscriber.message import Message as PubSubMessage

log = logging.getLogger(__name__)

ACK_DEADLINE_S = 60  # a command may take a while; the client extends leases beyond this anyway
MIN_BACKOFF = timedelta(seconds=1)  # a nacked message comes back quickly
MAX_BACKOFF = timedelta(seconds=10)
PUBLISH_TIMEOUT_S = 30.0
PING_TIMEOUT_S = 3.0
CLOSE_WAIT_S = 5.0


@contextlib.contextmanager
def _made_elsewhere() -> Iterator[None]:
    """Creating a topic or subscription that exists is fine; so is being refused the right to
    create one: in the cloud Terraform makes them, and least-privilege accounts may only use
    them (a truly missing one then fails on first use, with its own clear error)."""
    from google.api_core.exceptions import AlreadyExists, PermissionDenied

    with contextlib.suppress(AlreadyExists, PermissionDenied):
        yield


class PubSubSubscription:
    def __init__(self, name: str, future: StreamingPullFuture) -> None:
        self.name = name
        self._future = future

    def close(self) -> None:
        self._future.cancel()  # non-blocking: starts shutdown; unstarted messages are nacked
        try:
            self._future.result(timeout=CLOSE_WAIT_S)
        except Exception:  # cancelled, timed out or the stream had already failed
            log.debug("subscription %s closed", self.name, exc_info=True)


class PubSubBus:
    def __init__(self, project: str, prefix: str = "", max_messages: int = 16) -> None:
        self._project = project
        self._prefix = prefix
        self._max_messages = max_messages
        self._lock = threading.Lock()
        self._publisher: PublisherClient | None = None
        self._subscriber: SubscriberClient | None = None
        self._ensured: set[str] = set()  # topic/subscription paths known to exist
        self._subs: list[PubSubSubscription] = []

    # -- clients and resources -------------------------------------------------------------

    def _clients(self) -> tuple[PublisherClient, SubscriberClient]:
        with self._lock:
            if self._publisher is None or self._subscriber is None:
                from google.cloud import pubsub_v1

                # Every publish is waited for (an outbox, a result): sent at once, not held
                # up to 10 ms for a batch to fill.
                batch = pubsub_v1.types.BatchSettings(max_messages=1)
                self._publisher = pubsub_v1.PublisherClient(batch_settings=batch)
                self._subscriber = pubsub_v1.SubscriberClient()
            return self._publisher, self._subscriber

    def _topic(self, topic: str) -> str:
        publisher, _ = self._clients()
        path: str = publisher.topic_path(self._project, self._prefix + topic)
        if path not in self._ensured:
            with _made_elsewhere():
                publisher.create_topic(name=path)
            self._ensured.add(path)
        return path

    def _subscription(self, topic: str, name: str, agent_id: str | None = None) -> str:
        topic_path = self._topic(topic)
        _, subscriber = self._clients()
        path: str = subscriber.subscription_path(self._project, self._prefix + name)
        if path not in self._ensured:
            request: dict[str, Any] = {
                "name": path,
                "topic": topic_path,
                "ack_deadline_seconds": ACK_DEADLINE_S,
                "retry_policy": {"minimum_backoff": MIN_BACKOFF, "maximum_backoff": MAX_BACKOFF},
            }
            if agent_id is not None:
                request["filter"] = f"attributes.agent_id = {json.dumps(agent_id)}"
            with _made_elsewhere():
                subscriber.create_subscription(request=request)
            self._ensured.add(path)
        return path

    # -- publishing -------------------------------------------------------------------------

    def _publish(self, topic: str, data: dict[str, Any], attributes: dict[str, str]) -> str:
        path = self._topic(topic)
        publisher, _ = self._clients()
        body = json.dumps(data, separators=(",", ":")).encode()
        message_id: str = publisher.publish(path, body, **attributes).result(PUBLISH_TIMEOUT_S)
        return message_id

    def publish_command(self, agent_id: str, data: dict[str, Any], awaited: bool = False) -> str:
        # Ensure the agent's subscription first: Pub/Sub only retains messages for
        # subscriptions that exist at publish time.
        self._subscription(COMMANDS_TOPIC, commands_subscription(agent_id), agent_id)
        return self._publish(COMMANDS_TOPIC, data, {"agent_id": agent_id})

    def publish_event(self, data: dict[str, Any]) -> str:
        return self._publish(EVENTS_TOPIC, data, {"type": str(data.get("type", ""))})

    # -- subscribing ------------------------------------------------------------------------

    def _subscribe(self, path: str, handler: Handler, agent_id: str | None) -> PubSubSubscription:
        from google.cloud.pubsub_v1.types import FlowControl

        def callback(received: PubSubMessage) -> None:
            attributes = dict(received.attributes)
            # The emulator accepts subscription filters but ignores them: enforce here.
            if agent_id is not None and attributes.get("agent_id") != agent_id:
                received.ack()
                return
            try:
                data = json.loads(received.data)
            except ValueError:
                log.error("dropping undecodable message %s on %s", received.message_id, path)
                received.ack()  # redelivery would not make it decodable
                return
            try:
                handler(Message(data, attributes, received.message_id))
            except Exception:
                log.exception("handler on %s failed; redelivering %s", path, received.message_id)
                received.nack()
            else:
                received.ack()

        _, subscriber = self._clients()
        future = subscriber.subscribe(
            path,
            callback,
            flow_control=FlowControl(max_messages=self._max_messages),
            # Closing waits for handlers under way, so none publishes on a closed channel.
            await_callbacks_on_shutdown=True,
        )
        sub = PubSubSubscription(path, future)
        with self._lock:
            self._subs.append(sub)
        return sub

    def subscribe_commands(self, agent_id: str, handler: Handler) -> PubSubSubscription:
        path = self._subscription(COMMANDS_TOPIC, commands_subscription(agent_id), agent_id)
        return self._subscribe(path, handler, agent_id)

    def subscribe_events(self, name: str, handler: Handler) -> PubSubSubscription:
        path = self._subscription(EVENTS_TOPIC, events_subscription(name))
        return self._subscribe(path, handler, None)

    # -- health and shutdown ----------------------------------------------------------------

    def ping(self) -> None:
        try:
            from google.api_core.exceptions import NotFound

            publisher, _ = self._clients()
            path = publisher.topic_path(self._project, self._prefix + COMMANDS_TOPIC)
            # NotFound still means the backend answered; topics are created on first use.
            with contextlib.suppress(NotFound):
                publisher.get_topic(topic=path, retry=None, timeout=PING_TIMEOUT_S)
        except Exception as exc:
            raise Unavailable(f"Pub/Sub unreachable: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            subs, self._subs = self._subs, []
            publisher, self._publisher = self._publisher, None
            subscriber, self._subscriber = self._subscriber, None
            self._ensured.clear()
        for sub in subs:
            sub.close()
        if publisher is not None:
            publisher.stop()  # flushes any batch still pending
            publisher.transport.close()
        if subscriber is not None:
            subscriber.close()
