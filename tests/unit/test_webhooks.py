"""The webhook outbox on the embedded store with a real receiver on loopback: a name that
resolves to a private address is refused when sent (never tried again, nothing reaches the
receiver) unless the deployment allows private addresses."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from tether.core.models import utcnow
from tether.service.webhooks import Delivery, Webhooks
from tether.store.sqlite import SqliteStore


class Receiver(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.hits.append(self.headers["X-Tether-Delivery"])
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Receiver.hits.clear()
    yield server.server_address[1]
    server.shutdown()


def outbox(tmp_path: Path, url: str, allow_private: bool) -> tuple[Webhooks, Delivery]:
    hooks = Webhooks(SqliteStore(tmp_path / "hooks.db"), allow_private=allow_private)
    delivery = Delivery(id="dlv_1", session_id="ws-1", event_id="evt_1", event="expiry_warning",
                        url=url, purge_at=utcnow() + timedelta(days=1))  # fmt: skip
    assert hooks.enqueue(delivery)
    assert not hooks.enqueue(delivery)  # made again by a pass that died: the same one
    return hooks, delivery


def test_a_name_resolving_to_loopback_is_refused_and_not_tried_again(
    tmp_path: Path, receiver: int
) -> None:
    hooks, delivery = outbox(tmp_path, f"http://localhost:{receiver}/hook", allow_private=False)
    assert hooks.send_due(lambda d: (b"{}", "whsec_x")) == 0
    stored = hooks.repo.get(delivery.id)
    assert stored.state == "failed" and stored.next_attempt_at is None
    assert stored.last_error.startswith("refused:")
    assert Receiver.hits == []


def test_allowed_it_is_delivered_once(tmp_path: Path, receiver: int) -> None:
    hooks, delivery = outbox(tmp_path, f"http://localhost:{receiver}/hook", allow_private=True)
    assert hooks.send_due(lambda d: (b"{}", "whsec_x")) == 1
    assert hooks.send_due(lambda d: (b"{}", "whsec_x")) == 0  # acknowledged: never again
    stored = hooks.repo.get(delivery.id)
    assert (stored.state, stored.attempts, stored.last_status) == ("delivered", 1, 204)
    assert Receiver.hits == ["dlv_1"]
