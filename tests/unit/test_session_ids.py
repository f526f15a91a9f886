"""Session ids: readable, and unguessable by 64 random bits."""

from __future__ import annotations

import re

from tether.service.sessions import new_session_id


def test_ten_thousand_ids_made_in_one_second_never_collide() -> None:
    ids = {new_session_id("default", "alice") for _ in range(10_000)}
    assert len(ids) == 10_000


def test_an_id_carries_64_random_bits_after_its_readable_part() -> None:
    sid = new_session_id("Team A", "bob@example.com")
    found = re.fullmatch(r"ws-team-a-bob-example-com-\d+-([0-9a-f]+)", sid)
    assert found and len(found.group(1)) * 4 >= 64, sid
