"""The warm pool of local workspaces: started ahead per template, given to one session each,
never reused, refilled; what a session leaves in its workspace never reaches another."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tether.core.models import Template, WorkspaceSpec
from tether.provision.local import LocalProvisioner
from tether.provision.uds import UnixHTTPClient
from tether.runtime import auth

SECRET = "pool-test-secret"


def wait_for(what: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.02)


@pytest.fixture
def prov(tmp_path: Path) -> Iterator[LocalProvisioner]:
    p = LocalProvisioner(tmp_path / "home", secret=SECRET, pool={"shell": 2})
    yield p
    p.close()


def spec(sid: str, **extra: object) -> WorkspaceSpec:
    template = Template(name="shell", display_name="Shell", env={"GREETING": "hi"})
    return WorkspaceSpec(session_id=sid, template=template, **extra)  # type: ignore[arg-type]


def pooled(prov: LocalProvisioner, sid: str) -> bool:
    return "pool-" in prov.start(spec(sid)).details["workdir"]


def test_sessions_take_workspaces_started_ahead_and_the_pool_refills(
    prov: LocalProvisioner,
) -> None:
    assert not pooled(prov, "ws-first")  # the first of a template shows the pool what to start
    wait_for(lambda: prov.warm() == 2)
    assert pooled(prov, "ws-a") and pooled(prov, "ws-b")
    assert prov.exec("ws-a", "echo $GREETING $HOME", 10).stdout == "hi /home/tether\n"
    assert prov.start(spec("ws-a")) == prov.start(spec("ws-a"))  # idempotent: the same one
    wait_for(lambda: prov.warm() == 2)  # refilled
    # A session with an environment of its own starts its own workspace.
    info = prov.start(spec("ws-env", env={"EXTRA": "1"}))
    assert "pool-" not in info.details["workdir"]


def test_nothing_of_one_session_reaches_the_next(prov: LocalProvisioner, tmp_path: Path) -> None:
    prov.start(spec("ws-first"))
    wait_for(lambda: prov.warm() == 2)
    assert pooled(prov, "ws-a")
    a = prov.start(spec("ws-a")).details["workdir"]
    planted = "echo secret > ~/left; echo secret > /tmp/left; (sleep 613 &) ; echo planted"
    assert prov.exec("ws-a", planted, 10).stdout == "planted\n"
    prov.stop("ws-a")
    assert not Path(a).exists()
    wait_for(lambda: subprocess.run(["pgrep", "-f", "sleep 613"]).returncode == 1)
    wait_for(lambda: prov.warm() == 2)
    for sid in ("ws-b", "ws-c"):
        assert pooled(prov, sid)
        look = "cat ~/left /tmp/left 2>&1; pgrep -c sleep; true"
        seen = prov.exec(sid, look, 10).stdout
        assert "secret" not in seen and seen.strip().endswith("0"), seen
    assert prov.start(spec("ws-b")).details["workdir"] != a


def test_sessions_taking_at_once_never_share_a_workspace(prov: LocalProvisioner) -> None:
    prov.start(spec("ws-first"))
    wait_for(lambda: prov.warm() == 2)
    homes: dict[str, str] = {}

    def take(sid: str) -> None:
        homes[sid] = prov.start(spec(sid)).details["workdir"]

    threads = [threading.Thread(target=take, args=(f"ws-{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(homes.values())) == 4
    assert sum("pool-" in h for h in homes.values()) == 2
    for sid in homes:  # each one answers as its own
        prov.exec(sid, f"echo {sid} > ~/me", 10)
    for sid in homes:
        assert prov.exec(sid, "cat ~/me", 10).stdout == f"{sid}\n"


def test_a_taken_workspace_answers_to_its_session_only_and_survives_an_agent_restart(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    prov = LocalProvisioner(home, secret=SECRET, pool={"shell": 1})
    try:
        prov.start(spec("ws-first"))
        wait_for(lambda: prov.warm() == 1)
        info = prov.start(spec("ws-a"))
        wid = Path(info.details["workdir"]).parent.parent.name
        assert wid.startswith("pool-")
        sock = info.url.removeprefix("http+unix://")  # type: ignore[union-attr]
        for token, status in ((auth.token_for(SECRET, wid), 401),
                              (auth.token_for(SECRET, "ws-a"), 200)):  # fmt: skip
            client = UnixHTTPClient(sock, token)
            assert client.request("GET", "/activity")[0] == status
            client.close()
        prov.exec("ws-a", "echo kept > ~/note", 10)
        wait_for(lambda: prov.warm() == 1)
    finally:
        prov.close()
    leftover = [d.name for d in (home / "workspaces").iterdir() if d.name.startswith("pool-")]
    assert leftover == [wid]  # the unclaimed one is gone with the agent
    again = LocalProvisioner(home, secret=SECRET, pool={"shell": 1})
    try:
        assert again.exec("ws-a", "cat ~/note", 10).stdout == "kept\n"
        sock = again.start(spec("ws-a")).url.removeprefix("http+unix://")  # type: ignore[union-attr]
        client = UnixHTTPClient(sock, auth.token_for(SECRET, "ws-a"))
        assert client.request("GET", "/activity")[0] == 200
        client.close()
        again.stop("ws-a")
        assert not (home / "workspaces" / wid).exists()
    finally:
        again.close()


def test_a_changed_template_retires_its_old_pool_and_a_dead_one_is_never_given(
    prov: LocalProvisioner, tmp_path: Path
) -> None:
    prov.start(spec("ws-first"))
    wait_for(lambda: prov.warm() == 2)
    old = {d.name for d in (tmp_path / "home" / "workspaces").glob("pool-*")}
    changed = Template(name="shell", display_name="Shell", env={"GREETING": "hello"})
    info = prov.start(WorkspaceSpec(session_id="ws-new", template=changed))
    assert "pool-" not in info.details["workdir"]  # nothing ready of the new kind yet
    wait_for(lambda: prov.warm() == 2)
    now = {d.name for d in (tmp_path / "home" / "workspaces").glob("pool-*")}
    assert not old & now, "the old template's workspaces are gone"
    assert prov.exec("ws-new", "echo $GREETING", 10).stdout == "hello\n"
    # A pooled workspace whose runtime died while it waited is stopped, not given out.
    for wid in now:
        prov._runtimes[wid].proc.kill()
    wait_for(lambda: all(prov._runtimes[w].proc.poll() is not None for w in now))
    took = prov.start(WorkspaceSpec(session_id="ws-after", template=changed))
    assert Path(took.details["workdir"]).parent.parent.name not in now
    assert prov.exec("ws-after", "echo $GREETING", 10).stdout == "hello\n"
