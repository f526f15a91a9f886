"""Template resources are Kubernetes quantities; a bad one is refused naming its field."""

from __future__ import annotations

import pytest
from tether.core.quantities import to_bytes, to_cores
from tether.errors import Invalid
from tether.provision.limits import Limits


def test_quantities_as_kubernetes_writes_them() -> None:
    assert to_bytes("512Mi", "m") == 512 << 20
    assert to_bytes("1G", "m") == 10**9
    assert to_bytes("2048", "m") == 2048
    assert to_cores("1500m", "c") == 1.5
    assert to_cores("2", "c") == 2


@pytest.mark.parametrize("bad", ["", "lots", "1Qi", "-1Gi", "1 Gi"])
def test_a_bad_quantity_names_its_field(bad: str) -> None:
    with pytest.raises(Invalid) as err:
        to_bytes(bad, "resources.memory")
    assert err.value.field == "resources.memory"


def test_a_templates_resources_become_limits_with_defaults_for_the_rest() -> None:
    limits = Limits.of({"cpu": "500m", "memory": "256Mi"})
    assert (limits.cpu, limits.memory) == (0.5, 256 << 20)
    assert (limits.pids, limits.tmp, limits.disk) == (512, 256 << 20, 1 << 30)
    assert Limits.of({"storage": "10Gi", "pids": "64"}).disk == 10 << 30
