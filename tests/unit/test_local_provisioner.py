"""Local workspaces: sandboxed, isolated from the database and each other, idempotent."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from tether.core.models import Template, WorkspaceSpec
from tether.errors import NotFound
from tether.provision.local import LocalProvisioner


@pytest.fixture
def prov(tmp_path: Path) -> Iterator[LocalProvisioner]:
    p = LocalProvisioner(tmp_path / "home")
    yield p
    p.close()


def spec(sid: str) -> WorkspaceSpec:
    return WorkspaceSpec(
        session_id=sid,
        template=Template(name="shell", display_name="Shell", env={"GREETING": "hi"}),
    )


def test_bubblewrap_is_used_when_installed(prov: LocalProvisioner) -> None:
    assert prov.sandbox is (shutil.which("bwrap") is not None)
    assert shutil.which("bwrap"), "infra/apt-packages.sh installs bubblewrap"


def test_workspace_sees_its_home_not_the_database_or_other_workspaces(
    prov: LocalProvisioner, tmp_path: Path
) -> None:
    (tmp_path / "home").mkdir(exist_ok=True)
    (tmp_path / "home" / "tether.db").write_text("secret")
    a = prov.start(spec("ws-a"))
    prov.start(spec("ws-b"))
    (prov.workdir("ws-b") / "private.txt").write_text("b's data")
    r = prov.exec(
        "ws-a",
        f"cat {tmp_path}/home/tether.db; cat {prov.workdir('ws-b')}/private.txt;"
        " echo $HOME $GREETING",
        10,
    )
    assert "secret" not in r.stdout and "b's data" not in r.stdout
    assert r.stdout.strip() == f"{prov.workdir('ws-a')} hi"
    assert Path(a.details["bucket_name"]).is_dir()
    w = prov.exec("ws-a", "echo data > bucket/file && touch /etc/nope", 10)
    assert (Path(a.details["bucket_name"]) / "file").read_text() == "data\n"
    assert w.returncode != 0, "the host outside the workspace is read-only"


def test_start_is_idempotent_and_stop_frees_everything(prov: LocalProvisioner) -> None:
    one = prov.start(spec("ws-x"))
    two = prov.start(spec("ws-x"))
    assert one == two
    prov.stop("ws-x")
    prov.stop("ws-x")
    assert not prov.workdir("ws-x").exists()
    with pytest.raises(NotFound):
        prov.exec("ws-x", "true", 5)


def test_hibernate_keeps_the_home_and_wake_restores_it(prov: LocalProvisioner) -> None:
    prov.start(spec("ws-h"))
    prov.exec("ws-h", "echo kept > note", 5)
    prov.hibernate("ws-h")
    with pytest.raises(NotFound):
        prov.exec("ws-h", "true", 5)
    prov.wake("ws-h")
    assert prov.exec("ws-h", "cat note", 5).stdout == "kept\n"


def test_runtime_that_died_comes_back_with_the_home(prov: LocalProvisioner) -> None:
    prov.start(spec("ws-r"))
    prov.exec("ws-r", "echo kept > note", 5)
    runtime = prov._runtimes["ws-r"].proc
    runtime.kill()  # the agent restarted, taking its workspaces' runtimes with it
    runtime.wait()
    assert prov.exec("ws-r", "cat note", 5).stdout == "kept\n"
