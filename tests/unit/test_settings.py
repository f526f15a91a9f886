"""The local agent's capacity: one workspace per GiB of the machine's memory unless
TETHER_AGENT_CAPACITY says otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tether.settings import Settings, default_capacity, machine_memory

GIB = 1 << 30


@pytest.mark.parametrize(
    ("memory", "capacity"),
    [
        (0, 1),  # at least one, however small the machine
        (512 * 2**20, 1),
        (GIB - 1, 1),
        (GIB, 1),
        (2 * GIB - 1, 1),  # whole GiB only: a workspace's default limit must fit
        (2 * GIB, 2),
        (15 * GIB + 900 * 2**20, 15),
        (64 * GIB, 64),
    ],
)
def test_capacity_is_one_workspace_per_gib_of_memory(memory: int, capacity: int) -> None:
    assert default_capacity(memory) == capacity


def test_the_machine_default_is_read_from_this_machines_memory() -> None:
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert machine_memory() == physical
    assert default_capacity() == max(1, physical // GIB)


def test_the_agent_takes_the_machines_default_unless_tether_agent_capacity_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TETHER_AGENT_CAPACITY", raising=False)
    assert Settings.from_env().agent_capacity == default_capacity(machine_memory())
    monkeypatch.setenv("TETHER_AGENT_CAPACITY", "")  # set but empty: the default too
    assert Settings.from_env().agent_capacity == default_capacity(machine_memory())

    wanted = default_capacity() + 3  # not the machine's figure
    monkeypatch.setenv("TETHER_AGENT_CAPACITY", str(wanted))
    assert Settings.from_env().agent_capacity == wanted
    assert Settings().agent_capacity == default_capacity(), "the dataclass's own default"


def test_a_gke_agent_needs_the_runtime_key_and_names_workspaces_in_its_clusters_domain(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Its runtimes are reached over the network by the relay too: both must derive tokens
    from one given key (one generated here would be a key the relay does not have)."""
    from tether import bootstrap
    from tether.errors import Invalid
    from tether.provision.gke import GkeProvisioner
    from tether.runtime import auth

    for name in [n for n in os.environ if n.startswith("TETHER_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TETHER_HOME", str(tmp_path))
    monkeypatch.setenv("TETHER_PLATFORM", "gke")
    with pytest.raises(Invalid, match="TETHER_RUNTIME_KEY"):
        bootstrap.make_provisioner(Settings.from_env())
    monkeypatch.setenv("TETHER_RUNTIME_KEY", "k" * 64)
    monkeypatch.setenv("TETHER_GKE_CLUSTER_DOMAIN", "tether.internal")
    settings = Settings.from_env()
    agent = bootstrap.make_provisioner(settings)
    assert isinstance(agent, GkeProvisioner)
    assert agent.cluster_url("s1") == "http://tether-s1.tether-workspaces.svc.tether.internal:8080"
    # The relay's side of the same settings derives the same token.
    relay_token = auth.token_for(bootstrap.runtime_key(settings), "s1")
    assert agent._auth("s1") == {auth.HEADER: relay_token}
    assert bootstrap.runtime_key(Settings(home=tmp_path)) == bootstrap.jwt_secret(
        Settings(home=tmp_path)
    ), "locally, one secret for both"
