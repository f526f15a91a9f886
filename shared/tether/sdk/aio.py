"""Asynchronous client: `async with client.session(...) as s:` deletes the session on exit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import tenacity

from tether.sdk import calls
from tether.sdk.calls import Call


class AsyncSession:
    def __init__(self, client: AsyncClient, info: dict[str, Any]) -> None:
        self.client = client
        self.info = info
        self.id: str = info["id"]

    async def execute(self, command: str, timeout: float = 120) -> dict[str, Any]:
        return await self.client.execute_session(self.id, command, timeout)

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

    async def create_session(self, spec: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self._do(calls.create_session({**(spec or {}), **kw}))
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
        self, session_id: str, command: str, timeout: float = 120
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self._do(calls.execute_session(session_id, command, timeout))
        return result

    async def delete_session(self, session_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._do(calls.delete_session(session_id))
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

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
