"""The warning before expiry, sans I/O: which deadline comes first, when it is warned of (and
armed again by an extend or new activity), the webhook signature a receiver checks, and which
addresses the control plane refuses to post to."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import timedelta

import pytest
from tether.core.lifecycle import SessionState
from tether.core.models import Session, utcnow
from tether.errors import Invalid
from tether.service.warnings import event_id
from tether.service.webhooks import check_url, refused, sign, verify

NOW = utcnow()


def session(**fields: object) -> Session:
    base: dict[str, object] = dict(id="ws-1", owner="alice", template="python",
                                   platform="local", agent_id="a", state=SessionState.RUNNING,
                                   warn_minutes=5)  # fmt: skip
    return Session.model_validate(base | fields)


def test_a_ttl_is_warned_of_its_window_before_it_ends() -> None:
    s = session(expires_at=NOW + timedelta(minutes=30))
    assert s.deadline() == (NOW + timedelta(minutes=30), "ttl")
    assert s.warn_at == NOW + timedelta(minutes=25)
    assert s.doc()["warn_at"] == s.warn_at  # stored: what the sweeper's query reads


def test_once_warned_of_a_deadline_it_is_not_again_until_an_extend_moves_it() -> None:
    s = session(expires_at=NOW + timedelta(minutes=3))
    assert s.warn_at is not None and s.warn_at < NOW  # inside the window: due at once
    s.warned_for = s.expires_at
    assert s.warn_at is None
    s.expires_at = NOW + timedelta(minutes=63)  # extended: armed again
    assert s.warn_at == NOW + timedelta(minutes=58)


def test_the_idle_timeout_comes_first_when_it_is_sooner_and_its_window_is_at_most_half() -> None:
    s = session(expires_at=NOW + timedelta(hours=1), idle_timeout="8s", last_activity=NOW)
    assert s.deadline() == (NOW + timedelta(seconds=8), "idle")
    assert s.warn_at == NOW + timedelta(seconds=4)  # not 5 minutes: activity would re-warn
    s.warned_for = NOW + timedelta(seconds=8)
    assert s.warn_at is None
    s.last_activity = NOW + timedelta(seconds=3)  # used again: the next idle deadline is warned
    assert s.warn_at == NOW + timedelta(seconds=7)


def test_hibernated_sessions_are_warned_of_their_ttl_not_of_idleness() -> None:
    s = session(state=SessionState.HIBERNATED, idle_timeout="10m",
                expires_at=NOW + timedelta(hours=2))  # fmt: skip
    assert s.deadline() == (NOW + timedelta(hours=2), "ttl")


@pytest.mark.parametrize(
    "fields",
    [
        {"long_lived": True},  # no TTL, no idle timeout
        {"expires_at": NOW + timedelta(minutes=1), "warn_minutes": 0},  # asked for none
        {"expires_at": NOW + timedelta(minutes=1), "state": SessionState.TERMINATED},
        {"expires_at": NOW + timedelta(minutes=1), "state": SessionState.FAILED},
    ],
)
def test_no_warning_without_a_deadline_or_with_warnings_off(fields: dict[str, object]) -> None:
    assert session(**fields).warn_at is None


def test_an_event_id_names_one_deadline() -> None:
    a = event_id("ws-1", "ttl", NOW)
    assert a == event_id("ws-1", "ttl", NOW)
    assert a != event_id("ws-1", "ttl", NOW + timedelta(minutes=1))
    assert a != event_id("ws-1", "idle", NOW)


def test_the_signature_is_the_documented_hmac_and_a_receiver_checks_it() -> None:
    body, secret, t = b'{"type":"expiry_warning"}', "whsec_x", 1_700_000_000
    header = sign(secret, body, t)
    mac = hmac.new(secret.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={mac}"
    assert verify(secret, header, body, now=t + 10)
    assert not verify(secret, header, body + b" ", now=t)  # another body
    assert not verify("whsec_y", header, body, now=t)  # another secret
    assert not verify(secret, header, body, now=t + 3600)  # replayed an hour later
    assert not verify(secret, "v1=abc", body, now=time.time())


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "192.168.0.1", "172.16.0.9", "169.254.1.1", "::1", "fe80::1",
     "fc00::1", "100.64.0.1", "0.0.0.0", "::ffff:127.0.0.1", "224.0.0.1"],
)  # fmt: skip
def test_private_loopback_and_link_local_addresses_are_refused(address: str) -> None:
    assert refused(address, allow_private=False) is not None


def test_the_metadata_server_is_refused_even_where_private_addresses_are_allowed() -> None:
    assert refused("169.254.169.254", allow_private=True) == "the metadata server"
    assert refused("127.0.0.1", allow_private=True) is None
    assert refused("8.8.8.8", allow_private=False) is None
    with pytest.raises(Invalid, match="metadata"):
        check_url("http://metadata.google.internal/computeMetadata/v1/", allow_private=True)


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/", "example.com/hook", "http://user:pw@example.com/", "http:///nohost",
     "https://example.com/" + "a" * 2100, "http://10.0.0.1/hook", "http://[::1]:8080/"],
)  # fmt: skip
def test_a_webhook_url_is_http_with_a_public_host(url: str) -> None:
    with pytest.raises(Invalid, match="webhook_url"):
        check_url(url, allow_private=False)


def test_a_public_url_is_taken() -> None:
    assert check_url("https://hooks.example.com/tether?x=1", allow_private=False)
