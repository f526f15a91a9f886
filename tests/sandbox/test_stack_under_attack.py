"""The real stack (`tether up`) under attack from one of its workspaces, driven over HTTP as
its users drive it. A user's session runs, in turn, a fork bomb, a memory hog and a fill of
its home and `/tmp` as an OnMemOS background job (`async_execution`). While each one is
under way (its own marker says so, written in its home as the operator sees it), the stack
must keep serving: `GET /health`, another user's `echo ok` through exec, and a new session,
each within a bound. After each, the attacked workspace is still usable: the attack was
stopped inside it (the pids limit and `timeout`, the OOM killer or a refused allocation, a
full disk), never the workspace. Deleting the sessions leaves no process of theirs behind.

As root (CI) limits are cgroups and a filesystem per workspace; as an ordinary user
(`test_attacks.py` runs this directory again as one) rlimits: each attack is bounded either
way, and nothing here writes more than a gibibyte to the host's disk."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from tether.provision import sandbox

from tests.e2e.conftest import Server, start_server
from tests.waiting import wait_for

# What the stack must still do while a workspace is under attack, and how fast (seconds, on
# a loaded two-core machine). An ordinary user's stack has no CPU share to give a workspace
# (README, "Workspace isolation": rlimits only), so an attack's processes compete with the
# stack's own for the cores: its bounds are three times as long.
SLACK = 1.0 if os.geteuid() == 0 else 3.0
HEALTH_WITHIN = 5.0 * SLACK
EXEC_WITHIN = 10.0 * SLACK
CREATE_WITHIN = 20.0 * SLACK
# How long an attack may take to show it is under way (its marker), and to end once released.
UNDER_WAY_WITHIN = 30.0
ENDED_WITHIN = 60.0

MEMORY_MIB = 512  # the attacked template's memory; its home (storage) and /tmp keep defaults
HOME_MIB, TMP_MIB = 1024, 256
MARK = f"tether-stack-attack-{os.getpid()}"  # in every attacking process's command line

# Forks as fast as it can, for ever (run under `timeout`, which ends its process group). The
# first time a fork is refused, the bomb has met the workspace's process limit: it says so with
# a file in the home.
BOMB = """
import os, time
hit = False
while True:
    try:
        os.fork()
    except OSError:
        if not hit:
            hit = True
            try:
                os.close(os.open("bomb.at-limit", os.O_CREAT | os.O_WRONLY, 0o644))
            except OSError:
                pass
        time.sleep(0.01)
"""

# Takes memory 16 MiB at a time (each written), towards four times the template's; past
# three quarters of it, says so with a file in the home. It should never get there.
HOG = f"""
import os
held = []
while len(held) * 16 < {4 * MEMORY_MIB}:
    held.append(bytearray(16 << 20))
    if len(held) * 16 >= {3 * MEMORY_MIB // 4} and not os.path.exists("hog.near-limit"):
        open("hog.near-limit", "w").close()
print("got it", flush=True)
"""


@dataclass
class World:
    server: Server
    admin: httpx.Client
    mallory: httpx.Client  # the attacker
    bob: httpx.Client  # the bystander
    target: str  # mallory's session, the attacks' workspace
    bystander: str  # bob's
    made: list[str] = field(default_factory=list)  # every session made here
    timings: dict[str, dict[str, float]] = field(default_factory=dict)

    def home(self, sid: str) -> Path:
        """A workspace's home as the operator sees it, on the agent's host."""
        return self.server.home / "workspaces" / sid / "disk" / "home"


def client(server: Server, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=60)


def new_user(server: Server, admin: httpx.Client, name: str) -> httpx.Client:
    """A user made by the admin, with a key the user made (StreamSpace's API)."""
    password = f"pw-{name}-12345"
    bearer = {"Authorization": f"Bearer {server.key}"}
    body = {"username": name, "password": password, "email": f"{name}@example.com"}
    made = admin.post("/api/v1/users", json=body, headers=bearer)
    assert made.status_code == 201, made.text
    login = admin.post("/api/v1/auth/login", json={"username": name, "password": password})
    token = {"Authorization": f"Bearer {login.json()['token']}"}
    key = admin.post("/api/v1/api-keys", json={"name": "attack"}, headers=token)
    assert key.status_code == 201, key.text
    return client(server, key.json()["key"])


def create(world: World, c: httpx.Client, template: str) -> str:
    """A new running session of `template`, for the user of `c`."""
    made = c.post("/v1/sessions", json={"template": template}, timeout=CREATE_WITHIN)
    assert made.status_code == 201, made.text
    sid: str = made.json()["id"]
    world.made.append(sid)
    running = wait_for(
        lambda: c.get(f"/v1/sessions/{sid}").json()["status"] == "running", CREATE_WITHIN
    )
    assert running, c.get(f"/v1/sessions/{sid}").json()
    return sid


def run(c: httpx.Client, sid: str, command: str, timeout: float = 60) -> dict[str, Any]:
    ran = c.post(f"/v1/sessions/{sid}/execute", json={"command": command, "timeout": timeout},
                 timeout=timeout + 30)  # fmt: skip
    assert ran.status_code == 200, ran.text
    result: dict[str, Any] = ran.json()
    return result


def submit(c: httpx.Client, sid: str, command: str, timeout: float) -> str:
    """Starts `command` as a background job (OnMemOS' `async_execution`); its id."""
    body = {"command": command, "timeout": timeout, "async_execution": True}
    job = c.post(f"/v1/sessions/{sid}/execute", json=body)
    assert job.status_code == 200, job.text
    assert job.json()["status"] in ("submitted", "running"), job.json()
    job_id: str = job.json()["job_id"]
    return job_id


def job(c: httpx.Client, sid: str, job_id: str) -> dict[str, Any]:
    got = c.get(f"/v1/sessions/{sid}/jobs/{job_id}/status")
    assert got.status_code == 200, got.text
    status: dict[str, Any] = got.json()
    return status


def ended(c: httpx.Client, sid: str, job_id: str) -> dict[str, Any]:
    """The job once it ended (completed or failed)."""
    done = wait_for(
        lambda: job(c, sid, job_id)["status"] in ("completed", "failed"), ENDED_WITHIN, 0.1
    )
    status = job(c, sid, job_id)
    assert done, status
    return status


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    limits = {"TETHER_RATE_LIMITS": "login=1000,create=1000,api=100000"}
    server = start_server(tmp_path_factory.mktemp("stack-under-attack") / "home", limits)
    try:
        with client(server, server.key) as admin:
            template = {
                "name": "attack-target",
                "display_name": "Attack target",
                "base_image": "debian:bookworm-slim",
                "default_resources": {"memory": f"{MEMORY_MIB}Mi", "cpu": "1000m"},
            }
            made = admin.post("/api/v1/templates", json=template,
                              headers={"Authorization": f"Bearer {server.key}"})  # fmt: skip
            assert made.status_code == 201, made.text
            with (
                new_user(server, admin, "mallory") as mallory,
                new_user(server, admin, "bob") as bob,
            ):
                w = World(server, admin, mallory, bob, "", "")
                w.target = create(w, mallory, "attack-target")
                w.bystander = create(w, bob, "shell")
                yield w
                for name, took in w.timings.items():  # shown with -s
                    print(f"{name}: " + ", ".join(f"{k} {v:.2f}s" for k, v in took.items()))
    finally:
        server.stop()


ROUNDS = 3  # of checks, each made whole while the attack is under way


def still_serving(world: World, attack: str, job_id: str) -> None:
    """While the attack's job runs, round after round: health, another user's exec and a new
    session (with an exec in it) answer within their bounds. Up to `ROUNDS` rounds, each
    ended while the attack is still under way; at least one. (An attack the test releases
    afterwards makes them all; a fork bomb ends at its `timeout`, which on a loaded machine
    may come first.)"""
    took: dict[str, float] = {}

    def timed(name: str, bound: float, started: float) -> None:
        took[name] = max(took.get(name, 0.0), time.monotonic() - started)
        assert time.monotonic() - started <= bound, (name, time.monotonic() - started)

    rounds = 0
    while rounds < ROUNDS:
        started = time.monotonic()
        health = httpx.get(f"{world.server.url}/health", timeout=HEALTH_WITHIN)
        assert health.status_code == 200, health.text
        timed("health", HEALTH_WITHIN, started)

        started = time.monotonic()
        ok = run(world.bob, world.bystander, "echo ok", EXEC_WITHIN)
        assert ok["stdout"] == "ok\n", ok
        timed("bystander exec", EXEC_WITHIN, started)

        started = time.monotonic()
        fresh = create(world, world.bob, "shell")
        timed("new session", CREATE_WITHIN, started)
        started = time.monotonic()
        ok = run(world.bob, fresh, "echo ok", EXEC_WITHIN)
        assert ok["stdout"] == "ok\n", ok
        timed("new session's exec", EXEC_WITHIN, started)
        assert world.bob.delete(f"/v1/sessions/{fresh}").status_code == 200

        if job(world.mallory, world.target, job_id)["status"] not in ("submitted", "running"):
            break  # the attack ended during this round: it does not count
        rounds += 1
    assert rounds, f"the {attack} ended before a round of checks did"
    world.timings[attack] = took


def under_way(world: World, marker: str, job_id: str) -> float:
    """Waits for the attack's marker in the attacked home; how long it took."""
    started = time.monotonic()
    path = world.home(world.target) / marker

    def seen() -> bool:
        status = job(world.mallory, world.target, job_id)
        if status["status"] in ("completed", "failed"):
            pytest.fail(f"the attack ended before it was under way: {status}")
        return path.exists()

    assert wait_for(seen, UNDER_WAY_WITHIN, 0.05), f"no {marker} within {UNDER_WAY_WITHIN}s"
    return time.monotonic() - started


def test_a_fork_bomb_stops_at_its_limit_while_the_stack_serves(world: World) -> None:
    """Expected: the bomb meets the pids limit and forks on at it until `timeout` ends it
    (60 s: time for rounds of checks, at least one on a loaded machine, as an ordinary user
    too, whose bomb slows the stack that shares its uid); the workspace then runs commands
    again, with none of the bomb's processes left."""
    m = world.mallory
    script = f"rm -f bomb.at-limit; timeout 60 python3 -c '{BOMB}' {MARK}; echo ended=$?"
    job_id = submit(m, world.target, script, 120)
    try:
        reached = under_way(world, "bomb.at-limit", job_id)
        still_serving(world, "fork bomb", job_id)
        world.timings["fork bomb"]["at its limit after"] = reached
    finally:
        result = ended(m, world.target, job_id)  # the next test must not meet the bomb
    assert "ended=124" in result["stdout"].split(), result  # ran until `timeout` ended it
    assert run(m, world.target, "echo still-mine")["stdout"] == "still-mine\n"
    assert wait_for(lambda: int(run(m, world.target, "ps -e --no-headers | wc -l")["stdout"]) < 10,
                    15)  # fmt: skip


def test_a_memory_hog_is_stopped_inside_its_workspace_while_the_stack_serves(
    world: World,
) -> None:
    """Expected: a hog going for four times the template's memory is stopped each time it
    tries (OOM-killed in the workspace's group as root, MemoryError under RLIMIT_DATA
    otherwise), again and again until released; the workspace then runs commands again."""
    m = world.mallory
    home = world.home(world.target)
    job_id = submit(
        m,
        world.target,
        f"rm -f hog.near-limit hog.release; cat > hog.py <<'EOF'\n{HOG}\nEOF\n"
        f"until [ -e hog.release ]; do python3 hog.py {MARK}; echo exit=$?; done",
        90,
    )
    try:
        reached = under_way(world, "hog.near-limit", job_id)
        still_serving(world, "memory hog", job_id)
        world.timings["memory hog"]["near its limit after"] = reached
    finally:
        (home / "hog.release").touch()
        result = ended(m, world.target, job_id)
    assert result["returncode"] == 0, result
    assert "got it" not in result["stdout"], result
    exits = [line for line in result["stdout"].split() if line.startswith("exit=")]
    assert exits and "exit=0" not in exits, result
    assert run(m, world.target, "echo survived")["stdout"] == "survived\n"


FILL = """
trap '' XFSZ  # an ordinary user's rlimit on a file's size: an error, not the end of dd
rm -f fill fill.running fill.full /tmp/fill && touch fill.running
dd if=/dev/zero of=fill bs=1M count={home} status=none; echo home-dd=$?
dd if=/dev/zero of=/tmp/fill bs=1M count={tmp} status=none; echo tmp-dd=$?
mv fill.running fill.full  # a rename: no new block on the full disk
while [ -e fill.full ]; do sleep 0.05; done
echo home=$(wc -c < fill) tmp=$(wc -c < /tmp/fill)
"""


def test_filling_the_home_and_tmp_is_refused_while_the_stack_serves(world: World) -> None:
    """Expected: writes past the home's storage and past /tmp's size are refused (no space
    left; an ordinary user's home, file too large), the workspace holds them full while the
    stack is checked, and once they are emptied it writes again."""
    m = world.mallory
    home = world.home(world.target)
    script = FILL.format(home=HOME_MIB + 512, tmp=TMP_MIB * 2)
    job_id = submit(m, world.target, f"bash -c {sh_quote(script)} {MARK}", 120)
    try:
        reached = under_way(world, "fill.full", job_id)
        still_serving(world, "disk fill", job_id)
        world.timings["disk fill"]["full after"] = reached
    finally:
        (home / "fill.full").unlink(missing_ok=True)
        result = ended(m, world.target, job_id)
    out = dict(w.split("=", 1) for w in result["stdout"].split() if "=" in w)
    assert out["home-dd"] != "0" and out["tmp-dd"] != "0", result
    assert int(out["home"]) <= HOME_MIB << 20 and int(out["tmp"]) <= TMP_MIB << 20, result
    refused = "No space left on device" if os.geteuid() == 0 else "File too large"
    assert refused in result["stderr"] and "No space left" in result["stderr"], result
    again = run(m, world.target, "rm -f fill /tmp/fill && echo written > after && cat after")
    assert again["stdout"] == "written\n", again


def sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def test_deleted_sessions_leave_no_process_behind(world: World) -> None:
    """Last: a process that ignores SIGTERM, started in the attacked workspace, and all
    the sessions made here deleted through the API: no process of theirs remains, none
    under the stack's process, and none of their disks stays mounted."""
    m = world.mallory
    planted = (
        f"setsid nohup bash -c \"trap '' TERM HUP; exec -a {MARK}-left sleep 600\" "
        ">/dev/null 2>&1 & disown"
    )
    run(m, world.target, planted)
    assert wait_for(lambda: live(with_mark=MARK), 10), "the planted process is running"
    for c, sid in ((m, world.target), (world.bob, world.bystander)):
        assert c.delete(f"/v1/sessions/{sid}").status_code == 200
    uids = {uid for sid in world.made if (uid := sandbox.host_uid(sid)) is not None}
    server = world.server.proc.pid

    def nothing_left() -> bool:
        return not (live(with_mark=MARK) or live(uids=uids) or live(under=server)
                    or mounted(world.server.home))  # fmt: skip

    if not wait_for(nothing_left, 15):
        pytest.fail(
            f"left: marked {live(with_mark=MARK)}, by uid {live(uids=uids)}, "
            f"under the stack {live(under=server)}, mounted {mounted(world.server.home)}"
        )


def _processes() -> dict[int, tuple[int, int, str, str]]:
    """Live processes: pid -> (parent, uid, state, command line)."""
    found: dict[int, tuple[int, int, str, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            uid = entry.stat().st_uid
        except OSError:  # gone meanwhile
            continue
        state, parent = stat.rsplit(")", 1)[1].split()[:2]
        if state != "Z":  # a zombie runs nothing
            found[int(entry.name)] = (int(parent), uid, state, cmdline)
    return found


def live(with_mark: str = "", uids: set[int] | None = None, under: int | None = None) -> list[str]:
    """Live processes with `with_mark` in their command line, run by one of `uids`, or
    descending from `under`."""
    procs = _processes()
    hits = []
    for pid, (parent, uid, _, cmdline) in procs.items():
        if with_mark and with_mark in cmdline:
            hits.append(f"{pid} {cmdline}")
        elif uids and uid in uids:
            hits.append(f"{pid} (uid {uid}) {cmdline}")
        elif under is not None and pid != under:
            p = parent
            while p > 1 and p != under:
                p = procs.get(p, (0,))[0]
            if p == under:
                hits.append(f"{pid} {cmdline}")
    return hits


def mounted(home: Path) -> list[str]:
    with open("/proc/mounts") as f:
        return [line.split()[1] for line in f if line.split()[1].startswith(str(home))]
