"""Every command and snippet in the README, run as written against a `tether up` of this test's.

What changes: the base URL (`http://127.0.0.1:8080` in the text, and `TETHER_URL`) is this
server's, `KEY` and `PASSWORD` hold its credentials, as the Quickstart asks a reader to set
them, and `ID` a running Python session of the check's, as "Working in a session" does. A
`# prints X` comment is checked: X appears in what the block printed. A block that cannot run
here says why in a `<!-- readme: not run: ... -->` line above it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Server, free_port, start_server
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
WRITTEN_URL = "http://127.0.0.1:8080"
PASSWORD = "readme-password"
FENCE = re.compile(
    r"^(?:<!-- readme: (?P<note>.*?) -->\n)?```(?P<lang>[a-z]*)\n(?P<code>.*?)^```$", re.S | re.M
)
PRINTS = re.compile(r"#\s*prints (.+?)\s*$", re.M)


@dataclass(frozen=True)
class Block:
    line: int
    lang: str
    code: str
    note: str | None

    def __str__(self) -> str:
        return f"README.md:{self.line}"


def blocks() -> list[Block]:
    text = README.read_text()
    found = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start("lang")) + 1
        found.append(Block(line, m["lang"], m["code"], m["note"]))
    return found


CODE = [b for b in blocks() if b.lang in ("bash", "python")]
RUN = [b for b in CODE if b.note is None]


def test_every_example_is_run_or_says_why_not() -> None:
    assert len(RUN) >= 6, [str(b) for b in RUN]
    for block in CODE:
        assert block.note is None or re.match(r"not run: .{10,}", block.note), block
    # Anything else fenced is a picture (no language), or a file to write (YAML) saying why
    # it is not run, not something to type.
    assert all(b.lang in ("", "bash", "python") or (b.lang == "yaml" and b.note)
               for b in blocks())  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("readme") / "home"
    srv = start_server(home, {"TETHER_ADMIN_PASSWORD": PASSWORD})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def session(server: Server) -> str:
    made = httpx.post(f"{server.url}/v1/sessions", json={"template": "python"},
                      headers={"X-API-Key": server.key}, timeout=120)  # fmt: skip
    assert made.status_code == 201, made.text
    sid: str = made.json()["id"]
    return sid


def reader_env(url: str, **extra: str) -> dict[str, str]:
    """A reader's shell: none of this process's Tether settings, the base URL ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    return {**env, "TETHER_URL": url, **extra}


def run(block: Block, server: Server, session: str = "") -> subprocess.CompletedProcess[str]:
    code = block.code.replace(WRITTEN_URL, server.url)
    argv = [sys.executable, "-c", code] if block.lang == "python" else ["bash", "-e", "-c", code]
    env = reader_env(server.url, KEY=server.key, PASSWORD=PASSWORD, ID=session)
    # Input is an empty pipe, as for a command in a script.
    return subprocess.run(argv, cwd=ROOT, env=env, input="", capture_output=True, text=True,
                          timeout=600)  # fmt: skip


@pytest.mark.timeout(900)
@pytest.mark.parametrize("block", [b for b in RUN if "make up" not in b.code], ids=str)
def test_example_runs_as_written(block: Block, server: Server, session: str) -> None:
    ran_as_written(block, run(block, server, session))


def ran_as_written(block: Block, done: subprocess.CompletedProcess[str]) -> None:
    """`block` exited 0, printed what its comments say it prints, and raised nothing."""
    said = f"{block} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert done.returncode == 0, said
    for expected in PRINTS.findall(block.code):
        assert expected in done.stdout, f"{block}: {expected!r} not printed\n{said}"
    assert "Traceback" not in done.stderr, said


@pytest.mark.timeout(900)
@pytest.mark.parametrize("block", [b for b in RUN if "make up" in b.code], ids=str)
def test_make_up_with_chosen_credentials(block: Block, tmp_path: Path) -> None:
    """`make up` serves with the key and password the block chooses."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = reader_env(url, TETHER_PORT=str(port), TETHER_HOME=str(tmp_path / "home"))
    log = tmp_path / "make-up.log"
    with log.open("w") as out:
        proc = subprocess.Popen(["bash", "-e", "-c", block.code], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:

        def up() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return httpx.get(f"{url}/health", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        assert wait_for(up, timeout=300, step=0.2), "make up did not serve"
        key = re.search(r"TETHER_API_KEY=(\S+)", block.code)
        password = re.search(r"TETHER_ADMIN_PASSWORD=(\S+)", block.code)
        assert key and password, block
        listed = httpx.get(f"{url}/v1/sessions", headers={"X-API-Key": key[1]})
        assert listed.status_code == 200, listed.text
        login = {"username": "admin", "password": password[1]}
        assert httpx.post(f"{url}/api/v1/auth/login", json=login).status_code == 200
        assert "shown once" not in log.read_text()  # nothing generated: both were chosen
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
