"""What the SDK's typed calls return: frozen pydantic models read from the API's answers (a
field the server adds later is ignored; one missing or of the wrong type is a `TetherError`,
never a half-read object), and `CommandFailed`, what `CommandResult.check()` raises."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tether import errors


class _Answer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class SessionInfo(_Answer):
    """A session as the API shows it. `status`: pending, running, hibernating, hibernated (what
    `pause()` leads to), waking, terminating, terminated, failed or expired."""

    id: str
    template: str
    status: str
    url: str
    namespace: str = "default"
    user: str = "default"
    provider: str = ""
    metadata: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    created_at: datetime | None = None
    expires_at: datetime | None = None  # None: a long-lived session
    last_activity_at: datetime | None = None
    last_activity_source: str | None = None  # api, exec, terminal, desktop, files, port, process
    ttl_minutes: int | None = None
    long_lived: bool = False


class CommandResult(_Answer):
    """How a command ended and what it printed (text, undecodable bytes replaced)."""

    stdout: str
    stderr: str
    exit_code: int
    timed_out: bool = False  # killed at its timeout (exit_code 124)
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def check(self) -> CommandResult:
        """This result if the command succeeded, else `CommandFailed` carrying it."""
        if not self.ok:
            raise CommandFailed(self)
        return self


class ProcessInfo(_Answer):
    """A background process (`run(..., background=True)`)."""

    pid: int
    command: str
    cwd: str = ""
    status: Literal["running", "exited"]
    exit_code: int | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None

    @property
    def running(self) -> bool:
        return self.status == "running"


class FileInfo(_Answer):
    """A file, directory or link in the workspace (a link is described, never followed)."""

    name: str
    path: str
    type: Literal["file", "dir", "symlink", "other"]
    size: int
    mode: str  # octal, as "0644"
    modified: datetime

    @property
    def is_dir(self) -> bool:
        return self.type == "dir"


class WrittenFile(_Answer):
    """What `files.write` and `files.upload` stored: its absolute path, size and SHA-256 (the
    SDK checks the digest against what it sent)."""

    path: str
    size: int
    sha256: str


class CommandFailed(errors.TetherError):
    """A command that exited non-zero or ran out of its time, raised by
    `CommandResult.check()`; `result` is the whole `CommandResult`."""

    def __init__(self, result: CommandResult) -> None:
        how = "timed out" if result.timed_out else f"exited with {result.exit_code}"
        tail = result.stderr.strip().splitlines()[-1:] or result.stdout.strip().splitlines()[-1:]
        said = f": {tail[0][:200]}" if tail else ""
        super().__init__(
            f"The command {how}{said}", exit_code=result.exit_code, timed_out=result.timed_out
        )
        self.result = result


A = TypeVar("A", bound=_Answer)


def parse(model: type[A], data: Any) -> A:
    """`data` as `model`, or a `TetherError` saying the answer was not one."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the body"
        raise errors.TetherError(
            f"The server's answer is not a {model.__name__}: {where}: {first['msg']}",
            code="BAD_ANSWER",
        ) from None
