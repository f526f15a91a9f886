"""A command no agent can take, dead-lettered by the Pub/Sub emulator after its delivery
attempts and pushed to the real agent_events target over loopback HTTP, as Terraform wires it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from google.cloud import pubsub_v1
from tether import bootstrap
from tether.bus import COMMANDS_TOPIC, DEAD_LETTER_TOPIC, commands_subscription
from tether.bus.pubsub import PubSubBus
from tether.core.lifecycle import CommandState
from tether.core.models import CommandType
from tether.service.events import DEAD_LETTERED
from tether.settings import Settings
from tether.store.firestore import FirestoreStore

from tests.conftest import emulator
from tests.contract.conftest import clear_firestore
from tests.fakes.served import ServedTarget
from tests.waiting import wait_for

AGENT = "crashing-agent"
ATTEMPTS = 5  # Pub/Sub's least


class Pushed(ServedTarget):
    """The agent_events target, counting the pushes it answered."""

    def __init__(self) -> None:
        self.answered: list[str] = []
        super().__init__("agent_events", self.answered.append)
        self.url += "/"


@pytest.fixture
def cloud(tmp_path: Path, project: str, unique: str) -> Iterator[tuple[Any, Pushed]]:
    emulator("FIRESTORE_EMULATOR_HOST")
    emulator("PUBSUB_EMULATOR_HOST")
    store = FirestoreStore(project=project, prefix=unique + "_")
    bus = PubSubBus(project=project, prefix=unique + "-")
    settings = Settings(home=tmp_path / "home", api_key="tether_admin0000001_" + "k" * 32)
    services = bootstrap.build(settings, store, bus)
    bootstrap.install(services)
    pushed = Pushed()
    try:
        yield services, pushed
    finally:
        pushed.stop()
        bootstrap.install(None)
        bus.close()
        store.close()
        clear_firestore(project)


def test_a_dead_lettered_command_fails_once_and_its_caller_is_answered(
    cloud: tuple[Any, Pushed], project: str, unique: str
) -> None:
    services, pushed = cloud
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(project, unique + "-" + COMMANDS_TOPIC)
    dead = publisher.topic_path(project, unique + "-" + DEAD_LETTER_TOPIC)
    agent_sub = subscriber.subscription_path(project, unique + "-" + commands_subscription(AGENT))
    for path in (topic, dead):
        publisher.create_topic(name=path)
    # What Terraform declares: the agent's subscription dead-letters, and the dead-letter
    # subscription pushes to the agent_events function.
    subscriber.create_subscription(
        request={
            "name": agent_sub,
            "topic": topic,
            "filter": f'attributes.agent_id = "{AGENT}"',
            "dead_letter_policy": {"dead_letter_topic": dead, "max_delivery_attempts": ATTEMPTS},
        }
    )
    subscriber.create_subscription(
        request={
            "name": subscriber.subscription_path(project, unique + "-" + DEAD_LETTER_TOPIC),
            "topic": dead,
            "push_config": {"push_endpoint": pushed.url},
        }
    )
    commands = services.commands
    command = commands.issue(AGENT, CommandType.EXEC, None, {"command": "true"}, awaited=True)
    with ThreadPoolExecutor(1) as pool:
        waited = pool.submit(commands.wait, command, 120)
        # The agent takes the command and crashes on it, at every delivery, until Pub/Sub
        # gives up (as it is about to deliver it once more) and pushes it to the function.
        deliveries, deadline = 0, time.monotonic() + 120
        while not pushed.answered:
            assert time.monotonic() < deadline, f"not dead-lettered after {deliveries} deliveries"
            taken = subscriber.pull(subscription=agent_sub, max_messages=1, timeout=5)
            for received in taken.received_messages:
                deliveries += 1
                subscriber.modify_ack_deadline(
                    subscription=agent_sub, ack_ids=[received.ack_id], ack_deadline_seconds=0
                )
                message = received.message
            assert deliveries <= ATTEMPTS, "delivered after its last attempt"
        answer = waited.result(timeout=90)
    assert answer.state is CommandState.FAILED, "the waiting caller was answered"
    assert answer.result == {"reason": DEAD_LETTERED, "delivery_attempts": ATTEMPTS}
    failed = commands.repo.get(command.id)
    assert failed.state is CommandState.FAILED and failed.result == answer.result
    assert failed.error is not None and failed.error.startswith(DEAD_LETTERED)
    assert commands.republish_stale(older_than=0) == 0, "a failed command is not sent again"

    # Dead-lettered twice (Pub/Sub delivers at least once): the command stays as it was.
    publisher.publish(dead, message.data, **dict(message.attributes)).result(30)
    assert wait_for(lambda: len(pushed.answered) >= 2, timeout=60), "the second push came"
    assert all(status.startswith("200") for status in pushed.answered), pushed.answered
    assert commands.repo.get(command.id).version == failed.version
