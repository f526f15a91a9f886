"""Who a request comes from, for rate limits: the peer, or behind a trusted proxy the address
that proxy saw; and sign-in floods from many addresses, each under its own limit."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable

from flask.testing import FlaskClient
from tether.surfaces.http import client_address, proxy_matcher
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from tests.surfaces.conftest import ADMIN_PASSWORD, target_client

LOGIN = "/api/v1/auth/login"


def request_from(peer: str, forwarded: str | None = None) -> Request:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return Request(
        EnvironBuilder(headers=headers, environ_base={"REMOTE_ADDR": peer}).get_environ()
    )


def test_a_client_cannot_choose_its_address_by_header() -> None:
    trusted = proxy_matcher(("35.191.0.0/16", "130.211.0.0/22"))
    assert client_address(request_from("203.0.113.9", "1.2.3.4"), trusted) == "203.0.113.9"
    # Behind the load balancer: the entry it appended, not what the client wrote before it.
    seen = request_from("35.191.7.7", "1.2.3.4, 203.0.113.9")
    assert client_address(seen, trusted) == "203.0.113.9"
    # Through two trusted hops, the first untrusted address from the right.
    assert client_address(request_from("35.191.7.7", "9.9.9.9, 203.0.113.9, 130.211.0.5"),
                          trusted) == "203.0.113.9"  # fmt: skip
    assert client_address(request_from("35.191.7.7"), trusted) == "35.191.7.7"
    assert client_address(request_from("35.191.7.7", "not an address"), trusted) == "not an address"


def test_forwarded_addresses_get_limits_of_their_own_only_behind_a_trusted_proxy(
    stack: object, rate_window: Callable[[], None]
) -> None:
    ss = target_client("streamspace")
    rate_window()

    def statuses(peer: str, forwarded: str) -> list[int]:
        return [
            ss.post(LOGIN, json={"username": "admin", "password": "wrong"},
                    headers={"X-Forwarded-For": forwarded},
                    environ_base={"REMOTE_ADDR": peer}).status_code
            for _ in range(6)
        ]  # fmt: skip

    # Not a trusted proxy: a new X-Forwarded-For each time does not escape the limit (5).
    assert statuses("198.51.100.1", "1.1.1.1")[-1] == 429
    assert statuses("198.51.100.1", "2.2.2.2")[-1] == 429


def test_a_sign_in_flood_from_many_addresses_leaves_a_real_sign_in_fast(stack: object) -> None:
    answers: list[int] = []
    clients = [target_client("streamspace") for _ in range(100)]  # made here, not in threads

    def attacker(i: int) -> None:
        client: FlaskClient = clients[i]
        r = client.post(LOGIN, json={"username": "admin", "password": f"guess-{i}"},
                        environ_base={"REMOTE_ADDR": f"198.51.100.{i}"})  # fmt: skip
        answers.append(r.status_code)

    flood = [threading.Thread(target=attacker, args=(i,)) for i in range(100)]
    for thread in flood:
        thread.start()
    real: list[tuple[int, float]] = []
    client = target_client("streamspace")
    for k in range(5):  # five users signing in while it lasts, each from an address of theirs
        started = time.monotonic()
        r = client.post(LOGIN, json={"username": "admin", "password": ADMIN_PASSWORD},
                        environ_base={"REMOTE_ADDR": f"192.0.2.{k}"})  # fmt: skip
        real.append((r.status_code, time.monotonic() - started))
    for thread in flood:
        thread.join()
    assert sorted(set(answers)) in ([401], [401, 503], [503]), answers
    assert statistics.median(t for _, t in real) < 0.5, real
    assert all(status in (200, 503) for status, _ in real), real
