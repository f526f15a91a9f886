"""Pub/Sub Bus: one topic per direction, one durable subscription per agent or event consumer.

Clients are built lazily (no `google.cloud` import at module import) so cold start stays cheap.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from tether import tracing
from tether.bus import COMMANDS_TOPIC, EVENTS_TOPIC, commands_subscription, events_subscription
from tether.core.ports import Handler, Message
from tether.errors import Unavailable

if TYPE_CHECKING:
    from google.cloud.pubsub_v1 import PublisherClient, SubscriberClient
    from google.cloud.pubsub_v1.subscriber.futures import StreamingPullFuture
    from google.cloud.pubsub_v1.subscriber.message import Message as PubSubMessage

log = logging.getLogger(__name__)

# A delivery lost on its way (its connection cut, its agent killed) comes back after this; one
# being handled has its lease extended by the client, this much at a time, for up to an hour.
ACK_DEADLINE_S = 10
MIN_BACKOFF = timedelta(seconds=1)  # a nacked message comes back quickly
MAX_BACKOFF = timedelta(seconds=10)
PUBLISH_TIMEOUT_S = 10.0  # a request's publish gives up then (the outbox publishes it later)
PING_TIMEOUT_S = 3.0
CLOSE_WAIT_S = 5.0
# gRPC waits up to 120 s between attempts to reach a backend that went away, so a short Pub/Sub
# blip would hold commands for minutes (and a streaming pull, whose reopens are throttled, even
# longer): try again every few seconds instead.
RECONNECT = (("grpc.initial_reconnect_backoff_ms", 500), ("grpc.max_reconnect_backoff_ms", 4000))


@contextlib.contextmanager
def _made_elsewhere() -> Iterator[None]:
    """Creating a topic or subscription that exists is fine; so is being refused the right to
    create one: in the cloud Terraform makes them, and least-privilege accounts may only use
    them (a truly missing one then fails on first use, with its own clear error)."""
    from google.api_core.exceptions import AlreadyExists, PermissionDenied

    with contextlib.suppress(AlreadyExists, PermissionDenied):
        yield


@contextlib.contextmanager
def _reachable(what: str) -> Iterator[None]:
    """Pub/Sub away (refused, timed out, retried out): `Unavailable`, as the store's is."""
    from google.api_core.exceptions import GoogleAPICallError, RetryError

    try:
        yield
    except (GoogleAPICallError, RetryError, TimeoutError) as exc:
        raise Unavailable(f"Pub/Sub unreachable ({what}): {exc}") from exc


def _transport(kind: Any) -> Any:
    """A gRPC transport of `kind` whose channel reconnects with `RECONNECT`'s backoff."""
    emulator = os.environ.get("PUBSUB_EMULATOR_HOST")
    if emulator:  # the client would make a plain channel itself, without options: ours instead
        import grpc  # type: ignore[import-untyped]

        return kind(host=emulator, channel=grpc.insecure_channel(emulator, options=RECONNECT))

    def channel(host: str, *, options: list[tuple[str, Any]], **kwargs: Any) -> Any:
        return kind.create_channel(host, options=[*options, *RECONNECT], **kwargs)

    return functools.partial(kind, channel=channel)  # the client adds credentials and host


def _span_attributes(topic: str, data: dict[str, Any]) -> dict[str, str]:
    """What a publish's span says: where to, and the message's ids (never its contents)."""
    said = {
        "messaging.system": "gcp_pubsub",
        "messaging.operation.type": "send",
        "messaging.destination.name": topic,
    }
    for key in ("type", "command_id", "session_id", "agent_id", "command_type"):
        if isinstance(value := data.get(key), str) and value:
            said[f"tether.{key}"] = value
    return said


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
        self._inbox: _Inbox | None = None

    # -- clients and resources -------------------------------------------------------------

    def _clients(self) -> tuple[PublisherClient, SubscriberClient]:
        with self._lock:
            if self._publisher is None or self._subscriber is None:
                from google.cloud import pubsub_v1
                from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
                from google.pubsub_v1.services.subscriber.transports import (
                    SubscriberGrpcTransport,
                )

                # Every publish is waited for (an outbox, a result): sent at once, not held
                # up to 10 ms for a batch to fill.
                batch = pubsub_v1.types.BatchSettings(max_messages=1)
                self._publisher = pubsub_v1.PublisherClient(
                    batch_settings=batch, transport=_transport(PublisherGrpcTransport)
                )
                self._subscriber = pubsub_v1.SubscriberClient(
                    transport=_transport(SubscriberGrpcTransport)
                )
            return self._publisher, self._subscriber

    def _topic(self, topic: str) -> str:
        publisher, _ = self._clients()
        path: str = publisher.topic_path(self._project, self._prefix + topic)
        if path not in self._ensured:
            with _made_elsewhere():
                publisher.create_topic(name=path, timeout=PUBLISH_TIMEOUT_S)
            self._ensured.add(path)
        return path

    def _subscription(self, topic: str, name: str, agent_id: str | None = None) -> str:
        path = self._subscription_path(name)
        if path not in self._ensured:
            request = self._subscription_request(topic, path)
            if agent_id is not None:
                request["filter"] = f"attributes.agent_id = {json.dumps(agent_id)}"
            with _made_elsewhere():
                self._clients()[1].create_subscription(request=request, timeout=PUBLISH_TIMEOUT_S)
            self._ensured.add(path)
        return path

    def _subscription_path(self, name: str) -> str:
        path: str = self._clients()[1].subscription_path(self._project, self._prefix + name)
        return path

    def _subscription_request(self, topic: str, path: str) -> dict[str, Any]:
        return {
            "name": path,
            "topic": self._topic(topic),
            "ack_deadline_seconds": ACK_DEADLINE_S,
            "retry_policy": {"minimum_backoff": MIN_BACKOFF, "maximum_backoff": MAX_BACKOFF},
        }

    # -- publishing -------------------------------------------------------------------------

    def _publish(self, topic: str, data: dict[str, Any], attributes: dict[str, str]) -> str:
        # A producer span under the caller's; the message carries it (`traceparent`), so the
        # agent's span and lines join the caller's trace.
        with tracing.producer(f"publish {topic}", _span_attributes(topic, data)) as carried:
            attributes = {**attributes, **carried}
            with _reachable("publish"):
                path = self._topic(topic)
                publisher, _ = self._clients()
                body = json.dumps(data, separators=(",", ":")).encode()
                future = publisher.publish(path, body, **attributes)
                message_id: str = future.result(PUBLISH_TIMEOUT_S)
            tracing.annotate({"messaging.message.id": message_id})
        return message_id

    def publish_command(self, agent_id: str, data: dict[str, Any], awaited: bool = False) -> str:
        # Ensure the agent's subscription first: Pub/Sub only retains messages for
        # subscriptions that exist at publish time.
        with _reachable("publish"):
            self._subscription(COMMANDS_TOPIC, commands_subscription(agent_id), agent_id)
        return self._publish(COMMANDS_TOPIC, data, {"agent_id": agent_id})

    def publish_event(self, data: dict[str, Any]) -> str:
        attributes = {"type": str(data.get("type", ""))}
        if data.get("reply_to"):  # a result a request waits for: its process's inbox too
            attributes["reply_to"] = str(data["reply_to"])
        return self._publish(EVENTS_TOPIC, data, attributes)

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
            flow_control=FlowControl(
                max_messages=self._max_messages, max_duration_per_lease_extension=ACK_DEADLINE_S
            ),
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

    def pull_commands(self, agent_id: str, most: int, timeout: float) -> list[Message]:
        from google.api_core.exceptions import DeadlineExceeded

        path = self._subscription(COMMANDS_TOPIC, commands_subscription(agent_id), agent_id)
        _, subscriber = self._clients()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                # A pull waits on the server for a message (up to its own limit, or ours).
                response = subscriber.pull(
                    subscription=path, max_messages=most, timeout=max(left, 0.1)
                )
            except DeadlineExceeded:
                response = None
            received = list(response.received_messages) if response else []
            if received:
                subscriber.acknowledge(subscription=path, ack_ids=[r.ack_id for r in received])
            taken = []
            for r in received:
                attributes = dict(r.message.attributes)
                if attributes.get("agent_id") != agent_id:
                    continue  # the emulator ignores filters
                try:
                    data = json.loads(r.message.data)
                except ValueError:
                    log.error("dropping undecodable message %s", r.message.message_id)
                    continue
                taken.append(Message(data, attributes, r.message.message_id))
            if taken or time.monotonic() >= deadline:
                return taken

    def expect_reply(self, command_id: str) -> tuple[str, _Waiter] | None:
        with self._lock:
            if self._inbox is None:
                self._inbox = _Inbox(self)
            inbox = self._inbox
        return inbox.expect(command_id)

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
            inbox, self._inbox = self._inbox, None
        if inbox is not None:
            inbox.close()
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


# -- replies: a process's own inbox -----------------------------------------------------------

# An inbox its process left without deleting it (a crash) goes after a day unused: Pub/Sub's
# shortest expiry. A topic takes 10,000 subscriptions: room for that many live processes.
INBOX_EXPIRY = timedelta(days=1)
INBOX_PREFIX = "tether-inbox-"  # Terraform's grant to make and delete inboxes names it
INBOX_RETENTION = timedelta(minutes=10)  # Pub/Sub's shortest: a reply is wanted at once or never


class _Waiter:
    def __init__(self, inbox: _Inbox, command_id: str) -> None:
        self._inbox, self.command_id = inbox, command_id
        self._came = threading.Event()
        self.event: dict[str, Any] | None = None

    def deliver(self, event: dict[str, Any] | None) -> None:
        self.event = event if self.event is None else self.event
        self._came.set()

    def wait(self, timeout: float) -> dict[str, Any] | None:
        self._came.wait(timeout)
        return self.event

    def cancel(self) -> None:
        self._inbox.forget(self)


class _Inbox:
    """This process's subscription to the events topic, filtered on `reply_to` = its name:
    a result reaches the request waiting for it straight from the agent, one Pub/Sub hop,
    with no store read. Opened in the background on first use (until then, and if it cannot
    be made, callers watch the store); deleted when the bus closes."""

    def __init__(self, bus: PubSubBus) -> None:
        self._bus = bus
        self.name = f"{INBOX_PREFIX}{secrets.token_hex(8)}"
        self._lock = threading.Lock()
        self._waiting: dict[str, _Waiter] = {}
        self._state = "opening"
        self._future: StreamingPullFuture | None = None
        self._path = ""
        self._opener = threading.Thread(target=self._open, name="pubsub-inbox", daemon=True)
        self._opener.start()
        atexit.register(self.close)  # a serving process that just exits deletes it too

    def expect(self, command_id: str) -> tuple[str, _Waiter] | None:
        with self._lock:
            if self._state != "open":
                return None
            waiter = _Waiter(self, command_id)
            self._waiting[command_id] = waiter
        return self.name, waiter

    def forget(self, waiter: _Waiter) -> None:
        with self._lock:
            if self._waiting.get(waiter.command_id) is waiter:
                del self._waiting[waiter.command_id]

    def _open(self) -> None:
        try:
            _, subscriber = self._bus._clients()
            self._path = self._bus._subscription_path(self.name)
            request = self._bus._subscription_request(EVENTS_TOPIC, self._path)
            request |= {
                "filter": f"attributes.reply_to = {json.dumps(self.name)}",
                "expiration_policy": {"ttl": INBOX_EXPIRY},
                "message_retention_duration": INBOX_RETENTION,
            }
            subscriber.create_subscription(request=request)  # refused: no inbox, no harm
            future = subscriber.subscribe(self._path, self._received)
        except Exception:
            log.warning("no reply inbox: results are read from the store", exc_info=True)
            self._end("failed")
            return
        future.add_done_callback(lambda _: self._end("failed"))  # the stream broke for good
        with self._lock:
            if self._state == "opening":
                self._future, self._state = future, "open"
                return
        future.cancel()  # closed while it opened
        self._delete()

    def _received(self, received: PubSubMessage) -> None:
        received.ack()
        if received.attributes.get("reply_to") != self.name:
            return  # the emulator ignores subscription filters: every event comes
        try:
            event = json.loads(received.data)
        except ValueError:
            return
        with self._lock:
            waiter = self._waiting.get(str(event.get("command_id")))
        if waiter is not None:
            waiter.deliver(event)

    def _end(self, state: str) -> None:
        """No more replies: whoever waits goes on to the store at once."""
        with self._lock:
            if self._state == "closed":
                return
            self._state = state
            waiting, self._waiting = list(self._waiting.values()), {}
        for waiter in waiting:
            waiter.deliver(None)

    def close(self) -> None:
        atexit.unregister(self.close)
        self._end("closed")
        self._opener.join(CLOSE_WAIT_S)  # an inbox still opening deletes itself, seeing this
        with self._lock:
            future, self._future = self._future, None
        if future is not None:
            future.cancel()
            self._delete()

    def _delete(self) -> None:
        from google.api_core.exceptions import GoogleAPICallError

        with contextlib.suppress(GoogleAPICallError):
            self._bus._clients()[1].delete_subscription(subscription=self._path, timeout=5)
