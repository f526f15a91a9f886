"""TETHER_LOCAL_STANDS_IN: which providers a local agent serves when they have no agent of
their own. On by default for `tether up`'s local stack (gke, cloud_run), off elsewhere."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from tether.core.models import utcnow
from tether.errors import Unavailable
from tether.service.agents import Agents
from tether.settings import STANDS_IN, Settings
from tether.store.sqlite import SqliteStore


def test_the_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TETHER_LOCAL_STANDS_IN", raising=False)
    assert Settings.from_env().local_stands_in is None  # unset: where it runs decides
    assert Settings.from_env().local_stack().local_stands_in == STANDS_IN == ("gke", "cloud_run")
    monkeypatch.setenv("TETHER_LOCAL_STANDS_IN", "none")
    assert Settings.from_env().local_stack().local_stands_in == ()
    monkeypatch.setenv("TETHER_LOCAL_STANDS_IN", " gke ,gke")
    assert Settings.from_env().local_stack().local_stands_in == ("gke",)
    monkeypatch.setenv("TETHER_LOCAL_STANDS_IN", "gke,kubernetes")
    with pytest.raises(ValueError, match="kubernetes"):
        Settings.from_env()


@pytest.fixture
def agents(tmp_path: Path) -> Agents:
    found = Agents(SqliteStore(tmp_path / "store.db"), stand_in=("gke", "cloud_run"))
    found.register("local-1", "local", "local", 4)
    return found


def test_a_local_agent_stands_in_only_for_providers_with_no_agent(agents: Agents) -> None:
    assert [a.id for a in agents.candidates("gke")] == ["local-1"]
    assert [a.id for a in agents.candidates("cloud_run")] == ["local-1"]
    with pytest.raises(Unavailable, match="workstations"):
        agents.candidates("workstations")  # not one it stands in for

    agents.register("gke-1", "gke", "europe-west1", 4)  # GKE has its own now
    assert [a.id for a in agents.candidates("gke")] == ["gke-1"]
    # Its own agent offline: waited for, not stood in for.
    agents.store.patch("agents", "gke-1", {"last_heartbeat": utcnow() - timedelta(hours=1)})
    agents.recent.forget()
    with pytest.raises(Unavailable, match="gke"):
        agents.candidates("gke")
    assert [a.id for a in agents.candidates("cloud_run")] == ["local-1"]


def test_nothing_is_stood_in_for_where_the_setting_is_off(tmp_path: Path) -> None:
    deployed = Agents(SqliteStore(tmp_path / "store.db"))  # a deployment's default
    deployed.register("local-1", "local", "local", 4)
    for provider in ("gke", "cloud_run"):
        with pytest.raises(Unavailable, match=provider):
            deployed.candidates(provider)
    assert [a.id for a in deployed.candidates("auto")] == ["local-1"]
