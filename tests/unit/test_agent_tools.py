"""An AI agent's tools as command lines: run here by the real bash, in a home of their own, as
the workspace's runtime runs them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from tether import bootstrap
from tether.core import agent_tools
from tether.errors import Invalid
from tether.settings import Settings


def run(home: Path, tool: str, **args: str) -> subprocess.CompletedProcess[str]:
    line = agent_tools.command_for(tool, args)
    return subprocess.run(["bash", "-c", line], env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=30)  # fmt: skip


def test_each_tool_does_what_it_says(tmp_path: Path) -> None:
    tricky = 'it\'s "quoted" $HOME `id` \\ and\nnewlines\n'
    assert run(tmp_path, "write_file", path="notes/a b.txt", content=tricky).returncode == 0
    assert (tmp_path / "notes" / "a b.txt").read_text() == tricky
    assert run(tmp_path, "read_file", path="notes/a b.txt").stdout == tricky
    assert run(tmp_path, "python", code="print(sum(range(10)))").stdout == "45\n"
    shell = run(tmp_path, "shell", command="pwd; exit 3")
    assert shell.stdout.strip() == str(tmp_path) and shell.returncode == 3


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside", "a/../../b", "", "  "])
def test_paths_outside_the_home_are_refused(path: str) -> None:
    with pytest.raises(Invalid) as refused:
        agent_tools.command_for("read_file", {"path": path})
    assert refused.value.field == "path"


def test_a_tool_runs_only_if_the_image_declares_it() -> None:
    declared = ["file/read", "web/search", "terminal"]
    assert agent_tools.check(declared, "read_file") == "read_file"
    assert agent_tools.check(declared, "shell") == "shell"
    assert [t.name for t in agent_tools.offered(declared)] == ["read_file", "shell"]
    for requested, says in (("python", "does not declare"), ("web/search", "does not provide"),
                            ("rm", "Unknown tool")):  # fmt: skip
        with pytest.raises(Invalid, match=says):
            agent_tools.check(declared, requested)


def test_oversized_or_mistyped_arguments_are_refused() -> None:
    with pytest.raises(Invalid, match="content"):
        agent_tools.command_for("write_file", {"path": "a", "content": "x" * (65 * 1024)})
    with pytest.raises(Invalid, match="code"):
        agent_tools.command_for("python", {"code": 42})  # type: ignore[dict-item]


def test_no_jwt_secret_is_made_up_in_the_cloud(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, in_cloud=True)
    with pytest.raises(Invalid, match="TETHER_JWT_SECRET is required"):
        bootstrap.build(settings)
    assert not (tmp_path / "jwt-secret").exists()
    assert bootstrap.jwt_secret(Settings(home=tmp_path)) != ""  # a laptop's: made once, kept
