"""Local workspaces: idempotent, kept across hibernation and agent restarts, with what the
agent keeps about them out of their reach. (What a workspace cannot do to the host or to
others is the attack suite's: tests/provision/test_sandbox_attacks.py.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tether.core.models import Template, WorkspaceSpec
from tether.errors import Invalid, NotFound, Unavailable
from tether.provision.local import LocalProvisioner


@pytest.fixture
def prov(tmp_path: Path) -> Iterator[LocalProvisioner]:
    p = LocalProvisioner(tmp_path / "home")
    yield p
    p.close()


def spec(sid: str, **template: object) -> WorkspaceSpec:
    return WorkspaceSpec(
        session_id=sid,
        template=Template(name="shell", display_name="Shell", env={"GREETING": "hi"}, **template),
    )


def test_a_workspace_has_its_home_its_bucket_and_its_template_env(prov: LocalProvisioner) -> None:
    info = prov.start(spec("ws-a"))
    r = prov.exec("ws-a", "echo $HOME $GREETING; pwd; echo data > bucket/file; ls -d /bucket", 10)
    assert r.stdout.splitlines() == ["/home/tether hi", "/home/tether", "/bucket"]
    assert (Path(info.details["bucket_name"]) / "file").read_text() == "data\n"
    assert info.details["sandbox"] == "bubblewrap"


def test_an_unknown_sandbox_or_a_missing_tool_is_refused_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(Invalid, match="TETHER_SANDBOX"):
        LocalProvisioner(tmp_path / "a", sandbox="chroot")
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it, nor runsc
    with pytest.raises(Unavailable, match="bubblewrap"):
        LocalProvisioner(tmp_path / "b")
    with pytest.raises(Unavailable, match="TETHER_SANDBOX=gvisor needs root and runsc"):
        LocalProvisioner(tmp_path / "c", sandbox="gvisor")


def test_a_bad_resource_quantity_fails_the_start_naming_it(prov: LocalProvisioner) -> None:
    with pytest.raises(Invalid, match=r"resources\.memory"):
        prov.start(spec("ws-q", resources={"memory": "lots"}))


def test_start_is_idempotent_and_stop_frees_everything(prov: LocalProvisioner) -> None:
    one = prov.start(spec("ws-x"))
    two = prov.start(spec("ws-x"))
    assert one == two
    prov.exec("ws-x", "mkdir -p locked/deeper && touch locked/deeper/f && chmod 000 locked", 5)
    prov.stop("ws-x")
    prov.stop("ws-x")
    assert not prov.control("ws-x").exists() and not prov.bucket("ws-x").exists()
    assert not prov.socket_path("ws-x").exists()
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


def test_egress_without_slirp4netns_is_refused_saying_so(
    prov: LocalProvisioner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tools = tmp_path / "bin"  # what the sandbox needs, less the user-mode network
    tools.mkdir()
    for tool in ("bwrap", "setpriv", "ip", "nsenter", "mkfs.ext4", "mount", "umount"):
        if found := shutil.which(tool):
            (tools / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(tools))
    with pytest.raises(Unavailable, match="Egress needs slirp4netns"):
        prov.start(spec("ws-e", network="egress"))
    prov.start(spec("ws-n"))  # a workspace without egress starts all the same
    monkeypatch.undo()
    # Nothing of the refused one runs on: its disk is let go of as soon as it is deleted.
    image = prov.control("ws-e") / "disk.img"
    prov.stop("ws-e")
    attached = subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True)
    assert attached.stdout == ""


def test_the_runtimes_sockets_refuse_a_caller_without_the_workspaces_token(
    prov: LocalProvisioner,
) -> None:
    from tether.provision.uds import UnixHTTPClient, UnixJsonClient

    prov.start(spec("ws-t"))
    prov.start(spec("ws-u"))
    path = str(prov.socket_path("ws-t"))
    assert UnixHTTPClient(path).request("GET", "/activity")[0] == 401
    stranger = UnixHTTPClient(path, prov_token(prov, "ws-u"))  # another workspace's token
    assert stranger.request("GET", "/activity")[0] == 401
    assert stranger.request("POST", "/exec", {"command": "echo ran"})[0] == 401
    # Only that it is up, to anyone (a GKE pod's readiness probe has no token).
    assert UnixHTTPClient(path).request("GET", "/health")[0] == 200
    channel = UnixJsonClient(str(prov.socket_path("ws-t", ".exec")), prov_token(prov, "ws-u"))
    answer = channel.call({"command": "echo ran"}, 5)
    assert "ran" not in str(answer) and "token" in answer["detail"]
    assert prov.exec("ws-t", "echo ran", 5).stdout == "ran\n"


def prov_token(prov: LocalProvisioner, sid: str) -> str:
    from tether.runtime import auth

    return auth.token_for(prov.secret, sid)


RUN_ONE = """
import sys
from pathlib import Path
from tether.core.models import Template, WorkspaceSpec
from tether.provision.local import LocalProvisioner
prov = LocalProvisioner(Path(sys.argv[1]))
prov.start(WorkspaceSpec(session_id="ws-1", template=Template(name="t", display_name="T")))
print(prov.exec("ws-1", "echo ran", 10).stdout, end="")
prov.close()
"""


def test_a_stack_installed_under_tmp_still_runs_workspaces(tmp_path: Path) -> None:
    """The sandbox's /tmp is its own: an interpreter, virtualenv or checkout under the host's
    /tmp (as a CI clone may be) is brought back into view for the runtime."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    ours = [p for p in sys.path if p.endswith("site-packages") or Path(p, "tether").is_dir()]
    (site / "stack.pth").write_text("\n".join(ours) + "\n")
    r = subprocess.run(
        [str(venv / "bin" / "python"), "-c", RUN_ONE, str(tmp_path / "home")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.stdout == "ran\n", r.stderr[-2000:]


def test_a_template_that_asks_for_gvisor_gets_it_or_a_clear_no(prov: LocalProvisioner) -> None:
    asks = spec("ws-gv", sandbox="gvisor")
    if os.geteuid() != 0:  # an ordinary user's agent cannot run runsc: it says so
        with pytest.raises(Unavailable, match="asks for gVisor"):
            prov.start(asks)
        return
    info = prov.start(asks)
    assert info.details["sandbox"] == "gvisor"
    assert "Starting gVisor" in prov.exec("ws-gv", "dmesg", 30).stdout
    prov.start(spec("ws-bw"))  # beside it, the agent's own kind
    assert "gVisor" not in prov.exec("ws-bw", "dmesg 2>&1; true", 30).stdout
    sockets = prov.socket_path("ws-gv").parent  # a directory of its own
    prov.stop("ws-gv")
    assert not sockets.exists()
