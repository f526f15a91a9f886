"""Attacks from inside a workspace, each expected to fail while the other workspaces (and the
stack) keep serving. Real commands in real sandboxes: what a tenant's hostile code would try."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from tether.errors import NotFound, Unavailable
from tether.provision import sandbox
from tether.provision.local import LocalProvisioner
from tether.provision.network import ALWAYS_CUT, host_addresses

from tests.sandbox.conftest import METADATA, OUTSIDE_PORT, Attack, Outside, _Listener

# errno of a syscall made through libc's syscall(2), printed by the system's python3.
SYSCALL = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
for nr in map(int, sys.argv[1:]):
    r = libc.syscall(nr, 0, 0, 0, 0, 0, 0)
    print(nr, r, ctypes.get_errno())
"""
# x86_64 numbers: mount umount2 unshare setns ptrace keyctl bpf chroot pivot_root
# init_module process_vm_readv open_by_handle_at io_uring_setup; clone3 answers ENOSYS.
REFUSED = (165, 166, 272, 308, 101, 250, 321, 161, 155, 175, 310, 304, 425)
CLONE3 = 435


def tcp(host: str, port: int) -> str:
    """A shell line that sends an HTTP request to host:port and prints the first bytes of the
    answer, or 'refused'."""
    return (
        f"timeout 5 bash -c 'exec 3<>/dev/tcp/{host}/{port}; "
        'printf "GET / HTTP/1.0\\r\\n\\r\\n" >&3; head -c 100 <&3\' 2>/dev/null || echo refused'
    )


def test_no_capabilities_no_privileges_and_a_seccomp_filter(attack: Attack) -> None:
    sid = attack.start("ws-caps")
    status = attack.out(sid, "grep -E '^(Cap...|NoNewPrivs|Seccomp):' /proc/self/status")
    fields = dict(line.split(":\t") for line in status.splitlines())
    caps = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
    assert {fields.get(k, "0000000000000000") for k in caps} == {"0000000000000000"}
    uid = sandbox.host_uid(sid) if os.geteuid() == 0 else os.geteuid()
    if attack.gvisor:  # its uid as it is, under a kernel of gVisor's (no seccomp of ours)
        assert attack.out(sid, "id -u") == f"{uid}\n"
    else:
        assert fields["NoNewPrivs"] == "1" and fields["Seccomp"] == "2"
        assert attack.out(sid, "id -u") == "0\n"  # root inside ...
    assert attack.out(sid, "cat /proc/self/uid_map").split()[:2] != ["0", "0"] or uid != 0
    home = attack.prov.workdir(sid)
    attack.run(sid, "touch made-by-root-inside")
    assert (home / "made-by-root-inside").stat().st_uid == uid  # ... an unprivileged id here
    assert uid != 0


def test_syscalls_an_attacker_reaches_for_are_refused(attack: Attack) -> None:
    sid = attack.start("ws-sys")
    out = attack.out(sid, f"python3 -c '{SYSCALL}' {' '.join(map(str, (*REFUSED, CLONE3)))}")
    answers = {int(nr): (int(r), int(e)) for nr, r, e in (ln.split() for ln in out.splitlines())}
    commands = ["unshare -m true", "unshare -n true", "chroot / true"]
    if attack.gvisor:
        # gVisor's own kernel serves these: unshare(0) and PTRACE_TRACEME succeed inside it
        # (and a user namespace can be made there), touching nothing of the host's.
        for nr in set(REFUSED) - {272, 101}:
            assert answers[nr][0] == -1, f"syscall {nr} was not refused"
    else:
        for nr in REFUSED:
            assert answers[nr] == (-1, 1), f"syscall {nr} was not refused with EPERM"
        assert answers[CLONE3] == (-1, 38)
        commands.append("unshare -U true")
    for command in commands:
        r = attack.run(sid, command)
        assert r.returncode != 0, command
    # vsock reaches the hypervisor past any network namespace; packet and others are refused
    families = "import socket\nfor f in (40, 17, 38, 30):\n  try: socket.socket(f, 1)\n  "
    families += "except OSError as e: print(f, e.errno)\n  else: print(f, 'made')"
    made = attack.out(sid, f'python3 -c "{families}"')
    assert "made" not in made, made


def test_the_host_is_read_only_and_mostly_absent(attack: Attack) -> None:
    sid = attack.start("ws-ro")
    r = attack.run(
        sid,
        "mount -o remount,bind,rw / ; mount -t tmpfs t /mnt; echo x > /var/tmp/f; "
        "touch /usr/x /etc/x; cat /etc/shadow; mknod /tmp/disk b 8 0; echo /dev/* /*",
    )
    assert not Path("/var/tmp/f").exists() and not Path("/usr/x").exists()
    assert "root:" not in r.stdout  # /etc/shadow
    listed = [Path(p).name for p in r.stdout.split()]
    assert {"vda", "sda", "mem", "kmsg", "var", "srv", "boot"}.isdisjoint(listed)
    if not attack.gvisor:  # gVisor's are its own: an emulated /sys, /run with the sockets
        assert {"sys", "run"}.isdisjoint(listed)
    assert "shadow: Permission denied" in r.stderr
    assert attack.run(sid, "ls /sys /var /boot /run").returncode != 0
    assert attack.run(sid, "test -e /dev/tty && test -c /dev/null").returncode == 0


def test_other_workspaces_the_database_and_the_agent_are_out_of_sight(attack: Attack) -> None:
    prov = attack.prov
    a, b = attack.start("ws-a"), attack.start("ws-b")
    (prov.workdir(b) / "private.txt").write_text("b's data")
    (prov.home / "jwt-secret").write_text("the-jwt-secret")
    secrets = [str(prov.home), str(prov.workdir(b)), str(prov.sockets)]
    r = attack.run(
        a,
        f"cat {prov.workdir(b)}/private.txt {prov.home}/jwt-secret; ls {' '.join(secrets)}; "
        "ls -a /tmp; find / -path /proc -prune -o -name jwt-secret -print 2>/dev/null",
    )
    assert "b's data" not in r.stdout and "the-jwt-secret" not in r.stdout
    assert "jwt-secret" not in r.stdout and ".exec" not in r.stdout
    assert attack.out(a, "echo /home/* /home/.[!.]*") == "/home/tether /home/.[!.]*\n"
    # b's runtime sockets, by their host paths: nowhere to be found
    for path in (prov.socket_path(b), prov.socket_path(b, ".exec")):
        probe = f"import socket; socket.socket(socket.AF_UNIX).connect('{path}')"
        assert "FileNotFoundError" in attack.run(a, f'python3 -c "{probe}"').stderr
    # an abstract socket b listens on (as X servers do) is b's alone
    listen = "import socket, time; s = socket.socket(socket.AF_UNIX); s.bind('\\0tether-b'); "
    attack.run(b, f'python3 -c "{listen} s.listen(); time.sleep(30)" >/dev/null 2>&1 &')
    probe = "import socket; socket.socket(socket.AF_UNIX).connect('\\0tether-b')"
    assert "ConnectionRefusedError" in attack.run(a, f'python3 -c "{probe}"').stderr


def test_host_processes_are_not_in_proc(attack: Attack) -> None:
    sid = attack.start("ws-proc")
    pids = attack.out(sid, "ls /proc | grep -E '^[0-9]+$'").split()
    assert len(pids) < 10  # the sandbox's init, the runtime, this shell and its children
    cmdlines = attack.out(sid, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '")
    assert "pytest" not in cmdlines and "tether.runtime" in cmdlines
    assert attack.run(sid, f"kill -0 {os.getpid()}").returncode != 0


def test_the_environment_is_the_workspaces_own(attack: Attack) -> None:
    sid = attack.start("ws-env", env={"FROM_TEMPLATE": "yes"})
    env = dict(line.split("=", 1) for line in attack.out(sid, "env").splitlines() if "=" in line)
    assert env["FROM_TEMPLATE"] == "yes" and env["HOME"] == "/home/tether"
    assert env["PATH"] == sandbox.CLEAN_PATH
    for leaked in ("TETHER_CANARY", "PIP_INDEX_URL", "PYTHONPATH", "VIRTUAL_ENV"):
        assert leaked not in env
    assert not [k for k in env if k.startswith("TETHER_")]
    # nor in any process of the workspace, the runtime included (its token is its own)
    everything = attack.out(sid, "cat /proc/[0-9]*/environ | tr '\\0' '\\n'")
    assert "server-secret" not in everything and "example.invalid" not in everything


PRELOAD = """
#include <stdio.h>
#include <unistd.h>
__attribute__((constructor)) static void loaded(void) {
    char path[256];
    snprintf(path, sizeof path, "%s/loaded-by-%d", MARKS, (int)getuid());
    fclose(fopen(path, "w"));
}
"""


def test_a_templates_environment_never_reaches_the_launchers(
    attack: Attack, tmp_path: Path
) -> None:
    """LD_PRELOAD in a template would run its library in bubblewrap, setpriv or runsc, as
    root: the environment reaches the runtime by another way."""
    marks = tmp_path / "marks"
    marks.mkdir(mode=0o777)
    source = tmp_path / "preload.c"
    source.write_text(PRELOAD)
    library = tmp_path / "preload.so"
    subprocess.run(["gcc", "-shared", "-fPIC", f'-DMARKS="{marks}"', "-o", str(library),
                    str(source)], check=True)  # fmt: skip
    sid = attack.start("ws-preload", env={"LD_PRELOAD": str(library)})
    assert attack.out(sid, "echo $LD_PRELOAD") == f"{library}\n"  # the workspace's, as asked
    assert list(marks.iterdir()) == []  # and nothing outside the sandbox loaded it


def test_network_none_is_a_loopback_of_its_own(
    attack: Attack, stack_ports: tuple[_Listener, _Listener], outside: Outside
) -> None:
    loopback, everywhere = stack_ports
    sid = attack.start("ws-net-none")
    for host, port in (
        ("127.0.0.1", loopback.port),
        (host_addresses()[0], everywhere.port),
        (outside.host, OUTSIDE_PORT),
        (METADATA, OUTSIDE_PORT),
    ):
        assert attack.out(sid, tcp(host, port)).strip() == "refused", (host, port)
    assert loopback.accepted == everywhere.accepted == 0
    assert "lo" in attack.out(sid, "ls /sys/class/net 2>/dev/null; cat /proc/net/dev")


def test_egress_reaches_the_outside_but_not_the_host_or_the_metadata_server(
    attack: Attack, stack_ports: tuple[_Listener, _Listener], outside: Outside
) -> None:
    loopback, everywhere = stack_ports
    # The stand-ins answer the host itself: what follows proves a cut, not an absence.
    here = subprocess.run(
        ["bash", "-c", tcp(METADATA, OUTSIDE_PORT)], capture_output=True, text=True
    )
    assert "HTTP" in here.stdout
    if attack.gvisor:  # its own network stack would pass the fences: refused, saying so
        with pytest.raises(Unavailable, match="Egress is not available for gVisor"):
            attack.start("ws-net-egress", network="egress")
        return
    sid = attack.start("ws-net-egress", network="egress")
    assert attack.out(sid, tcp(outside.host, OUTSIDE_PORT)).startswith("HTTP/1.0 200")
    for host, port in (
        ("127.0.0.1", loopback.port),
        ("10.0.2.2", loopback.port),  # the user-mode network's way to the host
        (outside.own, everywhere.port),  # this machine, by an address of its own
        *((a, everywhere.port) for a in host_addresses()),
        (METADATA, OUTSIDE_PORT),
    ):
        assert attack.out(sid, tcp(host, port)).strip() == "refused", (host, port)
    assert loopback.accepted == everywhere.accepted == 0
    # the private and shared ranges (a VPC, the LAN) are cut like the host: read off the
    # workspace's routes, not tried (no packet of a test may leave this machine)
    routes = attack.out(sid, "ip route")
    for net in ALWAYS_CUT:
        assert f"unreachable {net.removesuffix('/32')} " in routes, routes
    assert attack.run(sid, "ip route del 169.254.0.0/16").returncode != 0


# Every process forks as fast as it can for a few seconds, then exits: a fork bomb whose end
# does not depend on the sandbox holding.
BOMB = """
import os, sys, time
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    try:
        os.fork()
    except OSError:
        time.sleep(0.01)
"""


# Counts the workspace's processes (its /proc) every few milliseconds for a while, without
# starting any, and prints the most it saw.
PEAK = """
import os, sys, time
end, peak = time.monotonic() + float(sys.argv[1]), 0
while time.monotonic() < end:
    peak = max(peak, sum(name.isdigit() for name in os.listdir("/proc")))
    time.sleep(0.005)
print(peak)
"""


def test_a_fork_bomb_stops_at_the_pids_limit_and_others_keep_serving(attack: Attack) -> None:
    bystander = attack.start("ws-bystander")
    sid = attack.start("ws-forks", resources={"pids": "64"})
    found: list[str] = []
    bomb = threading.Thread(
        target=lambda: found.append(attack.out(
            sid, f"python3 -c '{PEAK}' 8 & timeout 30 python3 -c '{BOMB}' 6; wait", 60
        ))
    )  # fmt: skip
    bomb.start()
    answered = 0
    while bomb.is_alive():
        answered += attack.out(bystander, "echo alive") == "alive\n"
    bomb.join()
    peak = int(found[0].split()[-1])
    assert 10 <= peak <= 64, peak
    assert answered >= 3  # the bystander kept serving all along
    assert attack.out(sid, "echo still-mine", 60) == "still-mine\n"


def test_a_memory_hog_is_stopped_inside_its_own_workspace(attack: Attack) -> None:
    bystander = attack.start("ws-bystander")
    sid = attack.start("ws-hog", resources={"memory": "128Mi"})
    hog = attack.run(sid, "python3 -c 'a = bytearray(1 << 30); print(\"got it\")'", timeout=60)
    assert hog.returncode != 0 and "got it" not in hog.stdout
    assert attack.out(bystander, "echo alive") == "alive\n"
    assert attack.out(sid, "echo survived") == "survived\n"


def test_a_busy_loop_gets_its_cpu_share_only(attack: Attack) -> None:
    groups = attack.prov.groups
    if groups is None or not groups.available:
        assert "rlimits only" in attack.prov.isolation()["limits"]  # and says it has no share
        return
    sid = attack.start("ws-cpu", resources={"cpu": "250m"})
    attack.run(sid, "timeout 2 bash -c 'while :; do :; done'", timeout=30)
    # The kernel's own account of the workspace's group: held back in period after period
    # (a loop that wants a whole core meets a quarter's quota within each 100 ms).
    key = attack.prov._key(sid)
    stat = (groups.dirs.get("cpu") or groups.dirs["unified"]) / key / "cpu.stat"
    fields = dict(line.split() for line in stat.read_text().splitlines())
    assert int(fields["nr_throttled"]) >= 3, fields


def test_disk_and_tmp_fills_are_refused_early(attack: Attack) -> None:
    sid = attack.start("ws-fill", resources={"storage": "64Mi", "ephemeral-storage": "32Mi"})
    home = attack.prov.workdir(sid)
    one = attack.run(sid, "dd if=/dev/zero of=big bs=1M count=2048", timeout=120)
    assert one.returncode != 0
    assert (home / "big").stat().st_size <= 64 << 20
    many = attack.run(
        sid,
        "for i in $(seq 40); do dd if=/dev/zero of=f$i bs=1M count=8 || exit 1; done",
        timeout=120,
    )
    written = sum(f.stat().st_size for f in home.iterdir() if f.is_file())
    if attack.prov.disks.quota:  # root: a filesystem of its own
        assert many.returncode != 0 and "No space left" in many.stderr
        assert written <= 64 << 20
    else:  # an ordinary user: each file is bounded, and the health report says only that
        assert "per file only" in attack.prov.isolation()["disk"]
    for where in ("/tmp", "/dev/shm"):
        fill = attack.run(sid, f"dd if=/dev/zero of={where}/big bs=1M count=2048", timeout=120)
        assert fill.returncode != 0 and "No space left" in fill.stderr
        assert int(attack.out(sid, f"wc -c < {where}/big")) <= 32 << 20
        attack.run(sid, f"rm {where}/big")
    assert attack.run(sid, "touch /dev/planted").returncode != 0


def test_planted_links_are_not_followed_across_hibernate_and_wake(attack: Attack) -> None:
    prov = attack.prov
    sid = attack.start("ws-links", command="echo main says hi; sleep 600")
    victims = [Path("/var/tmp") / f"tether-victim-{os.getpid()}-{n}" for n in range(4)]
    attack.run(
        sid,
        f"ln -s {victims[0]} .tether-hibernated; ln -s {victims[1]} .tether-runtime.log; "
        f"ln -s {victims[2]} hibernated; ln -s {victims[3]} workspace.json; "
        "rm -f .tether/session.log && ln -s /etc/shadow .tether/session.log",
    )
    prov.hibernate(sid)
    # Not /etc/shadow through the planted link (the main process's own lines, if it wrote
    # its log after the link was planted, are fine).
    assert not any("root:" in line for line in prov.logs(sid, 50))
    prov.wake(sid)
    assert attack.out(sid, "echo awake") == "awake\n"
    prov.hibernate(sid)
    prov.wake(sid)
    for victim in victims:
        assert not victim.exists()
    assert "root:" not in "\n".join(prov.logs(sid, 50))


def test_a_huge_session_log_costs_the_agent_a_bounded_read(attack: Attack) -> None:
    sid = attack.start("ws-biglog")
    attack.run(sid, "mkdir -p .tether && truncate -s 1G .tether/session.log")  # sparse: free
    lines = attack.prov.logs(sid, 10_000)
    assert sum(len(line) for line in lines) <= 4 << 20


def test_an_exec_racing_a_stop_or_hibernate_brings_nothing_back(attack: Attack) -> None:
    prov = attack.prov
    for end in ("hibernate", "stop"):
        sid = attack.start(f"ws-race-{end}")
        outcomes: list[str] = []

        def hammer(sid: str = sid, outcomes: list[str] = outcomes) -> None:
            while True:
                try:
                    prov.exec(sid, "true", 30)
                except (NotFound, Unavailable) as exc:  # gone, or cut off mid-call
                    outcomes.append(type(exc).__name__)
                    if isinstance(exc, NotFound):
                        return

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        getattr(prov, end)(sid)
        for t in threads:
            t.join(60)
        assert sid not in prov._runtimes and outcomes.count("NotFound") == 3
        with pytest.raises(NotFound):
            prov.exec(sid, "true", 5)


def test_nothing_is_left_running_after_delete(attack: Attack) -> None:
    marker = f"tether-leftover-{os.getpid()}"
    sid = attack.start(
        "ws-left",
        command=f"trap '' TERM; while true; do sleep 1; done # {marker}",
    )
    attack.run(
        sid,
        f"setsid nohup bash -c \"trap '' TERM HUP; exec -a {marker} sleep 600\" "
        ">/dev/null 2>&1 & disown; nohup sleep 601 >/dev/null 2>&1 &",
    )
    seen = _workspace_processes(attack.prov, sid, marker)
    assert seen
    started = time.monotonic()
    attack.prov.stop(sid)
    assert time.monotonic() - started < 15
    assert _workspace_processes(attack.prov, sid, marker) == []
    assert _host_processes("sleep 601") == []


AGENT = """
import sys
from pathlib import Path
from tether.core.models import Template, WorkspaceSpec
from tether.provision.local import LocalProvisioner
prov = LocalProvisioner(Path(sys.argv[1]), sys.argv[3])
template = Template(name="t", display_name="T", command="sleep 600 # " + sys.argv[2])
prov.start(WorkspaceSpec(session_id="ws-orphan", template=template))
background = "setsid nohup bash -c 'exec -a %s sleep 601' >/dev/null 2>&1 &"
prov.exec("ws-orphan", background % sys.argv[2], 10)
print("ready", flush=True)
sys.stdin.read()
"""


def test_workspaces_die_with_the_agent(attack: Attack, tmp_path: Path) -> None:
    marker = f"tether-orphan-{os.getpid()}"
    kind = attack.prov.sandbox  # the agent below is a process of its own, of this kind
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT, str(tmp_path / "agent"), marker, kind],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    again = LocalProvisioner(tmp_path / "agent", kind)  # the agent, as it will be restarted
    try:
        assert agent.stdout is not None and agent.stdout.readline() == "ready\n"
        running = _workspace_processes(again, "ws-orphan", marker)
        assert len(running) >= 2  # the main process and the background one (or gVisor's)
    finally:
        agent.kill()  # no clean-up of its own: a crash
        agent.wait()
    deadline = time.monotonic() + 15
    while _workspace_processes(again, "ws-orphan", marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _workspace_processes(again, "ws-orphan", marker) == []
    try:
        assert again.exec("ws-orphan", "echo back", 10).stdout == "back\n"
    finally:
        again.close()


def _workspace_processes(prov: LocalProvisioner, sid: str, marker: str) -> list[str]:
    """A workspace's processes as the host sees them: those with `marker` in their command
    line, or under gVisor (whose workspace processes live in its own kernel) its sandbox."""
    if prov.sandbox == "gvisor":
        return _host_processes(f"tether-{prov._key(sid)}")
    return _host_processes(marker)


def _host_processes(marker: str) -> list[str]:
    r = subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True)
    return [line for line in r.stdout.splitlines() if "pgrep" not in line]


def test_the_attack_suite_holds_for_an_ordinary_user(outside: Outside) -> None:
    """Everything above, again, with the stack run by an ordinary user (no per-workspace
    uids, no cgroups: the user namespace alone, and rlimits)."""
    if os.geteuid() != 0:
        pytest.skip("this run is the ordinary user's already")
    here = Path(__file__).parent
    r = subprocess.run(
        [sys.executable, str(here / "as_user.py"), "--",
         sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(here),
         "-k", "not ordinary_user and not gvisor"],
        env={**os.environ, "TETHER_TEST_OUTSIDE": f"{outside.host},{outside.own}"},
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    print(r.stdout[-5000:], r.stderr[-3000:])
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-3000:]
    assert " passed" in r.stdout and "skipped" not in r.stdout
