"""Asynchronous client, the twin of `tether.sdk.client` call for call:
`async with client.session(...) as s:` deletes the session on exit;
`async with client.debug_session("cluster") as s:` ends the Kubently debug session on exit."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import inspect
import os
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine, Generator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, overload

import httpx
import tenacity
from httpx_sse import EventSource, ServerSentEvent

from tether import errors
from tether.sdk import calls
from tether.sdk.calls import Call, RetryPolicy
from tether.sdk.recordings import AsyncRecordings
from tether.sdk.types import CommandResult, FileInfo, ProcessInfo, SessionInfo, WrittenFile, parse


async def _called(returned: object) -> None:
    """A callback may be a coroutine function: what it returned is then awaited."""
    if inspect.isawaitable(returned):
        await returned


class AsyncSession:
    """A handle on one session (or legacy workspace), as `tether.sdk.client.Session`, awaited.
    `async with` deletes the session on leaving the block unless `keep`."""

    def __init__(
        self, client: AsyncClient, info: dict[str, Any], legacy: bool = False, keep: bool = True
    ) -> None:
        self.client = client
        self.data = info
        self.id: str = info["id"]
        self.legacy = legacy
        self.keep = keep
        self.files = AsyncFiles(self)
        self.recordings = AsyncRecordings(self)  # its terminal's recordings

    async def __aenter__(self) -> AsyncSession:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if self.keep:
            return
        try:
            await self.delete()
        except Exception as failed:  # the block's exception is the one to see
            if exc is None:
                raise
            exc.add_note(f"and deleting session {self.id} failed: {failed}")

    def __repr__(self) -> str:
        return f"AsyncSession({self.id!r})"

    # -- OnMemOS' calls (dict results) -------------------------------------------------------

    async def execute(self, command: str, timeout: float = 120, **options: Any) -> dict[str, Any]:
        """Runs `command`; `options` (env, cwd) are the unified API's."""
        if self.legacy:
            return await self.client.execute_workspace(self.id, command, timeout)
        return await self.client.execute_session(self.id, command, timeout, **options)

    async def run_python(self, code: str, timeout: float = 120) -> dict[str, Any]:
        return await self.client.run_python(self.id, code, timeout)

    async def refresh(self) -> dict[str, Any]:
        self.data = await self.client.get_session(self.id)
        return self.data

    async def delete(self) -> dict[str, Any]:
        if self.legacy:
            return await self.client.delete_workspace(self.id)
        return await self.client.delete_session(self.id)

    # -- typed calls -------------------------------------------------------------------------

    async def info(self) -> SessionInfo:
        return await self._session(calls.session(self.id))

    @overload
    async def run(
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
    async def run(
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
    ) -> AsyncBackgroundProcess: ...

    async def run(
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
    ) -> CommandResult | AsyncBackgroundProcess:
        """As `Session.run`; a callback may also be a coroutine function (awaited in turn)."""
        if background:
            started = await self.client._do(calls.start_process(self.id, cmd, envs, cwd))
            proc = AsyncBackgroundProcess(self, parse(ProcessInfo, started))
            if stdin is not None:
                await proc.send_stdin(stdin, eof=True)
            return proc
        output = calls.Output(on_stdout, on_stderr)
        call = calls.exec_stream(self.id, cmd, timeout, envs, cwd, stdin)
        async for event in self.client._events(call):
            await _called(output.feed(event.event, event.data))
        return output.result()

    async def processes(self) -> list[ProcessInfo]:
        return calls.processes_of(await self.client._do(calls.processes(self.id)))

    async def get_url(self, port: int, *, public: bool = False, expires_in: int = 3600) -> str:
        if not public:
            return calls.port_url(str(self.client._http.base_url), self.id, port)
        answer = await self.client._do(calls.preview_url(self.id, port, expires_in))
        if not isinstance(answer, dict) or not isinstance(answer.get("url"), str):
            raise errors.TetherError("The server's answer has no preview url", code="BAD_ANSWER")
        return str(answer["url"])

    async def set_timeout(self, seconds: int) -> SessionInfo:
        return await self._session(calls.session_action(self.id, "extend", {"expires_in": seconds}))

    async def extend(self, minutes: int) -> SessionInfo:
        return await self._session(calls.session_action(self.id, "extend", {"minutes": minutes}))

    async def pause(self) -> SessionInfo:
        return await self._session(calls.session_action(self.id, "pause"))

    async def resume(self) -> SessionInfo:
        return await self._session(calls.session_action(self.id, "resume"))

    async def _session(self, call: Call) -> SessionInfo:
        self.data = await self.client._do(call)
        return parse(SessionInfo, self.data)


class AsyncBackgroundProcess:
    """As `tether.sdk.client.BackgroundProcess`, awaited."""

    def __init__(self, session: AsyncSession, info: ProcessInfo) -> None:
        self.session = session
        self.pid = info.pid
        self.started = info

    def __repr__(self) -> str:
        return f"AsyncBackgroundProcess({self.pid}, {self.started.command!r})"

    async def _call(self, *action: str, body: dict[str, Any] | None = None) -> ProcessInfo:
        call = calls.process(self.session.id, self.pid, *action, body=body)
        return parse(ProcessInfo, await self.session.client._do(call))

    async def info(self) -> ProcessInfo:
        return await self._call()

    async def send_stdin(self, data: str, *, eof: bool = False) -> ProcessInfo:
        return await self._call("stdin", body={"data": data, "eof": eof})

    async def kill(self, signal: str = "TERM") -> ProcessInfo:
        return await self._call("kill", body={"signal": signal})

    async def wait(
        self,
        *,
        on_stdout: Callable[[str], object] | None = None,
        on_stderr: Callable[[str], object] | None = None,
    ) -> CommandResult:
        output = calls.Output(on_stdout, on_stderr)
        async for event in self.session.client._events(
            calls.process_output(self.session.id, self.pid)
        ):
            await _called(output.feed(event.event, event.data))
        return output.result()


async def _piece(
    section: Callable[[int, int], AsyncIterator[bytes]],
    at: int,
    size: int,
    digest: calls.PieceDigest,
    told: Callable[[int], None],
) -> AsyncIterator[bytes]:
    """One piece of an upload, hashed as it goes; each try of it starts again (and so does
    the progress it tells)."""
    digest.restart()
    async for chunk in section(at, size):
        digest.update(chunk)
        yield chunk
        at += len(chunk)
        told(at)


class AsyncFiles:
    """As `tether.sdk.client.Files`, awaited; local files are read and written on a worker
    thread, a MiB at a time."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _do(self, method: str, path: str, *rest: str, **params: Any) -> Any:
        call = calls.files(method, self.session.id, path, *rest, **params)
        return await self.session.client._do(call)

    async def read(self, path: str) -> bytes:
        call = calls.files("GET", self.session.id, path, "content")
        async with self.session.client._open(call) as response:
            return await response.aread()

    async def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return (await self.read(path)).decode(encoding)

    async def write(self, path: str, data: bytes | str) -> WrittenFile:
        raw = data.encode() if isinstance(data, str) else data

        async def section(at: int, size: int) -> AsyncIterator[bytes]:
            yield raw[at : at + size]

        return await self._store(path, len(raw), section)

    async def list(self, path: str = ".") -> builtins.list[FileInfo]:
        return calls.entries_of(await self._do("GET", path))

    async def stat(self, path: str) -> FileInfo:
        return parse(FileInfo, await self._do("GET", path, "stat"))

    async def exists(self, path: str) -> bool:
        try:
            await self.stat(path)
        except errors.NotFound:
            return False
        return True

    async def remove(self, path: str, recursive: bool = False) -> None:
        await self._do("DELETE", path, recursive=str(recursive).lower())

    async def mkdir(self, path: str) -> FileInfo:
        return parse(FileInfo, await self._do("POST", path, "mkdir"))

    async def upload(
        self,
        local_path: str | os.PathLike[str],
        remote_path: str,
        progress: calls.Progress | None = None,
    ) -> WrittenFile:
        local = Path(local_path)

        async def section(at: int, size: int) -> AsyncIterator[bytes]:
            with local.open("rb") as f:
                f.seek(at)
                while size > 0 and (
                    chunk := await asyncio.to_thread(f.read, min(calls.CHUNK, size))
                ):
                    size -= len(chunk)
                    yield chunk

        return await self._store(remote_path, local.stat().st_size, section, progress)

    async def _store(
        self,
        remote: str,
        size: int,
        section: Callable[[int, int], AsyncIterator[bytes]],
        progress: calls.Progress | None = None,
    ) -> WrittenFile:
        client, plan = self.session.client, calls.Upload(remote, size)

        def told(sent: int) -> None:
            calls.counted(sent, size, progress)

        try:
            for path, at, length in plan.pieces:
                digest = plan.digest()
                call = calls.file_upload(self.session.id, path, length)
                body = functools.partial(_piece, section, at, length, digest, told)
                plan.stored_piece(await client._do(call, content=body), digest)
            if not plan.in_parts:
                return plan.stored[0]
            return plan.joined(await self.session.run(plan.join(), timeout=900))
        except BaseException:
            if plan.in_parts:  # the pieces a failed upload left
                for piece in plan.stored:
                    with contextlib.suppress(Exception):
                        await self.remove(piece.path)
            raise

    async def download(
        self,
        remote_path: str,
        local_path: str | os.PathLike[str],
        progress: calls.Progress | None = None,
    ) -> Path:
        target = Path(local_path)
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
        call = calls.files("GET", self.session.id, remote_path, "content")
        try:
            async with self.session.client._open(call) as response:
                got, total = 0, calls.length_of(response)
                with partial.open("wb") as out:
                    async for chunk in response.aiter_bytes(calls.CHUNK):
                        await asyncio.to_thread(out.write, chunk)
                        got += len(chunk)
                        calls.counted(got, total, progress)
            calls.check_complete(got, total)
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
        return target


class _Creating:
    """What `AsyncClient.create` returns: `await` it for the session, or `async with` it to
    have the session deleted on leaving the block (unless `keep`)."""

    def __init__(self, made: Coroutine[Any, Any, AsyncSession]) -> None:
        self._made = made
        self._session: AsyncSession | None = None

    def __await__(self) -> Generator[Any, None, AsyncSession]:
        return self._made.__await__()

    async def __aenter__(self) -> AsyncSession:
        self._session = await self._made
        return self._session

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if self._session is not None:
            await self._session.__aexit__(kind, exc, tb)


class AsyncDebugSession:
    """A Kubently debug session on one cluster: its commands are counted in it and keep it
    alive (`info` is the session as last read)."""

    def __init__(self, client: AsyncClient, info: dict[str, Any]) -> None:
        self.client = client
        self.info = info
        self.id: str = info["session_id"]
        self.cluster: str = info["cluster_id"]

    async def kubectl(self, *args: str, **options: Any) -> dict[str, Any]:
        """`client.kubectl` on this session's cluster, in this session."""
        return await self.client.kubectl(self.cluster, *args, session_id=self.id, **options)

    async def kubectl_async(self, *args: str, **options: Any) -> dict[str, Any]:
        return await self.client.kubectl_async(self.cluster, *args, session_id=self.id, **options)

    async def refresh(self) -> dict[str, Any]:
        """The session now: `status` (active, idle, expired, ended), `command_count`..."""
        self.info = await self.client.get_debug_session(self.id)
        return self.info

    async def end(self) -> dict[str, Any]:
        """End it (ending an ended session changes nothing)."""
        return await self.client.end_debug_session(self.id)


class AsyncClient:
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8080",
        api_key: str | None = None,
        timeout: float = 120.0,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            transport=transport, **calls.client_options(base_url, api_key, timeout)
        )
        self.retry = retry or RetryPolicy()

    async def _do(
        self, call: Call, content: Callable[[], bytes | AsyncIterable[bytes]] | None = None
    ) -> Any:
        async for attempt in tenacity.AsyncRetrying(**self.retry.options(call)):
            with attempt:
                options = calls.request_options(call)
                if content is not None:
                    options["content"] = content()
                response = await self._http.request(call.method, call.path, **options)
                answer = calls.result(response)
        return answer

    @asynccontextmanager
    async def _open(self, call: Call) -> AsyncIterator[httpx.Response]:
        async for attempt in tenacity.AsyncRetrying(**self.retry.options(call)):
            with attempt:
                request = self._http.build_request(
                    call.method, call.path, **calls.request_options(call)
                )
                response = await self._http.send(request, stream=True)
                if not response.is_success:
                    await response.aread()
                    await response.aclose()
                    calls.raise_for(response)
        try:
            yield response
        finally:
            await response.aclose()

    async def _events(self, call: Call) -> AsyncIterator[ServerSentEvent]:
        async with self._open(call) as response:
            async for event in EventSource(response).aiter_sse():
                yield event

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
    ) -> _Creating:
        """As `Client.create`: `s = await client.create()`, or `async with client.create() as
        s:` (deleted on leaving the block unless `keep`)."""
        call = calls.new_session(template, name, namespace, user, ttl_minutes, metadata)
        return _Creating(self._create(call, keep, wait))

    async def _create(self, call: Call, keep: bool, wait: bool) -> AsyncSession:
        handle = AsyncSession(self, await self._do(call), keep=keep)
        if wait:
            try:
                calls.settled(await tenacity.AsyncRetrying(**calls.settle_poll())(handle.info))
            except BaseException as exc:
                if not keep:
                    try:
                        await handle.delete()
                    except Exception as failed:
                        exc.add_note(f"and deleting the session failed: {failed}")
                raise
        return handle

    async def connect(self, session_id: str, *, keep: bool = True) -> AsyncSession:
        return AsyncSession(self, await self._do(calls.session(session_id)), keep=keep)

    async def list(self, metadata: dict[str, str] | None = None) -> builtins.list[SessionInfo]:
        found: builtins.list[SessionInfo] = []
        cursor: str | None = None
        while True:
            answer = await self._do(calls.session_page(metadata, cursor))
            page, cursor = calls.sessions_of(answer)
            found += page
            if cursor is None:
                return found

    # -- unified API -----------------------------------------------------------------------------

    async def create_session(
        self, spec: dict[str, Any] | None = None, idempotency_key: str | None = None, **kw: Any
    ) -> dict[str, Any]:
        call = calls.create_session({**(spec or {}), **kw}, idempotency_key)
        result: dict[str, Any] = await self._do(call)
        return result

    async def get_session(self, session_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._do(calls.get_session(session_id))
        return result

    async def list_sessions(
        self, namespace: str | None = None, user: str | None = None
    ) -> builtins.list[dict[str, Any]]:
        body = await self._do(calls.list_sessions(namespace, user))
        result: builtins.list[dict[str, Any]] = body["sessions"]
        return result

    async def execute_session(
        self,
        session_id: str,
        command: str,
        timeout: float = 120,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
    ) -> dict[str, Any]:
        call = calls.execute_session(session_id, command, timeout, env, cwd)
        result: dict[str, Any] = await self._do(call)
        return result

    async def delete_session(self, session_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._do(calls.delete_session(session_id))
        return result

    async def connect_session(self, session_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._do(calls.connect_session(session_id))
        return result

    @asynccontextmanager
    async def session(
        self,
        template: str = "python",
        namespace: str = "default",
        user: str = "default",
        provider: str = "auto",
        ttl_minutes: int | None = None,
        long_lived: bool = False,
    ) -> AsyncIterator[AsyncSession]:
        spec = calls.session_spec(template, namespace, user, provider, ttl_minutes, long_lived)
        handle = AsyncSession(self, await self.create_session(spec))
        try:
            yield handle
        finally:
            await self.delete_session(handle.id)

    # -- Kubently ---------------------------------------------------------------------------------

    async def clusters(self) -> builtins.list[str]:
        """The ids of the clusters commands can be sent to."""
        result: builtins.list[str] = (await self._do(calls.clusters()))["clusters"]
        return result

    async def cluster(self, cluster_id: str) -> dict[str, Any]:
        """One cluster: `connected`, `lastSeen`, `agent` (tether or executor)..."""
        result: dict[str, Any] = await self._do(calls.cluster(cluster_id))
        return result

    async def kubectl(
        self,
        cluster: str,
        *args: str,
        namespace: str | None = None,
        timeout: int = 10,
        session_id: str | None = None,
        correlation_id: str | None = None,
        wait: float | None = calls.APPROVAL_WAIT,
    ) -> dict[str, Any]:
        """Run `kubectl ARGS...` on `cluster` and return its result; as `Client.kubectl`."""
        call = calls.kubectl(cluster, args, namespace, timeout, session_id, correlation_id)
        answer: dict[str, Any] = await self._do(call)
        if answer.get("status") in calls.OPERATION_WAITING and wait != 0:
            return await self.kubectl_result(answer["operation_id"], wait)
        return answer

    async def kubectl_async(
        self,
        cluster: str,
        *args: str,
        namespace: str | None = None,
        timeout: int = 10,
        session_id: str | None = None,
        correlation_id: str | None = None,
    ) -> dict[str, Any]:
        """Queue `kubectl ARGS...` on `cluster`: `{operation_id, status, poll_url}` at once."""
        call = calls.kubectl(cluster, args, namespace, timeout, session_id, correlation_id,
                             queued=True)  # fmt: skip
        result: dict[str, Any] = await self._do(call)
        return result

    async def operation(self, operation_id: str) -> dict[str, Any]:
        """An operation: `status` pending, awaiting_approval, completed (with `result`) or
        denied."""
        result: dict[str, Any] = await self._do(calls.operation(operation_id))
        return result

    async def wait_operation(
        self,
        operation_id: str,
        wait: float | None = calls.APPROVAL_WAIT,
        on_wait: Callable[[dict[str, Any]], object] | None = None,
    ) -> dict[str, Any]:
        """The operation once completed or denied, polled with a backoff for up to `wait`
        seconds (None: no limit); after that, as last read (still waiting)."""
        poll = tenacity.AsyncRetrying(**calls.operation_poll(wait, on_wait))
        result: dict[str, Any] = await poll(self.operation, operation_id)
        return result

    async def kubectl_result(
        self,
        operation_id: str,
        wait: float | None = calls.APPROVAL_WAIT,
        on_wait: Callable[[dict[str, Any]], object] | None = None,
    ) -> dict[str, Any]:
        """What `kubectl` returns (or raises) for a queued command, waiting up to `wait`."""
        op = await self.wait_operation(operation_id, wait, on_wait)
        return calls.kubectl_outcome(op, wait)

    async def create_debug_session(
        self, cluster: str, ttl: int = 300, correlation_id: str | None = None
    ) -> dict[str, Any]:
        call = calls.create_debug_session(cluster, ttl, correlation_id)
        result: dict[str, Any] = await self._do(call)
        return result

    async def get_debug_session(self, session_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._do(calls.get_debug_session(session_id))
        return result

    async def end_debug_session(self, session_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._do(calls.end_debug_session(session_id))
        return result

    @asynccontextmanager
    async def debug_session(
        self, cluster: str, ttl: int = 300, correlation_id: str | None = None
    ) -> AsyncIterator[AsyncDebugSession]:
        """A debug session on `cluster`, ended on leaving the block; as `Client.debug_session`."""
        info = await self.create_debug_session(cluster, ttl, correlation_id)
        handle = AsyncDebugSession(self, info)
        try:
            yield handle
        except BaseException as exc:
            try:
                await handle.end()
            except Exception as failed:  # the block's exception is the one to see
                exc.add_note(f"and ending debug session {handle.id} failed: {failed}")
            raise
        await handle.end()

    # -- legacy Cloud Run API --------------------------------------------------------------------

    async def create_workspace(
        self, template: str, namespace: str, user: str, ttl_minutes: int | None = None
    ) -> dict[str, Any]:
        call = calls.create_workspace(template, namespace, user, ttl_minutes)
        result: dict[str, Any] = await self._do(call)
        return result

    async def _action(self, workspace_id: str, action: str, **params: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self._do(
            calls.workspace_action(workspace_id, action, params)
        )
        return result

    async def execute_workspace(
        self, workspace_id: str, command: str, timeout: float = 120
    ) -> dict[str, Any]:
        return await self._action(workspace_id, "execute", command=command, timeout=timeout)

    async def run_python(
        self, workspace_id: str, code: str, timeout: float = 120
    ) -> dict[str, Any]:
        return await self._action(workspace_id, "runpython", code=code, timeout=timeout)

    async def run_shell(
        self, workspace_id: str, command: str, timeout: float = 120
    ) -> dict[str, Any]:
        return await self._action(workspace_id, "runsh", command=command, timeout=timeout)

    async def delete_workspace(self, workspace_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._do(calls.delete_workspace(workspace_id))
        return result

    @asynccontextmanager
    async def cloudrun_workspace_session(
        self, template: str, namespace: str, user: str, ttl_minutes: int | None = None
    ) -> AsyncIterator[AsyncSession]:
        info = await self.create_workspace(template, namespace, user, ttl_minutes)
        handle = AsyncSession(self, info, legacy=True)
        try:
            yield handle
        finally:
            await self.delete_workspace(handle.id)

    async def health(self) -> dict[str, Any]:
        """The health report, healthy or not (an unhealthy server answers 503 with it)."""
        return calls.health_report(await self._http.get(calls.health().path))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
