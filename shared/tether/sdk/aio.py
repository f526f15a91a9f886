"""Asynchronous client, the twin of `tether.sdk.client` call for call:
`async with client.session(...) as s:` deletes the session on exit."""

from __future__ import annotations

from collections.abc import AsyncIterator
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
