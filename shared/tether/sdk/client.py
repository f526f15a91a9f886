"""Synchronous client. `with client.create(...) as s:` and `with client.session(...) as s:`
delete the session on exit; `with client.debug_session("cluster") as s:` ends the Kubently
debug session on exit. The package's docstring (`tether.sdk`) has the overview and errors."""

from __future__ import annotations

import builtins
import contextlib
import functools
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, overload

import httpx
import tenacity
from httpx_sse import EventSource, ServerSentEvent

from tether import errors
from tether.sdk import calls
from tether.sdk.calls import Call, RetryPolicy
from tether.sdk.recordings import Recordings
from tether.sdk.types import CommandResult, FileInfo, ProcessInfo, SessionInfo, WrittenFile, parse


class Session:
    """A handle on one session (or legacy workspace). `with` deletes the session on leaving
    the block unless `keep` (`create`'s default False, `connect`'s True); `data` is the
    session's JSON as last read (OnMemOS' fields; `info()` reads it, typed)."""

    def __init__(
        self, client: Client, info: dict[str, Any], legacy: bool = False, keep: bool = True
    ) -> None:
        self.client = client
        self.data = info
        self.id: str = info["id"]
        self.legacy = legacy
        self.keep = keep
        self.files = Files(self)
        self.recordings = Recordings(self)  # its terminal's recordings

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if self.keep:
            return
        try:
            self.delete()
        except Exception as failed:  # the block's exception is the one to see
            if exc is None:
                raise
            exc.add_note(f"and deleting session {self.id} failed: {failed}")

    def __repr__(self) -> str:
        return f"Session({self.id!r})"

    # -- OnMemOS' calls (dict results) -------------------------------------------------------

    def execute(self, command: str, timeout: float = 120, **options: Any) -> dict[str, Any]:
        """Runs `command`; `options` (env, cwd) are the unified API's."""
        if self.legacy:
            return self.client.execute_workspace(self.id, command, timeout)
        return self.client.execute_session(self.id, command, timeout, **options)

    def run_python(self, code: str, timeout: float = 120) -> dict[str, Any]:
        return self.client.run_python(self.id, code, timeout)

    def refresh(self) -> dict[str, Any]:
        self.data = self.client.get_session(self.id)
        return self.data

    def delete(self) -> dict[str, Any]:
        if self.legacy:
            return self.client.delete_workspace(self.id)
        return self.client.delete_session(self.id)

    # -- typed calls -------------------------------------------------------------------------

    def info(self) -> SessionInfo:
        """The session now."""
        return self._session(calls.session(self.id))

    @overload
    def run(
        self,
        cmd: str,
        *,
        on_stdout: Callable[[str], object] | None = ...,
        on_stderr: Callable[[str], object] | None = ...,
        background: Literal[False] = ...,
        envs: dict[str, str] | None = ...,
        cwd: str | None = ...,
        stdin: str | None = ...,
        timeout: float = ...,
    ) -> CommandResult: ...

    @overload
    def run(
        self,
        cmd: str,
        *,
        on_stdout: Callable[[str], object] | None = ...,
        on_stderr: Callable[[str], object] | None = ...,
        background: Literal[True],
        envs: dict[str, str] | None = ...,
        cwd: str | None = ...,
        stdin: str | None = ...,
        timeout: float = ...,
    ) -> BackgroundProcess: ...

    def run(
        self,
        cmd: str,
        *,
        on_stdout: Callable[[str], object] | None = None,
        on_stderr: Callable[[str], object] | None = None,
        background: bool = False,
        envs: dict[str, str] | None = None,
        cwd: str | None = None,
        stdin: str | None = None,
        timeout: float = 120,
    ) -> CommandResult | BackgroundProcess:
        """Runs `cmd` with bash in the workspace (in `cwd`, relative to the home; `envs` added
        to its variables; `stdin` its whole input) and returns how it ended: a non-zero exit is
        a result, `.check()` raises `CommandFailed` for it. `on_stdout` / `on_stderr` get the
        text as it is printed. Past `timeout` seconds the command is killed (`timed_out`).

        `background=True` starts it and returns at once a `BackgroundProcess`: it runs on after
        this call (no timeout) until it ends, is killed, or the session goes; `on_stdout` /
        `on_stderr` are then for its `wait()`."""
        if background:
            started = self.client._do(calls.start_process(self.id, cmd, envs, cwd))
            proc = BackgroundProcess(self, parse(ProcessInfo, started))
            if stdin is not None:
                proc.send_stdin(stdin, eof=True)
            return proc
        output = calls.Output(on_stdout, on_stderr)
        for event in self.client._events(
            calls.exec_stream(self.id, cmd, timeout, envs, cwd, stdin)
        ):
            output.feed(event.event, event.data)
        return output.result()

    def processes(self) -> list[ProcessInfo]:
        """Its background processes: the running ones and the last 64 that ended."""
        return calls.processes_of(self.client._do(calls.processes(self.id)))

    def get_url(self, port: int, *, public: bool = False, expires_in: int = 3600) -> str:
        """The URL of the workspace's `port` (an HTTP server in it, WebSockets too). Without
        `public` it is the API's own and needs this client's credential (X-API-Key); with it, a
        link anyone may open for `expires_in` seconds (60 to 604800), no credential needed."""
        if not public:
            return calls.port_url(str(self.client._http.base_url), self.id, port)
        answer = self.client._do(calls.preview_url(self.id, port, expires_in))
        if not isinstance(answer, dict) or not isinstance(answer.get("url"), str):
            raise errors.TetherError("The server's answer has no preview url", code="BAD_ANSWER")
        return str(answer["url"])

    def set_timeout(self, seconds: int) -> SessionInfo:
        """Makes the session expire `seconds` from now (sooner or later than it would)."""
        return self._session(calls.session_action(self.id, "extend", {"expires_in": seconds}))

    def extend(self, minutes: int) -> SessionInfo:
        """Adds `minutes` (1 to 1440) to the session's life."""
        return self._session(calls.session_action(self.id, "extend", {"minutes": minutes}))

    def pause(self) -> SessionInfo:
        """Stops its processes and keeps its files (status hibernated)."""
        return self._session(calls.session_action(self.id, "pause"))

    def resume(self) -> SessionInfo:
        """Wakes it: running again once this returns."""
        return self._session(calls.session_action(self.id, "resume"))

    def _session(self, call: Call) -> SessionInfo:
        self.data = self.client._do(call)
        return parse(SessionInfo, self.data)


class BackgroundProcess:
    """A process started with `run(..., background=True)`: it outlives that call and dies with
    the session. `pid` is its id in the workspace."""

    def __init__(self, session: Session, info: ProcessInfo) -> None:
        self.session = session
        self.pid = info.pid
        self.started = info

    def __repr__(self) -> str:
        return f"BackgroundProcess({self.pid}, {self.started.command!r})"

    def _call(self, *action: str, body: dict[str, Any] | None = None) -> ProcessInfo:
        answer = self.session.client._do(
            calls.process(self.session.id, self.pid, *action, body=body)
        )
        return parse(ProcessInfo, answer)

    def info(self) -> ProcessInfo:
        """The process now (running or exited, its exit code)."""
        return self._call()

    def send_stdin(self, data: str, *, eof: bool = False) -> ProcessInfo:
        """Writes `data` to its standard input (`eof`: then closes it). `Conflict` once it
        ended."""
        return self._call("stdin", body={"data": data, "eof": eof})

    def kill(self, signal: str = "TERM") -> ProcessInfo:
        """Sends `signal` (TERM, KILL, INT or HUP) to its process group."""
        return self._call("kill", body={"signal": signal})

    def wait(
        self,
        *,
        on_stdout: Callable[[str], object] | None = None,
        on_stderr: Callable[[str], object] | None = None,
    ) -> CommandResult:
        """Waits for it to end; the result holds what it printed (the last MiB of each stream
        the workspace keeps), which the callbacks also get, from the start, as it comes."""
        output = calls.Output(on_stdout, on_stderr)
        for event in self.session.client._events(calls.process_output(self.session.id, self.pid)):
            output.feed(event.event, event.data)
        return output.result()


def _piece(
    section: Callable[[int, int], Iterable[bytes]],
    at: int,
    size: int,
    digest: calls.PieceDigest,
    told: Callable[[int], None],
) -> Iterator[bytes]:
    """One piece of an upload, hashed as it goes; each try of it starts again (and so does
    the progress it tells)."""
    digest.restart()
    for chunk in section(at, size):
        digest.update(chunk)
        yield chunk
        at += len(chunk)
        told(at)


class Files:
    """A session's files (`session.files`): relative paths are under the workspace's home."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def _do(self, method: str, path: str, *rest: str, **params: Any) -> Any:
        return self.session.client._do(calls.files(method, self.session.id, path, *rest, **params))

    def read(self, path: str) -> bytes:
        """The file's bytes (for a large one, `download` keeps it out of memory)."""
        with self.session.client._open(calls.files("GET", self.session.id, path, "content")) as r:
            return r.read()

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return self.read(path).decode(encoding)

    def write(self, path: str, data: bytes | str) -> WrittenFile:
        """Stores `data` (a str as UTF-8) at `path`, making its parent directories: all of it
        or, if the write fails, nothing."""
        raw = data.encode() if isinstance(data, str) else data
        return self._store(path, len(raw), lambda at, size: (raw[at : at + size],))

    def list(self, path: str = ".") -> builtins.list[FileInfo]:
        """The directory's entries, sorted by name."""
        return calls.entries_of(self._do("GET", path))

    def stat(self, path: str) -> FileInfo:
        """What is at `path` (`NotFound` if nothing); a link is described, not followed."""
        return parse(FileInfo, self._do("GET", path, "stat"))

    def exists(self, path: str) -> bool:
        try:
            self.stat(path)
        except errors.NotFound:
            return False
        return True

    def remove(self, path: str, recursive: bool = False) -> None:
        """Deletes the file, link or directory (one with entries only if `recursive`)."""
        self._do("DELETE", path, recursive=str(recursive).lower())

    def mkdir(self, path: str) -> FileInfo:
        """Makes the directory and its parents (one that exists already is fine)."""
        return parse(FileInfo, self._do("POST", path, "mkdir"))

    def upload(
        self,
        local_path: str | os.PathLike[str],
        remote_path: str,
        progress: calls.Progress | None = None,
    ) -> WrittenFile:
        """Sends the local file to `remote_path`, read from disk a MiB at a time (one larger
        than a request may carry goes in parts, joined in the workspace: see `calls.Upload`).
        Its SHA-256 is checked against what the workspace stored. `progress(sent, total)` is
        told as the bytes go."""
        local = Path(local_path)

        def section(at: int, size: int) -> Iterator[bytes]:
            with local.open("rb") as f:
                f.seek(at)
                while size > 0 and (chunk := f.read(min(calls.CHUNK, size))):
                    size -= len(chunk)
                    yield chunk

        return self._store(remote_path, local.stat().st_size, section, progress)

    def _store(
        self,
        remote: str,
        size: int,
        section: Callable[[int, int], Iterable[bytes]],
        progress: calls.Progress | None = None,
    ) -> WrittenFile:
        """Sends `size` bytes, `section(at, size)` giving those from `at` on."""
        client, plan = self.session.client, calls.Upload(remote, size)

        def told(sent: int) -> None:
            calls.counted(sent, size, progress)

        try:
            for path, at, length in plan.pieces:
                digest = plan.digest()
                call = calls.file_upload(self.session.id, path, length)
                body = functools.partial(_piece, section, at, length, digest, told)
                plan.stored_piece(client._do(call, content=body), digest)
            if not plan.in_parts:
                return plan.stored[0]
            return plan.joined(self.session.run(plan.join(), timeout=900))
        except BaseException:
            if plan.in_parts:  # the pieces a failed upload left
                for piece in plan.stored:
                    with contextlib.suppress(Exception):
                        self.remove(piece.path)
            raise

    def download(
        self,
        remote_path: str,
        local_path: str | os.PathLike[str],
        progress: calls.Progress | None = None,
    ) -> Path:
        """Saves the workspace's file at `local_path`, written to disk as it arrives (under a
        temporary name beside it, renamed when complete: a failed download leaves nothing).
        `progress(got, total)` is told as the bytes come."""
        target = Path(local_path)
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
        call = calls.files("GET", self.session.id, remote_path, "content")
        try:
            with self.session.client._open(call) as response, partial.open("wb") as out:
                got, total = 0, calls.length_of(response)
                for chunk in response.iter_bytes(calls.CHUNK):
                    out.write(chunk)
                    got += len(chunk)
                    calls.counted(got, total, progress)
            calls.check_complete(got, total)
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
        return target


class DebugSession:
    """A Kubently debug session on one cluster: its commands are counted in it and keep it
    alive (`info` is the session as last read)."""

    def __init__(self, client: Client, info: dict[str, Any]) -> None:
        self.client = client
        self.info = info
        self.id: str = info["session_id"]
        self.cluster: str = info["cluster_id"]

    def kubectl(self, *args: str, **options: Any) -> dict[str, Any]:
        """`client.kubectl` on this session's cluster, in this session."""
        return self.client.kubectl(self.cluster, *args, session_id=self.id, **options)

    def kubectl_async(self, *args: str, **options: Any) -> dict[str, Any]:
        return self.client.kubectl_async(self.cluster, *args, session_id=self.id, **options)

    def refresh(self) -> dict[str, Any]:
        """The session now: `status` (active, idle, expired, ended), `command_count`..."""
        self.info = self.client.get_debug_session(self.id)
        return self.info

    def end(self) -> dict[str, Any]:
        """End it (ending an ended session changes nothing)."""
        return self.client.end_debug_session(self.id)


class Client:
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8080",
        api_key: str | None = None,
        timeout: float = 120.0,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._http = httpx.Client(
            transport=transport, **calls.client_options(base_url, api_key, timeout)
        )
        self.retry = retry or RetryPolicy()

    def _do(self, call: Call, content: Callable[[], bytes | Iterable[bytes]] | None = None) -> Any:
        """`call`'s JSON answer, tried as `self.retry` says (`content()` gives the body, anew
        on each try)."""
        for attempt in tenacity.Retrying(**self.retry.options(call)):
            with attempt:
                options = calls.request_options(call)
                if content is not None:
                    options["content"] = content()
                response = self._http.request(call.method, call.path, **options)
                answer = calls.result(response)  # an error raised here may be retried
        return answer

    @contextmanager
    def _open(self, call: Call) -> Iterator[httpx.Response]:
        """`call`'s answer with its body still to read (tried as `_do`, up to its headers)."""
        for attempt in tenacity.Retrying(**self.retry.options(call)):
            with attempt:
                request = self._http.build_request(
                    call.method, call.path, **calls.request_options(call)
                )
                response = self._http.send(request, stream=True)
                if not response.is_success:
                    response.read()
                    response.close()
                    calls.raise_for(response)
        try:
            yield response
        finally:
            response.close()

    def _events(self, call: Call) -> Iterator[ServerSentEvent]:
        with self._open(call) as response:
            yield from EventSource(response).iter_sse()

    # -- typed API -------------------------------------------------------------------------------

    def create(
        self,
        template: str = "python",
        *,
        name: str | None = None,
        namespace: str | None = None,
        user: str | None = None,
        ttl_minutes: int | None = None,
        metadata: dict[str, str] | None = None,
        keep: bool = False,
        wait: bool = True,
    ) -> Session:
        """A new session from `template`; `with client.create() as s:` deletes it on leaving
        the block unless `keep`. `metadata` (up to 32 `str: str` pairs) is for `list` to find
        it by; `name` is kept there too, as "name". With `wait`, returns once it runs
        (`Unavailable` if it failed to start, and then it is deleted unless `keep`)."""
        call = calls.new_session(template, name, namespace, user, ttl_minutes, metadata)
        handle = Session(self, self._do(call), keep=keep)
        if wait:
            try:
                calls.settled(tenacity.Retrying(**calls.settle_poll())(handle.info))
            except BaseException as exc:
                calls.give_up(handle.keep, handle.delete, exc)
                raise
        return handle

    def connect(self, session_id: str, *, keep: bool = True) -> Session:
        """A handle on an existing session (`NotFound` if there is none the caller may see).
        `with` leaves it as it is unless `keep=False`."""
        return Session(self, self._do(calls.session(session_id)), keep=keep)

    def list(self, metadata: dict[str, str] | None = None) -> builtins.list[SessionInfo]:
        """The caller's live sessions, those whose metadata has every pair of `metadata`."""
        found: builtins.list[SessionInfo] = []
        cursor: str | None = None
        while True:
            page, cursor = calls.sessions_of(self._do(calls.session_page(metadata, cursor)))
            found += page
            if cursor is None:
                return found

    # -- unified API -----------------------------------------------------------------------------

    def create_session(
        self, spec: dict[str, Any] | None = None, idempotency_key: str | None = None, **kw: Any
    ) -> dict[str, Any]:
        call = calls.create_session({**(spec or {}), **kw}, idempotency_key)
        result: dict[str, Any] = self._do(call)
        return result

    def get_session(self, session_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._do(calls.get_session(session_id))
        return result

    def list_sessions(
        self, namespace: str | None = None, user: str | None = None
    ) -> builtins.list[dict[str, Any]]:
        result: builtins.list[dict[str, Any]] = self._do(calls.list_sessions(namespace, user))[
            "sessions"
        ]
        return result

    def execute_session(
        self,
        session_id: str,
        command: str,
        timeout: float = 120,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
    ) -> dict[str, Any]:
        """Runs `command` with `env` added to the workspace's variables, in `cwd` (relative to
        the home)."""
        call = calls.execute_session(session_id, command, timeout, env, cwd)
        result: dict[str, Any] = self._do(call)
        return result

    def delete_session(self, session_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._do(calls.delete_session(session_id))
        return result

    def connect_session(self, session_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._do(calls.connect_session(session_id))
        return result

    @contextmanager
    def session(
        self,
        template: str = "python",
        namespace: str = "default",
        user: str = "default",
        provider: str = "auto",
        ttl_minutes: int | None = None,
        long_lived: bool = False,
    ) -> Iterator[Session]:
        spec = calls.session_spec(template, namespace, user, provider, ttl_minutes, long_lived)
        handle = Session(self, self.create_session(spec))
        try:
            yield handle
        finally:
            self.delete_session(handle.id)

    # -- Kubently ---------------------------------------------------------------------------------

    def clusters(self) -> builtins.list[str]:
        """The ids of the clusters commands can be sent to."""
        result: builtins.list[str] = self._do(calls.clusters())["clusters"]
        return result

    def cluster(self, cluster_id: str) -> dict[str, Any]:
        """One cluster: `connected`, `lastSeen`, `agent` (tether or executor)..."""
        result: dict[str, Any] = self._do(calls.cluster(cluster_id))
        return result

    def kubectl(
        self,
        cluster: str,
        *args: str,
        namespace: str | None = None,
        timeout: int = 10,
        session_id: str | None = None,
        correlation_id: str | None = None,
        wait: float | None = calls.APPROVAL_WAIT,
    ) -> dict[str, Any]:
        """Run `kubectl ARGS...` (read verbs only) on `cluster` and return its result:
        `output`, `error` (kubectl's stderr), `exit_code`, `success`, `truncated`,
        `execution_time_ms`, `operation_id`... A command kubectl itself fails (a missing pod)
        is a result with `success` False and kubectl's `exit_code`, not an exception.

        `namespace` is added as `-n` where the args name none; None leaves that to the server
        (its default, "default"). `timeout` (1-30 s) bounds kubectl: past it the command is
        killed and `tether.errors.Timeout` (details code TIMEOUT, `output` so far) is raised.
        A refused command raises `tether.errors.Unprocessable` (details code
        COMMAND_FORBIDDEN, `argument` naming what was refused).

        A command the approval rules hold is waited for, polling its operation with a backoff,
        up to `wait` seconds (None: until an admin decides): then the result as above, or
        `tether.errors.Forbidden` (code DENIED) if it was denied, or `tether.errors.Timeout`
        (code AWAITING_APPROVAL) if nobody decided in time; it stays queued, and runs if
        approved later. `wait=0` returns the held command's `{operation_id, status:
        "awaiting_approval", poll_url}` at once."""
        call = calls.kubectl(cluster, args, namespace, timeout, session_id, correlation_id)
        answer: dict[str, Any] = self._do(call)
        if answer.get("status") in calls.OPERATION_WAITING and wait != 0:
            return self.kubectl_result(answer["operation_id"], wait)
        return answer

    def kubectl_async(
        self,
        cluster: str,
        *args: str,
        namespace: str | None = None,
        timeout: int = 10,
        session_id: str | None = None,
        correlation_id: str | None = None,
    ) -> dict[str, Any]:
        """Queue `kubectl ARGS...` on `cluster`: `{operation_id, status, poll_url}` at once
        (status pending, or awaiting_approval). `operation`, `wait_operation` and
        `kubectl_result` read what became of it."""
        call = calls.kubectl(cluster, args, namespace, timeout, session_id, correlation_id,
                             queued=True)  # fmt: skip
        result: dict[str, Any] = self._do(call)
        return result

    def operation(self, operation_id: str) -> dict[str, Any]:
        """An operation: `status` pending, awaiting_approval, completed (with `result`) or
        denied."""
        result: dict[str, Any] = self._do(calls.operation(operation_id))
        return result

    def wait_operation(
        self,
        operation_id: str,
        wait: float | None = calls.APPROVAL_WAIT,
        on_wait: Callable[[dict[str, Any]], object] | None = None,
    ) -> dict[str, Any]:
        """The operation once completed or denied, polled with a backoff for up to `wait`
        seconds (None: no limit); after that, as last read (still waiting). `on_wait(op)` is
        called before each pause."""
        poll = tenacity.Retrying(**calls.operation_poll(wait, on_wait))
        result: dict[str, Any] = poll(self.operation, operation_id)
        return result

    def kubectl_result(
        self,
        operation_id: str,
        wait: float | None = calls.APPROVAL_WAIT,
        on_wait: Callable[[dict[str, Any]], object] | None = None,
    ) -> dict[str, Any]:
        """What `kubectl` returns (or raises) for a queued command, waiting up to `wait`."""
        return calls.kubectl_outcome(self.wait_operation(operation_id, wait, on_wait), wait)

    def create_debug_session(
        self, cluster: str, ttl: int = 300, correlation_id: str | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = self._do(calls.create_debug_session(cluster, ttl, correlation_id))
        return result

    def get_debug_session(self, session_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._do(calls.get_debug_session(session_id))
        return result

    def end_debug_session(self, session_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._do(calls.end_debug_session(session_id))
        return result

    @contextmanager
    def debug_session(
        self, cluster: str, ttl: int = 300, correlation_id: str | None = None
    ) -> Iterator[DebugSession]:
        """A debug session on `cluster` (`ttl` 60-3600 s, renewed by each command), ended on
        leaving the block, also when the block raises (then a failure to end it is added to
        the block's exception as a note, not raised in its place)."""
        handle = DebugSession(self, self.create_debug_session(cluster, ttl, correlation_id))
        try:
            yield handle
        except BaseException as exc:
            try:
                handle.end()
            except Exception as failed:  # the block's exception is the one to see
                exc.add_note(f"and ending debug session {handle.id} failed: {failed}")
            raise
        handle.end()

    # -- legacy Cloud Run API --------------------------------------------------------------------

    def create_workspace(
        self, template: str, namespace: str, user: str, ttl_minutes: int | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = self._do(
            calls.create_workspace(template, namespace, user, ttl_minutes)
        )
        return result

    def _action(self, workspace_id: str, action: str, **params: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._do(calls.workspace_action(workspace_id, action, params))
        return result

    def execute_workspace(
        self, workspace_id: str, command: str, timeout: float = 120
    ) -> dict[str, Any]:
        return self._action(workspace_id, "execute", command=command, timeout=timeout)

    def run_python(self, workspace_id: str, code: str, timeout: float = 120) -> dict[str, Any]:
        return self._action(workspace_id, "runpython", code=code, timeout=timeout)

    def run_shell(self, workspace_id: str, command: str, timeout: float = 120) -> dict[str, Any]:
        return self._action(workspace_id, "runsh", command=command, timeout=timeout)

    def delete_workspace(self, workspace_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._do(calls.delete_workspace(workspace_id))
        return result

    @contextmanager
    def cloudrun_workspace_session(
        self, template: str, namespace: str, user: str, ttl_minutes: int | None = None
    ) -> Iterator[Session]:
        handle = Session(
            self, self.create_workspace(template, namespace, user, ttl_minutes), legacy=True
        )  # (deleted here as a workspace, not by the handle's `with`)
        try:
            yield handle
        finally:
            self.delete_workspace(handle.id)

    def health(self) -> dict[str, Any]:
        """The health report, healthy or not (an unhealthy server answers 503 with it)."""
        response = self._http.get(calls.health().path)
        return calls.health_report(response)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
