"""An exec on the cloud adapters (Firestore and Pub/Sub emulators, a local agent), next to its
floor measured in the same run: two Pub/Sub hops (a message out and its answer back, each
through a topic and a streaming-pull subscriber, as a command and its result travel). Shown
three ways: bare hops through other subscriptions, the same through Tether's bus, and the
exec's own two hops, timed where its messages leave and arrive (our adapter's publish and
decode are inside them, a few ms). Prints figures; asserts only correctness.

Goal (issue 15): exec p50 <= 1.3x its two hops.
"""

from __future__ import annotations

import os
import random
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
# The emulator hands a subscriber its messages on a poll of about 50 ms (a streaming or a
# synchronous pull alike), so a hop takes 0-50 ms by where in the poll it lands. Calls made
# back to back lock onto one phase, and the ratio then says more about the phase than about
# Tether. A random pause before each call samples every phase.
POLL = 0.05
PAIRS = 8
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


class Transit:
    """Times an exec's own two hops, at the seams where its messages leave and arrive: the
    command from its publish to the agent's journal (the agent's first step), the result from
    the agent's publish to the exec's return. Everything else is Tether's own work."""

    def __init__(self, cloud: Any) -> None:
        self.marks: dict[str, float] = {}
        bus, journal = cloud.services.bus, cloud.agent.journal
        self._restore = [(bus, "publish_command", bus.publish_command),
                         (bus, "publish_event", bus.publish_event),
                         (journal, "begin", journal.begin)]  # fmt: skip
        for owner, name, call in self._restore:
            setattr(owner, name, self._marking(name, call))

    def _marking(self, name: str, call: Any) -> Any:
        def marked(*args: Any, **kwargs: Any) -> Any:
            if name != "publish_event" or args[0].get("type") == "command_result":
                self.marks.setdefault(name, time.perf_counter())
            return call(*args, **kwargs)

        return marked

    def start(self) -> None:
        self.marks = {}

    def hops(self, ended: float) -> float:
        """The two hops of the exec that ended at `ended`, in ms."""
        m = self.marks
        return (m["begin"] - m["publish_command"] + ended - m["publish_event"]) * 1000

    def close(self) -> None:
        for owner, name, call in self._restore:
            setattr(owner, name, call)


@pytest.mark.timeout(600)
def test_exec_on_the_emulators_next_to_two_pubsub_hops(
    cloud: Any, project: str, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sessions = cloud.services.sessions
    sid = sessions.create(ADMIN, SessionRequest(template="shell")).id
    # Several pairs of subscriptions, taken in turn: a pair's two polls have a fixed offset,
    # which decides its second hop, so one pair alone is a sample of one.
    pairs = [TwoHops(project, f"{unique}-floor{n}") for n in range(PAIRS)]
    bus_hops = BusHops(cloud.services.bus)
    exec_ = lambda: sessions.execute(ADMIN, sid, "echo hi", 30)  # noqa: E731
    hops = lambda: pairs[len(times["two Pub/Sub hops"]) % PAIRS].trip()  # noqa: E731
    calls = {"exec": exec_, "two Pub/Sub hops": hops, "the same, our bus": bus_hops.trip}
    times: dict[str, list[float]] = {name: [] for name in [*calls, "exec's own hops"]}
    phase = random.Random(15)
    try:
        for _ in range(5):  # warm up all
            assert exec_().stdout == "hi\n"
            for pair in pairs:
                pair.trip()
            bus_hops.trip()
        transit = Transit(cloud)
        try:
            for _ in range(ROUNDS):  # interleaved: machine noise hits all alike
                for name, call in calls.items():
                    time.sleep(phase.uniform(0, POLL))
                    transit.start()
                    started = time.perf_counter()
                    call()
                    ended = time.perf_counter()
                    times[name].append((ended - started) * 1000)
                    if name == "exec":
                        times["exec's own hops"].append(transit.hops(ended))
        finally:
            transit.close()
    finally:
        for pair in pairs:
            pair.close()
        bus_hops.close()
    floor = pct(times["two Pub/Sub hops"], 0.5)
    measured = zip(times["exec"], times["exec's own hops"], strict=True)
    own = [total / hops for total, hops in measured]
    with capsys.disabled():
        print(f"\n\nexec on the Firestore and Pub/Sub emulators, {ROUNDS} interleaved rounds (ms)")
        for name, xs in times.items():
            print(f"  {name:<18} p50 {pct(xs, 0.5):7.1f}  p90 {pct(xs, 0.9):7.1f}"
                  f"  ({pct(xs, 0.5) / floor:.2f}x the hops)")  # fmt: skip
        print(f"  exec / its own two hops: p50 {pct(own, 0.5):.2f}x  p90 {pct(own, 0.9):.2f}x")
        print("  goal: exec p50 <= 1.30x its two hops\n")
