"""Asynchronous client, the twin of `tether.sdk.client` call for call:
`async with client.session(...) as s:` deletes the session on exit;
`async with client.debug_session("cluster") as s:` ends the Kubently debug session on exit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import tenacity

from tether.sdk import calls
from tether.sdk.calls import Call


class AsyncSession:
    """A handle on one session (or legacy workspace) that runs commands in it."""

    def __init__(self, client: AsyncClient, info: dict[str, Any], legacy: bool = False) -> None:
        self.client = client
        self.info = info
        self.id: str = info["id"]
        self.legacy = legacy

    async def execute(self, command: str, timeout: float = 120, **options: Any) -> dict[str, Any]:
        """Runs `command`; `options` (env, cwd) are the unified API's."""
        if self.legacy:
            return await self.client.execute_workspace(self.id, command, timeout)
        return await self.client.execute_session(self.id, command, timeout, **options)

    async def run_python(self, code: str, timeout: float = 120) -> dict[str, Any]:
        return await self.client.run_python(self.id, code, timeout)

    async def refresh(self) -> dict[str, Any]:
        self.info = await self.client.get_session(self.id)
        return self.info

    async def delete(self) -> dict[str, Any]:
        return await self.client.delete_session(self.id)


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
    ) -> None:
        self._http = httpx.AsyncClient(
            transport=transport, **calls.client_options(base_url, api_key, timeout)
        )

    async def _do(self, call: Call) -> Any:
        async for attempt in tenacity.AsyncRetrying(**calls.retry_policy(call)):
            with attempt:
                options = calls.request_options(call)
                response = await self._http.request(call.method, call.path, **options)
        return calls.result(response)

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
    ) -> list[dict[str, Any]]:
        body = await self._do(calls.list_sessions(namespace, user))
        result: list[dict[str, Any]] = body["sessions"]
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

    async def clusters(self) -> list[str]:
        """The ids of the clusters commands can be sent to."""
        result: list[str] = (await self._do(calls.clusters()))["clusters"]
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
