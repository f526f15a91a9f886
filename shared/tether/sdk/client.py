"""Synchronous client. `with client.session(...) as s:` deletes the session on exit;
`with client.debug_session("cluster") as s:` ends the Kubently debug session on exit."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import tenacity

from tether.sdk import calls
from tether.sdk.calls import Call


class Session:
    """A handle on one session (or legacy workspace) that runs commands in it."""

    def __init__(self, client: Client, info: dict[str, Any], legacy: bool = False) -> None:
        self.client = client
        self.info = info
        self.id: str = info["id"]
        self.legacy = legacy

    def execute(self, command: str, timeout: float = 120, **options: Any) -> dict[str, Any]:
        """Runs `command`; `options` (env, cwd) are the unified API's."""
        if self.legacy:
            return self.client.execute_workspace(self.id, command, timeout)
        return self.client.execute_session(self.id, command, timeout, **options)

    def run_python(self, code: str, timeout: float = 120) -> dict[str, Any]:
        return self.client.run_python(self.id, code, timeout)

    def refresh(self) -> dict[str, Any]:
        self.info = self.client.get_session(self.id)
        return self.info

    def delete(self) -> dict[str, Any]:
        return self.client.delete_session(self.id)


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
    ) -> None:
        self._http = httpx.Client(
            transport=transport, **calls.client_options(base_url, api_key, timeout)
        )

    def _do(self, call: Call) -> Any:
        for attempt in tenacity.Retrying(**calls.retry_policy(call)):
            with attempt:
                response = self._http.request(call.method, call.path, **calls.request_options(call))
        return calls.result(response)

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
    ) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._do(calls.list_sessions(namespace, user))["sessions"]
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

    def clusters(self) -> list[str]:
        """The ids of the clusters commands can be sent to."""
        result: list[str] = self._do(calls.clusters())["clusters"]
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
        )
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
