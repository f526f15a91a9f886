"""The suite's secret scan (tests/secretscan.py) finds each kind of credential it looks for,
and passes the lines that only talk about them."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import jwt
from tether.service.tickets import PREFIX

from tests import secretscan

PLANTED = {
    "API key": "accepted tether_adminkey0001_" + "a" * 32,
    "JWT": "token " + jwt.encode({"sub": "alice", "exp": 2_000_000_000}, "k" * 32),
    "ticket": f"GET /relay?ticket={PREFIX}{'x' * 32}",
    "webhook secret": "signed with whsec_" + "s" * 43,
    "bearer token": "Authorization: Bearer " + "t" * 40,
    "password": '{"username": "admin", "password": "hunter2-hunter2"}',
}
HARMLESS = [
    "password: field required",
    "Password of user 'admin' changed",
    '{"password": "***"}',
    "POST /api/v1/auth/login answered 401",
    "Authorization: Bearer [Filtered]",
    "tether_api_key is not set",
]


def test_each_kind_is_found_and_talk_about_credentials_is_not() -> None:
    assert {kind for kind, _ in secretscan.found(PLANTED.values())} == set(PLANTED)
    for kind, line in PLANTED.items():
        assert [k for k, _ in secretscan.found([line])] == [kind], line
    assert list(secretscan.found(HARMLESS)) == []


def test_a_logged_credential_is_found_in_the_files_it_scans() -> None:
    # Planted outside pytest's temporary directory, and handed to the file's handler only:
    # the suite's own scan must not find them.
    with tempfile.TemporaryDirectory() as where:
        root = Path(where)
        handler = secretscan.keep(root / "worker.log")
        logging.getLogger().removeHandler(handler)
        record = logging.makeLogRecord(
            {
                "name": "tether.leaky",
                "levelno": logging.WARNING,
                "levelname": "WARNING",
                "msg": PLANTED["password"],
            }
        )
        handler.handle(record)
        handler.close()
        (root / "server").mkdir()
        shown = "Admin API key (shown once; ...):\n  " + PLANTED["API key"].split()[-1] + "\n"
        (root / "server" / "tether-up.log").write_text(shown + PLANTED["ticket"] + "\n")
        workspace = root / "home" / "ws-1" / secretscan.WORKSPACE_FILES
        workspace.mkdir(parents=True)  # what a workspace's commands print is theirs
        (workspace / "session.log").write_text(PLANTED["API key"] + "\n")
        count, hits = secretscan.scan([root])
    assert count == 4 and sorted(kind for _, kind, _ in hits) == ["password", "ticket"]
