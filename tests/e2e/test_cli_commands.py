"""The `tether` command as a user meets it, against one `tether up` for the module: an exit code
per kind of failure, each told in one line; output as a table, JSON or YAML; profiles saved by
`tether login`; shell completion; pause, resume and extend; progress on a terminal (tmux)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import yaml  # type: ignore[import-untyped]
from tether.sdk import Client

from tests.e2e.conftest import Server, free_port, start_server
from tests.terminal import Tmux
from tests.waiting import wait_for

BIN = Path(sys.executable).with_name("tether")  # the installed entry point, as a user runs it


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("cli") / "home")
    yield srv
    srv.stop()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """An XDG_CONFIG_HOME of the test's own (the user's real profiles are never read)."""
    return tmp_path / "config"


def user_env(config: Path, **tether: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    return {**env, "XDG_CONFIG_HOME": str(config), **tether}


def tether(*args: str, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), *args], env=env, input=stdin, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def failed(done: subprocess.CompletedProcess[str], code: int) -> str:
    """`done` exited `code` having said why in one line on stderr, and nothing on stdout."""
    assert done.returncode == code, done
    assert done.stderr.startswith("tether: ") and done.stderr.count("\n") == 1, done.stderr
    assert done.stdout == "", done
    return done.stderr


@pytest.fixture(scope="module")
def session(server: Server) -> str:
    env = {**user_env(Path("/nonexistent")), "TETHER_URL": server.url,
           "TETHER_API_KEY": server.key}  # fmt: skip
    created = tether("create", "--template", "shell", env=env)
    assert created.returncode == 0, created.stderr
    assert "is running" in created.stderr  # progress, in a pipe as plain lines
    sid: str = json.loads(created.stdout)["id"]  # a record in a pipe is JSON
    return sid


def test_each_kind_of_failure_has_its_exit_code(server: Server, session: str) -> None:
    env = user_env(Path("/nonexistent"), TETHER_URL=server.url, TETHER_API_KEY=server.key)
    assert tether("exec", session, "--", "sh", "-c", "exit 7", env=env).returncode == 7
    assert "usage error" in tether("--help", env=env).stdout  # the codes are documented
    assert "not found" in failed(tether("get", "ws-nope", env=env), 4)
    assert "Invalid API key" in failed(tether("list", env={**env, "TETHER_API_KEY": "x"}), 3)
    assert "TETHER_API_KEY" in failed(tether("list", env={**env, "TETHER_API_KEY": ""}), 3)
    closed = {**env, "TETHER_URL": f"http://127.0.0.1:{free_port()}"}
    assert "cannot reach" in failed(tether("list", env=closed), 5)
    assert "--minutes" in failed(tether("extend", session, env=env), 2)  # click's usage error
    assert "No such command" in failed(tether("sessions", env=env), 2)
    assert "NAME=VALUE" in failed(tether("exec", "--env", "A", session, "true", env=env), 1)


def test_output_as_table_json_or_yaml(server: Server, session: str) -> None:
    env = user_env(Path("/nonexistent"), TETHER_URL=server.url, TETHER_API_KEY=server.key)
    as_json = json.loads(tether("get", session, "-o", "json", env=env).stdout)
    as_yaml = yaml.safe_load(tether("get", session, "--output", "yaml", env=env).stdout)
    assert as_json == as_yaml and as_json["id"] == session and as_json["status"] == "running"
    listed = json.loads(tether("list", "-o", "json", env=env).stdout)
    assert session in [s["id"] for s in listed]
    assert yaml.safe_load(tether("list", "-o", "yaml", env=env).stdout) == listed
    # In a pipe a list is tab-separated rows (`cut -f1` takes the ids), a table's record
    # `field<TAB>value` lines.
    rows = [line.split("\t") for line in tether("list", env=env).stdout.splitlines()]
    assert [session, "running"] in [r[:2] for r in rows]
    table = dict(line.split("\t", 1) for line in
                 tether("get", session, "-o", "table", env=env).stdout.splitlines())  # fmt: skip
    assert table["id"] == session and table["status"] == "running"
    assert "is not one of" in failed(tether("get", session, "-o", "xml", env=env), 2)


def test_login_saves_a_private_profile_the_env_overrides(
    server: Server, session: str, config: Path
) -> None:
    env = user_env(config)
    refused = tether("login", "--url", server.url, "--api-key", "wrong", env=env)
    assert "Invalid API key" in failed(refused, 3)
    assert not (config / "tether" / "config.toml").exists()  # a refused key is never saved

    done = tether("login", "--url", server.url, "--api-key", server.key, env=env)
    assert done.returncode == 0 and "profile 'default'" in done.stderr, done
    path = config / "tether" / "config.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert server.key in path.read_text()
    # No variables: the default profile's URL and key.
    assert tether("get", session, env=env).returncode == 0
    # Another profile, chosen by --profile or TETHER_PROFILE; one that is not there is a 4.
    saved = tether("--profile", "down", "login", "--url", server.url, "--api-key", "k", env=env)
    assert "Invalid API key" in failed(saved, 3)
    assert "no profile 'down'" in failed(tether("--profile", "down", "list", env=env), 4)
    assert "no profile 'down'" in failed(tether("list", env={**env, "TETHER_PROFILE": "down"}), 4)
    second = tether("login", "--profile", "second", "--url", server.url, "--api-key", server.key,
                    env=env)  # fmt: skip
    assert second.returncode == 0, second
    assert tether("--profile", "second", "get", session, env=env).returncode == 0
    assert tether("get", session, env={**env, "TETHER_PROFILE": "second"}).returncode == 0
    # The variables win over the profile, each on its own.
    wrong_key = {**env, "TETHER_API_KEY": "tether_wrong00001_" + "0" * 32}
    assert "Invalid API key" in failed(tether("get", session, env=wrong_key), 3)
    elsewhere = {**env, "TETHER_URL": f"{server.url}/elsewhere"}  # something else answers there
    assert failed(tether("get", session, env=elsewhere), 4)
    assert tether("--api-key", server.key, "get", session, env=wrong_key).returncode == 0
    assert "default" in path.read_text() and "second" in path.read_text()  # both kept


def test_completion_version_and_help(server: Server, session: str, tmp_path: Path) -> None:
    env = user_env(Path("/nonexistent"), TETHER_URL=server.url, TETHER_API_KEY=server.key)
    assert tether("--version", env=env).stdout == "tether 0.1.0\n"
    script = tether("completion", "bash", env=env)
    assert script.returncode == 0 and "_TETHER_COMPLETE" in script.stdout
    (tmp_path / "tether.bash").write_text(script.stdout)
    checked = subprocess.run(["bash", "-n", str(tmp_path / "tether.bash")], capture_output=True)
    assert checked.returncode == 0, checked.stderr
    for shell in ("zsh", "fish"):
        assert "_TETHER_COMPLETE" in tether("completion", shell, env=env).stdout
    # What bash asks the script's function for: commands, then the caller's session ids.
    asked = {**env, "_TETHER_COMPLETE": "bash_complete", "COMP_CWORD": "1"}
    said = tether(env={**asked, "COMP_WORDS": "tether cr"}).stdout.split()
    assert said == ["plain,create"], said
    ids = tether(env={**asked, "COMP_WORDS": "tether get ws-", "COMP_CWORD": "2"}).stdout
    assert f"plain,{session}" in ids.split()


def test_pause_resume_and_extend(server: Server, session: str) -> None:
    env = user_env(Path("/nonexistent"), TETHER_URL=server.url, TETHER_API_KEY=server.key)
    before = json.loads(tether("get", session, env=env).stdout)
    paused = tether("pause", session, env=env)
    assert paused.returncode == 0 and json.loads(paused.stdout)["status"] == "hibernated", paused
    asleep = tether("exec", session, "true", env=env)
    assert asleep.returncode == 1 and asleep.stderr.startswith("tether: "), asleep
    woken = tether("resume", session, "-o", "yaml", env=env)
    assert woken.returncode == 0 and yaml.safe_load(woken.stdout)["status"] == "running", woken
    assert tether("exec", session, "echo awake", env=env).stdout == "awake\n"
    extended = tether("extend", session, "--minutes", "30", env=env)
    assert extended.returncode == 0, extended
    moved = datetime.fromisoformat(json.loads(extended.stdout)["expires_at"])
    assert (moved - datetime.fromisoformat(before["expires_at"])).total_seconds() == 30 * 60


# -- on a terminal ------------------------------------------------------------------------------


def test_a_terminal_sees_progress_a_table_and_a_login_prompt(server: Server, config: Path) -> None:
    env = f"XDG_CONFIG_HOME={config} TETHER_URL= TETHER_API_KEY= TETHER_PROFILE="
    login = Tmux(f"env {env} {BIN} login; echo LOGIN-$?; sleep 60")
    try:
        login.screen_has("Tether URL")
        login.keys(server.url, "Enter")
        login.screen_has("API key")
        login.keys(server.key, "Enter")
        screen = login.screen_has("LOGIN-0")
        assert server.key not in screen  # the key is not echoed
    finally:
        login.close()
    # The saved profile serves the create: a spinner that ends ticked, with the time taken,
    # then the session as a table.
    create = Tmux(f"env {env} {BIN} create --template shell; echo CREATE-$?; sleep 60")
    try:
        screen = create.screen_has("CREATE-0")
        progress = next(line for line in screen.splitlines() if "Session ws-" in line)
        assert progress.lstrip().startswith("✓") and "is running" in progress, screen
        assert any(line.split()[:2] == ["status", "running"] for line in screen.splitlines())
    finally:
        create.close()


# -- what reaches into the workspace: exec's streams, files, ports, logs ---------------------------


def test_exec_streams_output_as_printed_and_passes_stdin_when_asked(
    server: Server, session: str
) -> None:
    env = user_env(Path("/nonexistent"), TETHER_URL=server.url, TETHER_API_KEY=server.key)
    line = "echo first; while [ ! -e /tmp/release ]; do sleep 0.05; done; echo second"
    cli = subprocess.Popen([str(BIN), "exec", session, line], env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert cli.stdout is not None
        assert cli.stdout.readline() == "first\n"  # while the command still runs
        assert tether("exec", session, "touch /tmp/release", env=env).returncode == 0
        assert cli.stdout.read() == "second\n" and cli.wait(60) == 0
    finally:
        if cli.poll() is None:
            cli.kill()
    fed = tether("exec", "-i", session, "--", "sh", "-c", "tr a-z A-Z; exit 3", env=env,
                 stdin="piped in\n")  # fmt: skip
    assert (fed.returncode, fed.stdout) == (3, "PIPED IN\n"), fed
    late = tether("exec", "--timeout", "1", session, "sleep 30", env=env)
    assert late.returncode == 124 and "--timeout" in late.stderr, late


def test_files_cp_both_ways_and_ls(server: Server, session: str, tmp_path: Path) -> None:
    env = user_env(Path("/nonexistent"), TETHER_URL=server.url, TETHER_API_KEY=server.key)
    data = os.urandom(3 * 1024 * 1024 + 7)
    (tmp_path / "blob.bin").write_bytes(data)
    sent = tether("files", "cp", str(tmp_path / "blob.bin"), f"{session}:up/", env=env)
    assert sent.returncode == 0 and "/up/blob.bin" in sent.stderr, sent
    listed = json.loads(tether("files", "ls", f"{session}:up", "-o", "json", env=env).stdout)
    assert [(e["name"], e["size"]) for e in listed] == [("blob.bin", len(data))]
    (tmp_path / "back").mkdir()
    got = tether("files", "cp", f"{session}:up/blob.bin", str(tmp_path / "back"), env=env)
    assert got.returncode == 0, got
    assert (tmp_path / "back" / "blob.bin").read_bytes() == data
    missing = tether("files", "cp", f"{session}:up/nope", str(tmp_path / "back"), env=env)
    assert failed(missing, 4) and os.listdir(tmp_path / "back") == ["blob.bin"]  # no leftovers
    assert failed(tether("files", "cp", "a", "b", env=env), 2)


def test_port_forward_serves_the_workspaces_http(server: Server, session: str) -> None:
    env = user_env(Path("/nonexistent"), TETHER_URL=server.url, TETHER_API_KEY=server.key)
    with Client(server.url, server.key) as client:
        s = client.connect(session)
        s.files.write("site/index.html", "<h1>forwarded</h1>")
        s.run("cd site && exec python3 -m http.server 8765", background=True)
        up = "python3 -c 'import urllib.request as u; u.urlopen(\"http://127.0.0.1:8765\")'"
        assert wait_for(lambda: s.run(up).exit_code == 0, 30, step=0.2)
    listed = tether("ps", session, "-o", "json", env=env)
    assert "http.server 8765" in [p["command"] for p in json.loads(listed.stdout)][-1]
    port = free_port()
    cli = subprocess.Popen([str(BIN), "port-forward", session, f"{port}:8765"], env=env,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert cli.stderr is not None
        assert "Forwarding" in cli.stderr.readline()
        page = httpx.get(f"http://127.0.0.1:{port}/index.html")
        assert page.status_code == 200 and page.text == "<h1>forwarded</h1>"
        assert httpx.get(f"http://127.0.0.1:{port}/nope").status_code == 404
        cli.send_signal(2)  # Ctrl-C stops it cleanly
        assert cli.wait(30) == 0
    finally:
        if cli.poll() is None:
            cli.kill()


def test_logs_print_and_follow_a_sessions_log(server: Server) -> None:
    env = user_env(Path("/nonexistent"), TETHER_URL=server.url, TETHER_API_KEY=server.key)
    loop = "for i in $(seq 1 3000); do echo tick-$i; sleep 0.1; done"
    ticker = {"name": "ticker", "display_name": "Ticker", "command": loop}
    made = httpx.post(f"{server.url}/api/v1/templates", json=ticker,
                      headers={"Authorization": f"Bearer {server.key}"})  # fmt: skip
    assert made.status_code == 201, made.text
    sid = json.loads(tether("create", "--template", "ticker", env=env).stdout)["id"]
    cli = subprocess.Popen([str(BIN), "logs", "-f", "-n", "1", sid], env=env,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert cli.stdout is not None
        seen = [cli.stdout.readline() for _ in range(3)]  # live: more than the one asked for
        ticks = [int(line.rsplit("tick-", 1)[1]) for line in seen]
        assert ticks == sorted(ticks) and len(set(ticks)) == 3, seen
        cli.send_signal(2)
        assert cli.wait(30) == 0
    finally:
        if cli.poll() is None:
            cli.kill()
    printed = tether("logs", "-n", "2", sid, env=env).stdout.splitlines()
    assert len(printed) == 2 and all("tick-" in line for line in printed)
    assert "not found" in failed(tether("logs", "ws-nope", env=env), 4)
