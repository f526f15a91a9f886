"""The push agent (the `cloud_run` agent's transport) behind a real Pub/Sub push subscription
on the emulator, with the control plane on the Firestore emulator: commands arrive as HTTP
POSTs from Pub/Sub, and sessions run end to end."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from tether import bootstrap
from tether.agent.daemon import Agent
from tether.agent.journal import Journal
from tether.agent.push import make_app
from tether.bus import COMMANDS_TOPIC, commands_subscription
from tether.core.models import Principal, Role, SessionRequest
from tether.provision.local import LocalProvisioner
from tether.settings import Settings

from tests.conftest import emulator
from tests.contract.conftest import clear_firestore
from tests.e2e.conftest import free_port

AGENT = "push-agent"
ADMIN = Principal(id="admin", username="admin", role=Role.ADMIN)


@contextlib.contextmanager
def serve(app: web.Application, port: int) -> Iterator[None]:
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    threading.Thread(target=loop.run_forever, daemon=True).start()
    try:
        yield
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)


@pytest.fixture
def cloud(tmp_path: Path, project: str, unique: str) -> Iterator[dict[str, Any]]:
    emulator("FIRESTORE_EMULATOR_HOST")
    emulator("PUBSUB_EMULATOR_HOST")
    from google.api_core.exceptions import AlreadyExists
    from google.cloud import pubsub_v1
    from tether.bus.pubsub import PubSubBus
    from tether.store.firestore import FirestoreStore

    store = FirestoreStore(project=project, prefix=unique + "_")
    bus = PubSubBus(project=project, prefix=unique + "-")
    services = bootstrap.build(Settings(home=tmp_path / "home"), store, bus)
    bootstrap.seed(services)
    events = bus.subscribe_events("control-plane", lambda m: services.events.handle(m.data))

    # What Terraform creates: the agent's push subscription, filtered on its id.
    port = free_port()
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(project, unique + "-" + COMMANDS_TOPIC)
    with contextlib.suppress(AlreadyExists):
        publisher.create_topic(name=topic)
    subscription = subscriber.subscription_path(
        project, unique + "-" + commands_subscription(AGENT)
    )
    subscriber.create_subscription(request={
        "name": subscription, "topic": topic, "ack_deadline_seconds": 60,
        "filter": f'attributes.agent_id = "{AGENT}"',
        "push_config": {"push_endpoint": f"http://127.0.0.1:{port}/"},
    })  # fmt: skip

    provisioner = LocalProvisioner(tmp_path / "agent")
    agent = Agent(AGENT, bus, provisioner, Journal(store), heartbeat_interval=0.5)
    app = make_app(agent)
    pushed: list[dict[str, Any]] = []  # what reached the endpoint, as the wire carried it

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method == "POST" and request.path == "/":
            pushed.append((await request.json())["message"])
        response: web.StreamResponse = await handler(request)
        return response

    app.middlewares.append(record)
    try:
        with serve(app, port):
            agent.start(pull=False)  # as `python -m tether.agent` does on cloud_run
            assert agent.registered.wait(30), "register_ack never came back over push"
            yield {"services": services, "agent": agent, "url": f"http://127.0.0.1:{port}",
                   "bus": bus, "store": store, "pushed": pushed}  # fmt: skip
    finally:
        agent.stop()
        provisioner.close()
        events.close()
        subscriber.delete_subscription(subscription=subscription)
        services.close()
        clear_firestore(project)


def test_a_session_runs_through_the_push_agent(cloud: dict[str, Any]) -> None:
    sessions = cloud["services"].sessions
    session = sessions.create(ADMIN, SessionRequest(template="shell"))
    assert session.state.value == "running" and session.agent_id == AGENT, session.message
    assert sessions.execute(ADMIN, session.id, "echo pushed-$((6*7))", 10).stdout == "pushed-42\n"
    assert sessions.delete(ADMIN, session.id).state.value == "terminated"


def test_it_heartbeats_and_acks_pushes_it_cannot_read(cloud: dict[str, Any]) -> None:
    agents = cloud["services"].agents
    before = agents.repo.get(AGENT).last_heartbeat
    deadline = time.monotonic() + 20
    while agents.repo.get(AGENT).last_heartbeat == before:
        assert time.monotonic() < deadline, "no heartbeat reached the registry"
        time.sleep(0.1)
    # Undecodable: acked (200) so Pub/Sub does not redeliver what can never be read.
    push = {"message": {"data": "not base64!", "messageId": "1"}}
    bad = httpx.post(cloud["url"] + "/", json=push)
    assert bad.status_code == 200 and "malformed" in bad.json()["detail"]


def test_the_agent_ignores_commands_for_other_agents_that_reach_it(cloud: dict[str, Any]) -> None:
    """The emulator ignores subscription filters, so another agent's command is pushed here
    too: the agent's own check is what keeps it from running."""
    other = {"type": "command", "command_id": "cmd-not-mine", "command_type": "exec",
             "session_id": "ws-x", "epoch": 1, "data": {"command": "touch /tmp/x"}}  # fmt: skip
    cloud["bus"].publish_command("someone-else", other)
    deadline = time.monotonic() + 20
    while not any(m.get("attributes", {}).get("agent_id") == "someone-else"
                  for m in cloud["pushed"]):  # fmt: skip
        assert time.monotonic() < deadline, "the emulator did not push the other agent's command"
        time.sleep(0.1)
    time.sleep(0.5)
    assert cloud["store"].get("agent_journal", "cmd-not-mine") is None, "it ran someone's command"
