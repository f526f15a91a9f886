"""The `tether` command where it meets a newcomer: argv passed exactly, exit codes, one-line
errors, an interrupted create, a busy port, lost credentials."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Server, free_port
from tests.waiting import wait_for


def tether(
    *args: str, env: dict[str, str], stdin: str | None = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tether.cli.main", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def client_env(url: str, key: str = "") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    return {**env, "TETHER_URL": url, "TETHER_API_KEY": key}


def one_line_error(done: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert done.returncode == code, done
    assert done.stderr.startswith("tether: ") and done.stderr.count("\n") == 1, done.stderr
    return done.stderr


def test_exec_passes_argv_exactly_and_the_exit_code(embedded: Server) -> None:
    env = client_env(embedded.url, embedded.key)
    sid = json.loads(tether("create", "--template", "shell", env=env).stdout)["id"]
    quoted = tether("exec", sid, "--", "python3", "-c", "print(6*7); import sys; print(sys.argv)",
                    "it's", "$HOME", env=env)  # fmt: skip
    assert quoted.returncode == 0, quoted.stderr
    assert quoted.stdout == "42\n['-c', \"it's\", '$HOME']\n"
    assert tether("exec", sid, "--", "sh", "-c", "exit 7", env=env).returncode == 7
    assert tether("exec", sid, "echo $((6*7)) | tr 4 X", env=env).stdout == "X2\n"  # one line
    placed = tether("exec", "--env", "A=b c", "--cwd", "/tmp", sid, "--", "sh", "-c",
                    'echo "$A $PWD"', env=env)  # fmt: skip
    assert placed.stdout == "b c /tmp\n", placed.stderr
    assert "NAME=VALUE" in one_line_error(tether("exec", "--env", "A", sid, "true", env=env))
    piped = tether("exec", sid, "--", "cat", env=env, stdin="lost?\n")
    assert "no standard input" in one_line_error(piped)


def test_input_piped_in_while_the_command_runs_is_not_lost_silently(embedded: Server) -> None:
    """`(sleep 1; echo x) | tether exec ID -- cat`: the input comes after exec looked, and the
    command never gets it; exec says so in one line once the command has run."""
    env = client_env(embedded.url, embedded.key)
    sid = json.loads(tether("create", "--template", "shell", env=env).stdout)["id"]
    waits = "touch /tmp/started; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo ran"
    cli = subprocess.Popen([sys.executable, "-m", "tether.cli.main", "exec", sid, waits], env=env,
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)  # fmt: skip
    assert cli.stdin is not None
    started = lambda: tether("exec", sid, "test -e /tmp/started", env=env).returncode == 0  # noqa: E731
    assert wait_for(started, 60)
    cli.stdin.write("late\n")
    cli.stdin.flush()
    assert tether("exec", sid, "touch /tmp/go", env=env).returncode == 0
    out, err = cli.communicate(timeout=60)
    assert out == "ran\n" and cli.returncode == 1, (out, err)
    assert err.startswith("tether: input piped in while the command ran was not sent to it")
    assert err.count("\n") == 1, err


def test_a_wrong_or_unreachable_url_is_one_line(embedded: Server) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    assert "cannot reach" in one_line_error(tether("list", env=client_env(closed, "k")), 5)
    assert "not an http(s) URL" in one_line_error(tether("list", env=client_env("localhost", "k")))
    # Something answers, but not Tether (a page that is not found, a page that is not JSON).
    other = tether("get", "x", env=client_env(f"{embedded.url}/openapi/onmemos", embedded.key))
    assert one_line_error(other, other.returncode) and other.returncode in (1, 4)
    refused = tether("list", env=client_env(embedded.url, "tether_wrong00001_" + "0" * 32))
    assert "Invalid API key" in one_line_error(refused, 3)


class _SlowCreate(BaseHTTPRequestHandler):
    """A create that answers only when released, and again (the same) for its key."""

    received: list[str] = []
    arrived = threading.Event()
    release = threading.Event()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(self.headers["Idempotency-Key"])
        self.arrived.set()
        self.release.wait(60)
        body = json.dumps({"id": "ws-interrupted-1", "status": "running"}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def slow_create() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowCreate)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    _SlowCreate.release.set()
    server.shutdown()


def test_ctrl_c_during_create_names_the_session_it_made(slow_create: str) -> None:
    """The server goes on with a create it received; the CLI asks again with the same
    Idempotency-Key and names what was made."""
    proc = subprocess.Popen([sys.executable, "-m", "tether.cli.main", "create"],
                            env=client_env(slow_create, "key"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert _SlowCreate.arrived.wait(60), "the create never arrived"
    proc.send_signal(signal.SIGINT)
    assert wait_for(lambda: len(_SlowCreate.received) == 2 or proc.poll() is not None, 60)
    _SlowCreate.release.set()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "ws-interrupted-1 was made" in err and "tether delete ws-interrupted-1" in err
    assert json.loads(out)["id"] == "ws-interrupted-1" and "Traceback" not in err
    assert len(set(_SlowCreate.received)) == 1  # asked twice, with one key


def test_up_on_a_busy_port_seeds_nothing(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**client_env(""), "TETHER_PORT": str(port), "TETHER_HOME": str(tmp_path / "home")}
        done = tether("up", env=env)
    assert done.returncode == 1 and f"port {port} is taken" in done.stderr, done
    assert not (tmp_path / "home").exists()  # no credentials made and never shown


def test_reset_admin_gives_new_credentials_and_revokes_the_old(embedded: Server) -> None:
    env = {**client_env(embedded.url), "TETHER_HOME": str(embedded.home)}
    done = tether("reset-admin", env=env)
    assert done.returncode == 0, done.stderr
    key = done.stdout.split("revoked): ")[1].split()[0]
    password = done.stdout.split("'admin': ")[1].split()[0]
    headers = {"X-API-Key": key}
    assert httpx.get(f"{embedded.url}/v1/sessions", headers=headers).status_code == 200
    old = {"X-API-Key": embedded.key}
    assert httpx.get(f"{embedded.url}/v1/sessions", headers=old).status_code == 401
    login = {"username": "admin", "password": password}
    assert httpx.post(f"{embedded.url}/api/v1/auth/login", json=login).status_code == 200
