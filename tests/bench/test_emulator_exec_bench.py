"""An exec on the cloud adapters (Firestore and Pub/Sub emulators, a local agent), next to its
floor measured in the same run: two bare Pub/Sub hops (a message out and its answer back,
each through a topic and a streaming-pull subscriber, as a command and its result travel).
Prints figures; asserts only correctness.

Goal (issue 15): exec p50 <= 1.3x the two hops.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tether.core.models import Principal, Role, SessionRequest

from tests.bench.test_exec_bench import pct
from tests.conftest import emulator

ROUNDS = int(os.environ.get("TETHER_BENCH_EMULATOR_ROUNDS", "41"))
ADMIN = Principal(id="admin", username="admin", role=Role.ADMIN)


class TwoHops:
    """A ping through one topic, answered through another: the floor of a command's trip."""

    def __init__(self, project: str, prefix: str) -> None:
        from google.cloud import pubsub_v1

        self.publisher = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(max_messages=1)
        )
        self.subscriber = pubsub_v1.SubscriberClient()
        self.topics, subs = [], []
        for leg in ("out", "back"):
            topic = self.publisher.topic_path(project, f"{prefix}-{leg}")
            sub = self.subscriber.subscription_path(project, f"{prefix}-{leg}")
            self.publisher.create_topic(name=topic)
            self.subscriber.create_subscription(name=sub, topic=topic)
            self.topics.append(topic)
            subs.append(sub)
        self.answered = threading.Event()

        def echo(message: Any) -> None:
            message.ack()
            self.publisher.publish(self.topics[1], message.data)

        def done(message: Any) -> None:
            message.ack()
            self.answered.set()

        self.futures = [self.subscriber.subscribe(subs[0], echo),
                        self.subscriber.subscribe(subs[1], done)]  # fmt: skip

    def trip(self) -> None:
        self.answered.clear()
        self.publisher.publish(self.topics[0], b"ping").result()
        assert self.answered.wait(30), "no answer"

    def close(self) -> None:
        for future in self.futures:
            future.cancel()
        self.subscriber.close()


class BusHops:
    """The same two hops through Tether's own Pub/Sub adapter, as an exec's command and result
    travel: out to an agent's subscription, back to the caller's reply inbox (no store, no
    workspace). The emulator's delivery latency differs from one subscription to the next
    (about 8 or 40 ms a hop), so both floors are shown."""

    def __init__(self, bus: Any) -> None:
        self.bus = bus

        def echo(message: Any) -> None:
            data = message.data
            bus.publish_event({"type": "command_result", "command_id": data["command_id"],
                               "epoch": 1, "reply_to": data["reply_to"]})  # fmt: skip

        self.sub = bus.subscribe_commands("floor-echo", echo)
        opened = time.monotonic() + 30
        while bus.expect_reply("probe") is None and time.monotonic() < opened:
            time.sleep(0.05)
        self.trips = 0

    def trip(self) -> None:
        self.trips += 1
        command_id = f"floor-{self.trips}"
        expected = self.bus.expect_reply(command_id)
        assert expected is not None, "no reply inbox"
        inbox, reply = expected
        try:
            self.bus.publish_command("floor-echo", {"command_id": command_id, "reply_to": inbox})
            assert reply.wait(30) is not None, "no answer"
        finally:
            reply.cancel()

    def close(self) -> None:
        self.sub.close()


@pytest.fixture
def cloud(tmp_path: Path, project: str, unique: str) -> Iterator[Any]:
    emulator("FIRESTORE_EMULATOR_HOST")
    emulator("PUBSUB_EMULATOR_HOST")
    from tether.bus.pubsub import PubSubBus
    from tether.local.stack import LocalStack
    from tether.settings import Settings
    from tether.store.firestore import FirestoreStore

    from tests.contract.conftest import clear_firestore

    settings = Settings(home=tmp_path / "home", api_key="tether_admin0000001_" + "k" * 32)
    stack = LocalStack(
        settings,
        sweep_interval=3600,
        store=FirestoreStore(project=project, prefix=unique + "_"),
        bus=PubSubBus(project=project, prefix=unique + "-"),
    )
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()
        clear_firestore(project)


@pytest.mark.timeout(600)
def test_exec_on_the_emulators_next_to_two_pubsub_hops(
    cloud: Any, project: str, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sessions = cloud.services.sessions
    sid = sessions.create(ADMIN, SessionRequest(template="shell")).id
    hops = TwoHops(project, unique + "-floor")
    bus_hops = BusHops(cloud.services.bus)
    exec_ = lambda: sessions.execute(ADMIN, sid, "echo hi", 30)  # noqa: E731
    calls = {"exec": exec_, "two Pub/Sub hops": hops.trip, "the same, our bus": bus_hops.trip}
    times: dict[str, list[float]] = {name: [] for name in calls}
    try:
        for _ in range(5):  # warm up all
            assert exec_().stdout == "hi\n"
            hops.trip()
            bus_hops.trip()
        for _ in range(ROUNDS):  # interleaved: machine noise hits all alike
            for name, call in calls.items():
                started = time.perf_counter()
                call()
                times[name].append((time.perf_counter() - started) * 1000)
    finally:
        hops.close()
        bus_hops.close()
    floor = pct(times["two Pub/Sub hops"], 0.5)
    with capsys.disabled():
        print(f"\n\nexec on the Firestore and Pub/Sub emulators, {ROUNDS} interleaved rounds (ms)")
        for name, xs in times.items():
            print(f"  {name:<18} p50 {pct(xs, 0.5):7.1f}  p90 {pct(xs, 0.9):7.1f}"
                  f"  ({pct(xs, 0.5) / floor:.2f}x the hops)")  # fmt: skip
        print("  goal: exec p50 <= 1.30x the two hops\n")
