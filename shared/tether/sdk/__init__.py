"""Python SDK for Tether: sync `Client` and async `AsyncClient`, the same calls by the same
names (the async ones awaited).

    client = Client("http://127.0.0.1:8080", api_key)
    with client.create("python", metadata={"team": "ml"}) as s:  # deleted on leaving
        s.run("pip list", on_stdout=print).check()
        s.files.upload("data.csv", "data.csv")
        server = s.run("python -m http.server 8000", background=True)
        print(s.get_url(8000, public=True))

Sessions: `client.create(...)`, `client.connect(id)`, `client.list(metadata=...)`; a
`Session` has `run` (`CommandResult`, or with `background=True` a `BackgroundProcess`),
`processes()`, `files` (read, read_text, write, list, stat, exists, remove, mkdir, upload,
download), `get_url`, `set_timeout`, `extend`, `pause`, `resume`, `info()`, `delete()`.
OnMemOS' calls (`client.session(...)`, `execute`, `create_session`...) answer dicts as before;
`OnMemOSClient` is `Client`. Kubently: `client.kubectl(...)`, `client.debug_session(...)`.

Errors: everything the SDK raises on purpose is a `tether.errors.TetherError` (`message`,
`field` when one is to blame, and `details`: the HTTP `status`, the server's `code`, and
`retry_after` in seconds when the answer said one):

    TetherError
    ├── Invalid            400, 413: a malformed request (a file past the size bound)
    │   └── Unprocessable  422: well formed but not doable
    ├── Unauthenticated    401: no key, or not a valid one
    ├── Forbidden          403: a valid key without the right
    ├── NotFound           404: no such session, file or process (another user's too)
    ├── Conflict           409: the state does not allow it (a process that has ended)
    ├── RateLimited        429: too many requests (retried; see RetryPolicy)
    ├── Unavailable        502, 503, 507: nothing listens on a port, no capacity, no space;
    │                      a session that did not start; an output stream cut short
    ├── Timeout            408, 504: the work outlived its time
    ├── Unsupported        501: what the API's clients know but Tether does not offer
    └── CommandFailed      `CommandResult.check()`: a non-zero exit or a timeout (`result`)

Another status is a bare `TetherError`; an answer that is not what the API promises is one
too, with `code` BAD_ANSWER. A connection that failed after its retries raises httpx's own
`httpx.TransportError`. What is retried, and how, is `RetryPolicy`'s docstring.
"""

from tether.sdk.aio import (
    AsyncBackgroundProcess,
    AsyncClient,
    AsyncDebugSession,
    AsyncFiles,
    AsyncSession,
)
from tether.sdk.calls import RetryPolicy
from tether.sdk.client import BackgroundProcess, Client, DebugSession, Files, Session
from tether.sdk.types import (
    CommandFailed,
    CommandResult,
    FileInfo,
    ProcessInfo,
    SessionInfo,
    WrittenFile,
)

OnMemOSClient = Client  # the name OnMemOS's own SDK uses

__all__ = [
    "AsyncBackgroundProcess",
    "AsyncClient",
    "AsyncDebugSession",
    "AsyncFiles",
    "AsyncSession",
    "BackgroundProcess",
    "Client",
    "CommandFailed",
    "CommandResult",
    "DebugSession",
    "FileInfo",
    "Files",
    "OnMemOSClient",
    "ProcessInfo",
    "RetryPolicy",
    "Session",
    "SessionInfo",
    "WrittenFile",
]
