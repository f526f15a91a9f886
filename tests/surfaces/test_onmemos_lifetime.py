"""A session's metadata, its extension and what it last did, through the OnMemOS target."""

from __future__ import annotations

from datetime import datetime, timedelta

from flask.testing import FlaskClient
from tether import bootstrap
from tether.core.models import utcnow

from tests.surfaces.test_onmemos import create, h


def test_metadata_is_kept_shown_and_filters_the_list(api: FlaskClient) -> None:
    ml = create(api, metadata={"team": "ml", "env": "dev"})
    create(api, metadata={"team": "ml", "env": "prod"})
    create(api, metadata={"team": "web"})
    assert ml["metadata"] == ml["labels"] == {"team": "ml", "env": "dev"}

    def listed(*pairs: str) -> list[str]:
        r = api.get("/v1/sessions", query_string=[("metadata", p) for p in pairs], headers=h())
        assert r.status_code == 200, r.get_json()
        return sorted(s["metadata"].get("env", "-") for s in r.get_json()["sessions"])

    assert listed("team=ml") == ["dev", "prod"]
    assert listed("team=ml", "env=dev") == ["dev"]
    assert listed("team=ops") == []
    bad = api.get("/v1/sessions?metadata=no-equals-sign", headers=h())
    assert bad.status_code == 400 and "metadata" in bad.get_json()["detail"]
    refused = api.post("/v1/sessions", json={"template": "python", "metadata": {"a b": "c"}},
                       headers=h())  # fmt: skip
    assert refused.status_code == 400 and "metadata" in refused.get_json()["detail"]


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_extend_adds_minutes_or_sets_the_time_left_within_a_week(api: FlaskClient) -> None:
    s = create(api, ttl_minutes=10)
    before = when(s["expires_at"])
    r = api.post(f"/v1/sessions/{s['id']}/extend", json={"minutes": 30}, headers=h())
    assert r.status_code == 200, r.get_json()
    assert when(r.get_json()["expires_at"]) == before + timedelta(minutes=30)

    r = api.post(f"/v1/sessions/{s['id']}/extend", json={"expires_in": 120}, headers=h())
    left = when(r.get_json()["expires_at"]) - utcnow()
    assert timedelta(seconds=100) < left <= timedelta(seconds=120)

    for body, field in (({}, "minutes"), ({"minutes": 0}, "minutes"),
                        ({"minutes": 5, "expires_in": 5}, "expires_in"),
                        ({"expires_in": 8 * 24 * 3600}, "expires_in")):  # fmt: skip
        r = api.post(f"/v1/sessions/{s['id']}/extend", json=body, headers=h())
        assert r.status_code == 400 and field in r.get_json()["detail"], (body, r.get_json())
    # A week from now at most: 7 days of minutes on top of what is left is too much.
    r = api.post(f"/v1/sessions/{s['id']}/extend", json={"minutes": 1440}, headers=h())
    assert r.status_code == 200
    for _ in range(6):
        r = api.post(f"/v1/sessions/{s['id']}/extend", json={"minutes": 1440}, headers=h())
    assert r.status_code == 400 and "minutes" in r.get_json()["detail"], r.get_json()

    assert api.post("/v1/sessions/nope/extend", json={"minutes": 5}, headers=h()).status_code == 404
    api.delete(f"/v1/sessions/{s['id']}", headers=h())
    ended = api.post(f"/v1/sessions/{s['id']}/extend", json={"minutes": 5}, headers=h())
    assert ended.status_code == 409


def test_a_session_says_when_and_what_its_last_activity_was(api: FlaskClient) -> None:
    s = create(api)
    assert s["last_activity_source"] == "api"
    created = when(s["last_activity_at"])
    # Activity is recorded at most once a minute: a session a minute old records its exec.
    sessions = bootstrap.services().sessions
    sessions.repo.mutate(s["id"], lambda x: x.model_copy(
        update={"last_activity": created - timedelta(minutes=2)}))  # fmt: skip
    r = api.post(f"/v1/sessions/{s['id']}/execute", json={"command": "true"}, headers=h())
    assert r.status_code == 200
    got = api.get(f"/v1/sessions/{s['id']}", headers=h()).get_json()
    assert got["last_activity_source"] == "exec"
    assert when(got["last_activity_at"]) >= created
