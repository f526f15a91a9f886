"""OnMemOS: the calls a session's runtime answers live, through the relay (`tether.relay.
passthrough`): streamed exec, background processes, files, its ports and their preview links.

Declared here on the OnMemOS router so its document describes them; the relay serves them
(the load balancer sends their paths there; `tether up`'s origin asks the relay first) and
validates with these same models. A function reached with one anyway says where it lives.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from werkzeug.wrappers import Request, Response

from tether import bootstrap
from tether.errors import NotFound
from tether.surfaces.http import INTEGRAL, json_response
from tether.surfaces.onmemos import NO_NUL, Env, Timeout, base_url, principal, router

MAX_STDIN = 1 << 20  # characters of input given with a streamed command
Signal = Literal["TERM", "KILL", "INT", "HUP"]
Path = Annotated[str, Field(min_length=1, max_length=4096, pattern=NO_NUL)]


class StreamedCommand(BaseModel):
    model_config = ConfigDict(extra="ignore")

    command: str = Field(min_length=1, max_length=100_000, pattern=NO_NUL)
    timeout: Timeout = 120
    env: Env | None = Field(None, description="Variables added to the workspace's")
    cwd: Path | None = Field(None, description="Directory to run in: relative to the home")
    stdin: str | None = Field(None, max_length=MAX_STDIN, description="The command's input")


class StartProcess(BaseModel):
    model_config = ConfigDict(extra="ignore")

    command: str = Field(min_length=1, max_length=100_000, pattern=NO_NUL)
    env: Env | None = None
    cwd: Path | None = None


class Stdin(BaseModel):
    model_config = ConfigDict(extra="ignore")

    data: str = Field("", max_length=MAX_STDIN)
    eof: bool = Field(False, description="Close the process's input after `data`")


class Kill(BaseModel):
    model_config = ConfigDict(extra="ignore")

    signal: Signal = Field("TERM", description="Sent to the process's whole group")


class Process(BaseModel):
    pid: int
    command: str
    cwd: str
    status: Literal["running", "exited"]
    exit_code: int | None
    started_at: str
    ended_at: str | None


class Processes(BaseModel):
    processes: list[Process]


class OutputQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    follow: bool = Field(True, description="Go on with what it prints next, until it exits")


class PathQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    path: Path = Field(description="Relative to the home, or absolute")


class RemoveQuery(PathQuery):
    recursive: bool = False


class Entry(BaseModel):
    name: str
    path: str
    type: Literal["file", "dir", "symlink", "other"]
    size: int
    mode: str = Field(description="Permission bits, in octal")
    modified: str


class Listing(BaseModel):
    path: str
    entries: list[Entry]
    truncated: bool


class Written(BaseModel):
    path: str
    size: int
    sha256: str


class Removed(BaseModel):
    deleted: str


class PreviewRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    port: Annotated[int, Field(ge=1, le=65535), INTEGRAL]
    expires_in: Annotated[int, Field(ge=60, le=7 * 24 * 3600), INTEGRAL] = Field(
        3600, description="Seconds"
    )


class PreviewLink(BaseModel):
    url: str = Field(description="Opens the port's `/` to anyone who has it, until it expires")
    port: int
    expires_at: str


SESSION = "/v1/sessions/<session_id>"
EVENTS = "text/event-stream"
ERRORS = (409, 502)  # the session does not run; its runtime did not answer


def relayed(request: Request, **_: object) -> Response:
    """What a function answers on a path the relay serves (the load balancer sends it there)."""
    raise NotFound(f"{request.path} is served by the relay: send it to the relay's address")


@router.route(f"{SESSION}/exec/stream", ["POST"], body=StreamedCommand, answers={200: None},
              media=EVENTS, errors=ERRORS)  # fmt: skip
def exec_stream(request: Request, session_id: str, body: StreamedCommand) -> Response:
    """Run a command, its output streamed as it comes (events: stdout, stderr, exit)."""
    return relayed(request)


@router.route(f"{SESSION}/processes", ["POST"], body=StartProcess, answers={201: Process},
              errors=(*ERRORS, 429))  # fmt: skip
def start_process(request: Request, session_id: str, body: StartProcess) -> Response:
    """Start a process that outlives this call (it ends with the session, or when killed)."""
    return relayed(request)


@router.route(f"{SESSION}/processes", ["GET"], answers={200: Processes}, errors=ERRORS)
def list_processes(request: Request, session_id: str) -> Response:
    """The session's processes: those running, and the last ones that ended."""
    return relayed(request)


@router.route(f"{SESSION}/processes/<int:pid>", ["GET"], answers={200: Process}, errors=ERRORS)
def get_process(request: Request, session_id: str, pid: int) -> Response:
    """One process."""
    return relayed(request)


@router.route(f"{SESSION}/processes/<int:pid>/stdin", ["POST"], body=Stdin,
              answers={200: Process}, errors=ERRORS)  # fmt: skip
def process_stdin(request: Request, session_id: str, pid: int, body: Stdin) -> Response:
    """Send a process input (409 once it has exited)."""
    return relayed(request)


@router.route(f"{SESSION}/processes/<int:pid>/kill", ["POST"], body=Kill,
              answers={200: Process}, errors=ERRORS)  # fmt: skip
def kill_process(request: Request, session_id: str, pid: int, body: Kill) -> Response:
    """Signal a process's group."""
    return relayed(request)


@router.route(f"{SESSION}/processes/<int:pid>/output", ["GET"], query=OutputQuery,
              answers={200: None}, media=EVENTS, errors=ERRORS)  # fmt: skip
def process_output(request: Request, session_id: str, pid: int, query: OutputQuery) -> Response:
    """What a process printed (its last MiB), then what it prints (events: stdout, stderr,
    exit); a WebSocket upgrade on this path gets the same as JSON messages."""
    return relayed(request)


@router.route(f"{SESSION}/files", ["GET"], query=PathQuery, answers={200: Listing},
              errors=ERRORS)  # fmt: skip
def list_files(request: Request, session_id: str, query: PathQuery) -> Response:
    """A directory's entries (links shown as links, never followed)."""
    return relayed(request)


@router.route(f"{SESSION}/files", ["DELETE"], query=RemoveQuery, answers={200: Removed},
              errors=ERRORS)  # fmt: skip
def remove_file(request: Request, session_id: str, query: RemoveQuery) -> Response:
    """Remove a file, or a directory (with `recursive` unless it is empty)."""
    return relayed(request)


@router.route(f"{SESSION}/files/stat", ["GET"], query=PathQuery, answers={200: Entry},
              errors=ERRORS)  # fmt: skip
def stat_file(request: Request, session_id: str, query: PathQuery) -> Response:
    """One file's entry."""
    return relayed(request)


@router.route(f"{SESSION}/files/mkdir", ["POST"], query=PathQuery, answers={201: Entry},
              errors=ERRORS)  # fmt: skip
def make_directory(request: Request, session_id: str, query: PathQuery) -> Response:
    """Make a directory and its parents (one there already is fine)."""
    return relayed(request)


@router.route(f"{SESSION}/files/content", ["GET"], query=PathQuery, answers={200: None},
              media="application/octet-stream", errors=ERRORS)  # fmt: skip
def download_file(request: Request, session_id: str, query: PathQuery) -> Response:
    """A file's bytes, streamed."""
    return relayed(request)


@router.route(f"{SESSION}/files/content", ["PUT"], query=PathQuery, answers={201: Written},
              raw="application/octet-stream", errors=(*ERRORS, 507))  # fmt: skip
def upload_file(request: Request, session_id: str, query: PathQuery) -> Response:
    """Write a file from the body's bytes, streamed (its directories made; all or nothing:
    a failed upload leaves no file). At most TETHER_FILE_MAX_BYTES (1 GiB) a request."""
    return relayed(request)


@router.route(f"{SESSION}/preview-urls", ["POST"], body=PreviewRequest,
              answers={201: PreviewLink}, errors=(409,))  # fmt: skip
def preview_url(request: Request, session_id: str, body: PreviewRequest) -> Response:
    """A link that opens one of the session's ports to anyone who has it, until it expires
    (or the session ends, or the credential that made it is revoked)."""
    services, who = bootstrap.services(), principal(request)
    session = services.sessions.usable(who, session_id)
    lifetime = timedelta(seconds=body.expires_in)
    token, expires = services.previews.issue(who, session.id, body.port, lifetime)
    url = f"{base_url(request)}/preview/{token}/"
    return json_response(PreviewLink(url=url, port=body.port, expires_at=expires.isoformat()), 201)
