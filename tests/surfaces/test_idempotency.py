"""`Idempotency-Key` on creates: the same request again gets the first answer and makes nothing
new, another request under the key is refused, and requests racing with one key make one
object."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tether.local.stack import LocalStack

from tests.surfaces.conftest import ADMIN_KEY, ALICE_KEY, BOB_KEY, target_client


def sessions_of(stack: LocalStack, owner: str) -> list[str]:
    return [d.id for d in stack.services.store.query("sessions", [("owner", "==", owner)])]


def create(
    key: str | None, body: dict[str, Any], credential: str = ALICE_KEY, client: Any = None
) -> Any:
    headers = {"X-API-Key": credential, **({"Idempotency-Key": key} if key else {})}
    client = client or target_client("onmemos")
    return client.post("/v1/sessions", json=body, headers=headers)


def test_a_create_sent_again_with_its_key_is_answered_again_not_done_again(
    stack: LocalStack,
) -> None:
    first = create("k-1", {"template": "shell"})
    again = create("k-1", {"template": "shell"})
    assert first.status_code == again.status_code == 201
    assert again.get_json() == first.get_json()
    assert sessions_of(stack, "alice") == [first.get_json()["id"]]
    other = create("k-1", {"template": "shell", "namespace": "elsewhere"})
    assert other.status_code == 422 and "another request" in other.get_json()["detail"]
    # A key is its owner's: bob's k-1 is another create; no key, no memory.
    assert create("k-1", {"template": "shell"}, BOB_KEY).get_json()["id"] != first.get_json()["id"]
    assert create(None, {"template": "shell"}).get_json()["id"] != first.get_json()["id"]
    assert len(sessions_of(stack, "alice")) == 2


def test_an_error_answer_is_kept_too_and_a_bad_key_is_refused(stack: LocalStack) -> None:
    missing = create("k-2", {"template": "no-such-template"})
    assert missing.status_code == 404
    assert create("k-2", {"template": "no-such-template"}).get_json() == missing.get_json()
    assert create("x" * 256, {"template": "shell"}).status_code == 400
    assert sessions_of(stack, "alice") == []


def test_racing_requests_with_one_key_make_one_session(stack: LocalStack) -> None:
    # The clients are made first, on this thread: building apps on 20 threads at once is what
    # the test would then exercise (CPython 3.11's AST building is not safe for that).
    clients = [target_client("onmemos") for _ in range(20)]
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda c: create("k-race", {"template": "shell"}, client=c),
                                clients))  # fmt: skip
    assert {a.status_code for a in answers} == {201}
    assert len({a.get_json()["id"] for a in answers}) == 1
    assert len(sessions_of(stack, "alice")) == 1


def test_streamspace_creates_take_a_key_too(stack: LocalStack) -> None:
    ss = target_client("streamspace")
    h = {"Authorization": f"Bearer {ALICE_KEY}", "Idempotency-Key": "ss-1"}
    body = {"user": "alice", "template": "shell"}
    first, again = (ss.post("/api/v1/sessions", json=body, headers=h) for _ in range(2))
    assert first.status_code == again.status_code == 202
    assert first.get_json()["id"] == again.get_json()["id"]
    # A template too (admins'), made once under its key.
    admin = {"Authorization": f"Bearer {ADMIN_KEY}", "Idempotency-Key": "tpl-1"}
    tpl = {"name": "once", "display_name": "Once"}
    made = [ss.post("/api/v1/templates", json=tpl, headers=admin) for _ in range(2)]
    assert [m.status_code for m in made] == [201, 201]
    assert made[0].get_json() == made[1].get_json()
