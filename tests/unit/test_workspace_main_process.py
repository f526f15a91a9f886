"""A template's command runs as the workspace's main process: its output is the session log,
it stops with the workspace (its whole process group, sandboxed or not) and comes back on wake.
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from tether.core.models import Template, WorkspaceSpec
from tether.errors import NotFound
from tether.provision.local import LocalProvisioner
from tether.runtime.session_log import SESSION_LOG, LogWriter, tail
from tether.service.templates import DEFAULT_TEMPLATES

STAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (.*)$")
T = TypeVar("T")


@pytest.fixture(params=["bubblewrap", "none"])
def prov(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalProvisioner]:
    p = LocalProvisioner(tmp_path / "home", sandbox=request.param)
    yield p
    p.close()


def spec(sid: str, command: str) -> WorkspaceSpec:
    return WorkspaceSpec(
        session_id=sid, template=Template(name="main", display_name="Main", command=command)
    )


def wait_for(check: Callable[[], T], timeout: float = 15, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)
    return result


def texts(prov: LocalProvisioner, sid: str, n: int = 100) -> list[str]:
    """The log's lines without their stamps; fails on a line without one."""
    out = []
    for line in prov.logs(sid, n):
        m = STAMPED.match(line)
        assert m, f"line without a UTC timestamp: {line!r}"
        out.append(m.group(1))
    return out


def processes(marker: str) -> list[str]:
    """Host processes whose command line holds `marker` (sandboxed ones included)."""
    r = subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True)
    return r.stdout.splitlines()


def looping(marker: str) -> str:
    """A main process with a background child, both findable by `marker`, that keeps
    rewriting a heartbeat file."""
    return (
        f"(exec -a {marker}-child sleep 3600) &\n"
        f"while :; do date +%s%N > beat; sleep 0.1; done  # {marker}\n"
    )


def test_output_goes_to_the_log_line_by_line_with_timestamps(prov: LocalProvisioner) -> None:
    prov.start(spec("ws-log", "echo hello; echo oops >&2; sleep 60"))
    lines = wait_for(lambda: "oops" in (t := texts(prov, "ws-log")) and t, what="both lines")
    assert lines[0].startswith("[tether] main process started: pid ")
    assert lines[1:] == ["hello", "oops"]  # stdout and stderr, in order
    assert texts(prov, "ws-log", 1) == ["oops"]
    assert prov.logs("ws-log", 0) == []


def test_a_main_process_that_exits_is_logged_with_its_code_and_not_restarted(
    prov: LocalProvisioner,
) -> None:
    marker = f"tether-test-{uuid.uuid4().hex[:10]}"
    prov.start(spec("ws-exit", f"(exec -a {marker} sleep 3600) & echo bye; exit 3"))
    wait_for(
        lambda: "[tether] main process exited with code 3" in texts(prov, "ws-exit"),
        what="the exit line",
    )
    # What the command left running ends with it.
    wait_for(lambda: not processes(marker), timeout=5, what="the background child to end")
    time.sleep(0.5)
    assert texts(prov, "ws-exit").count("bye") == 1
    assert prov.exec("ws-exit", "echo still serving", 10).stdout == "still serving\n"


def test_hibernate_stops_the_main_process_wake_restarts_it_stop_leaves_nothing(
    prov: LocalProvisioner,
) -> None:
    marker = f"tether-test-{uuid.uuid4().hex[:10]}"
    beat = prov.workdir("ws-h") / "beat"
    prov.start(spec("ws-h", looping(marker)))
    wait_for(lambda: len(processes(marker)) >= 2, what="the main process and its child")
    wait_for(beat.exists, what="a heartbeat")

    prov.hibernate("ws-h")
    assert wait_for(lambda: not processes(marker), timeout=3, what="no process") is True
    last = beat.read_text()
    time.sleep(0.5)
    assert beat.read_text() == last, "the heartbeat stopped"
    lines = texts(prov, "ws-h")  # read while hibernated: no runtime to ask
    assert lines[-2:] == [
        "[tether] stopping main process",
        "[tether] main process killed by SIGTERM",
    ]

    prov.wake("ws-h")
    wait_for(lambda: len(processes(marker)) >= 2, what="the main process back")
    wait_for(lambda: beat.read_text() != last, what="the heartbeat again")
    assert sum(t.startswith("[tether] main process started") for t in texts(prov, "ws-h")) == 2

    prov.stop("ws-h")
    assert wait_for(lambda: not processes(marker), timeout=3, what="no process") is True
    with pytest.raises(NotFound):
        prov.logs("ws-h", 10)


def test_closing_the_provisioner_leaves_no_main_process(prov: LocalProvisioner) -> None:
    marker = f"tether-test-{uuid.uuid4().hex[:10]}"
    prov.start(spec("ws-c", looping(marker)))
    wait_for(lambda: len(processes(marker)) >= 2, what="the main process and its child")
    prov.close()  # the agent shutting down
    assert wait_for(lambda: not processes(marker), timeout=3, what="no process") is True


def test_the_log_is_not_read_through_a_symlink_the_workspace_planted(
    prov: LocalProvisioner, tmp_path: Path
) -> None:
    prov.start(spec("ws-s", "echo mine"))
    wait_for(lambda: "mine" in texts(prov, "ws-s"), what="the log")
    secret = tmp_path / "home" / "tether.db"
    secret.write_text("secret\n")
    r = prov.exec("ws-s", f"rm -f ~/{SESSION_LOG} && ln -s {secret} ~/{SESSION_LOG}", 10)
    assert r.returncode == 0, r.stderr
    assert prov.logs("ws-s", 10) == []


def test_firefox_browser_template_runs_firefox_on_a_virtual_display(tmp_path: Path) -> None:
    template = next(t for t in DEFAULT_TEMPLATES if t.name == "firefox-browser")
    prov = LocalProvisioner(tmp_path / "home")
    try:
        prov.start(WorkspaceSpec(session_id="ws-fx", template=template))
        probe = (
            "xdpyinfo -display :$(cat ~/.tether/display) | grep dimensions && pgrep -x firefox-esr"
        )

        def answered() -> str:
            r = prov.exec("ws-fx", probe, 10)
            return r.stdout if r.returncode == 0 else ""

        out = wait_for(answered, timeout=30, what="the display and Firefox")
        assert f"{template.vnc.resolution} pixels" in out
        assert any(t.startswith("display :") for t in texts(prov, "ws-fx"))
        # A desktop, not a kiosk: a window manager runs and has framed Firefox's window (a
        # title bar to move, resize and close it by), and Firefox shows its own toolbars.
        framed = (
            "export DISPLAY=:$(cat ~/.tether/display); "
            "xprop -root _NET_SUPPORTING_WM_CHECK | grep -q 'window id' && "
            "for w in $(xdotool search --onlyvisible --class firefox); do "
            "xprop -id $w _NET_FRAME_EXTENTS; done | grep -v 'not found'"
        )

        def managed() -> str:
            r = prov.exec("ws-fx", framed, 10)
            return r.stdout if r.returncode == 0 else ""

        assert "_NET_FRAME_EXTENTS" in wait_for(managed, timeout=60, what="a framed window")
        cmdline = prov.exec("ws-fx", "tr '\\0' ' ' </proc/$(pgrep -x firefox-esr)/cmdline", 10)
        assert "firefox-esr" in cmdline.stdout and "--kiosk" not in cmdline.stdout
    finally:
        prov.close()


def test_default_templates() -> None:
    by_name = {t.name: t for t in DEFAULT_TEMPLATES}
    assert by_name["python"].command is None and by_name["shell"].command is None
    fx = by_name["firefox-browser"]
    assert (fx.display_name, fx.category) == ("Firefox Web Browser", "Web Browsers")
    assert fx.vnc.enabled and fx.vnc.port == 5900
    assert fx.resources == {"memory": "2Gi", "cpu": "1000m"} and fx.idle_timeout == "30m"


def test_tail_reads_from_the_end(tmp_path: Path) -> None:
    log = tmp_path / SESSION_LOG
    log.parent.mkdir()
    assert tail(tmp_path, 5) == []  # no log yet
    lines = [f"line {i} " + "x" * (i % 300) for i in range(5000)]  # crosses many blocks
    log.write_text("".join(f"{line}\n" for line in lines))
    assert tail(tmp_path, 3) == lines[-3:]
    assert tail(tmp_path, 1234) == lines[-1234:]
    assert tail(tmp_path, 10_000) == lines
    with log.open("a") as f:
        f.write("partial")  # a line being written
    assert tail(tmp_path, 2) == [lines[-1], "partial"]


def test_tail_of_a_huge_log_reads_only_the_end(tmp_path: Path) -> None:
    log = tmp_path / SESSION_LOG
    log.parent.mkdir()
    with log.open("wb") as f:
        f.truncate(4 << 30)  # sparse: 4 GiB that reading in full would take seconds
        f.seek(0, 2)
        f.write(b"\none\ntwo\n")
    started = time.monotonic()
    assert tail(tmp_path, 2) == ["one", "two"]
    assert time.monotonic() - started < 0.5


def test_a_log_is_opened_through_no_link_the_workspace_planted(tmp_path: Path) -> None:
    """The runtime's logs: a link at the file or at `.tether` is replaced, never followed
    (through one, the runtime would write where it leads, or fail to start)."""
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    (elsewhere / "session.log").write_text("theirs\n")
    (home / ".tether").symlink_to(elsewhere)
    writer = LogWriter(home / SESSION_LOG)
    writer.write("ours")
    writer.close()
    assert not (home / ".tether").is_symlink() and (home / ".tether").is_dir()
    assert (elsewhere / "session.log").read_text() == "theirs\n"
    assert [line.split(" ", 1)[1] for line in tail(home, 5)] == ["ours"]

    (home / SESSION_LOG).unlink()
    (home / SESSION_LOG).symlink_to(elsewhere / "session.log")
    writer = LogWriter(home / SESSION_LOG)
    writer.write("ours again")
    writer.close()
    assert not (home / SESSION_LOG).is_symlink()
    assert (elsewhere / "session.log").read_text() == "theirs\n"
    assert [line.split(" ", 1)[1] for line in tail(home, 5)] == ["ours again"]
