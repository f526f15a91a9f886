"""Expiry warnings on every store (Firestore's adapter refuses a query whose index is not
declared): the sweeper's query finds only the sessions due, warns each deadline once (a pass
run again makes no second event or delivery), an extend arms it again; the events page by
cursor for their owner only; the extend token acts for the owner, on its session only; events
and deliveries are forgotten after the retention."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from tether import bootstrap
from tether.bus.local import LocalBus
from tether.core.lifecycle import SessionState
from tether.core.models import Principal, Role, Session, utcnow
from tether.core.ports import Store
from tether.errors import NotFound, Unauthenticated
from tether.service.sweeper import RETAINED, purge_expired
from tether.service.warnings import EVENTS
from tether.service.webhooks import KIND as DELIVERIES
from tether.settings import Settings

BOB = Principal(id="bob", username="bob")


def running(services: bootstrap.Services, sid: str, minutes: float, **fields: object) -> Session:
    s = Session(id=sid, owner="alice", template="python", platform="local", agent_id="a",
                state=SessionState.RUNNING, expires_at=utcnow() + timedelta(minutes=minutes),
                warn_minutes=5, **fields)  # type: ignore[arg-type]  # fmt: skip
    return services.sessions.repo.create(sid, s)


@pytest.fixture
def services(store: Store, tmp_path: Path) -> bootstrap.Services:
    built = bootstrap.build(Settings(home=tmp_path, jwt_secret="s" * 32), store, LocalBus())
    built.auth.ensure_user("alice", Role.USER)
    return built


def test_each_deadline_is_warned_once_and_an_extend_arms_it_again(
    services: bootstrap.Services, store: Store
) -> None:
    warnings = services.warnings
    hooked = running(services, "ws-hooked", 3, webhook_url="https://hooks.example.com/t",
                     webhook_secret="whsec_x")  # fmt: skip
    running(services, "ws-quiet", 3)
    running(services, "ws-later", 60)  # its warning is 55 minutes away
    assert warnings.scan() == 2
    assert warnings.scan() == 0  # warned of those deadlines
    assert store.count(EVENTS) == 2 and store.count(DELIVERIES) == 1

    # A pass that died after the event, before the mark, makes neither again.
    services.sessions.repo.mutate(hooked.id, lambda s: s.model_copy(update={"warned_for": None}))
    assert warnings.scan() == 1
    assert store.count(EVENTS) == 2 and store.count(DELIVERIES) == 1

    # The event's token extends that session, for its owner, and no other session.
    alice = Principal(id="alice", username="alice")
    shown, cursor = warnings.listed(alice, hooked.id, None, 10)
    assert cursor is None and [e["reason"] for e in shown] == ["ttl"]
    bearer = f"Bearer {shown[0]['extend']['token']}"
    holder = warnings.holder(bearer, hooked.id)
    assert holder is not None and holder.id == "alice"
    with pytest.raises(Unauthenticated):
        warnings.holder(bearer, "ws-quiet")
    assert warnings.holder(f"Bearer {services.tokens.issue(services.auth.users.get('alice'))[0]}",
                           hooked.id) is None  # a sign-in's JWT is not an extend token  # fmt: skip
    moved = warnings.extend(holder, hooked.id, timedelta(minutes=1), None)
    assert moved.expires_at == hooked.expires_at + timedelta(minutes=1)  # type: ignore[operator]
    assert moved.warn_at is not None  # the new deadline is warned of in its turn
    assert warnings.scan() == 1
    shown, _ = warnings.listed(alice, hooked.id, None, 10)
    assert [e["deadline"] for e in shown] == sorted(e["deadline"] for e in shown)
    assert len(shown) == 2

    # A page at a time, the owner's only.
    first, cursor = warnings.listed(alice, hooked.id, None, 1)
    assert cursor is not None
    rest, end = warnings.listed(alice, hooked.id, cursor, 1)
    assert [e["id"] for e in first + rest] == [e["id"] for e in shown] and end is None
    with pytest.raises(NotFound):
        warnings.listed(BOB, hooked.id, None, 10)


def test_events_and_deliveries_are_forgotten_after_the_retention(
    services: bootstrap.Services, store: Store
) -> None:
    services.warnings.retention = timedelta(minutes=-10)  # their purge_at already past
    running(services, "ws-1", 2, webhook_url="https://hooks.example.com/t", webhook_secret="x")
    assert services.warnings.scan() == 1
    assert purge_expired(store, [EVENTS], RETAINED[EVENTS]) == 1
    assert purge_expired(store, [DELIVERIES], RETAINED[DELIVERIES]) == 1
