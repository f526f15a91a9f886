"""Kubently's use cases: debug sessions on a cluster, kubectl runs (sync, async, and held at
the approval gate), and the audit trail those runs are."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tether.core import kubectl_policy
from tether.core.models import (
    FINAL_RUN_STATES,
    ApprovalRules,
    Command,
    CommandType,
    DebugSession,
    DebugStatus,
    KubectlRun,
    Principal,
    RunState,
    utcnow,
)
from tether.core.ports import Filter, Store
from tether.errors import InvalidTransition, NotFound, Unavailable, Unprocessable
from tether.service.clusters import Clusters
from tether.service.commands import Commands
from tether.service.repo import Repo

SESSION_KIND = "debug_sessions"
RUN_KIND = "kubectl_runs"
RULES_KIND, RULES_ID = "kubently_policy", "approvals"
TTL_DEFAULT, TTL_MIN, TTL_MAX = 300, 60, 3600
IDLE_AFTER = 60.0  # seconds without a command before a session shows as idle
OUTPUT_CAP = 256 * 1024  # bytes of kubectl output kept (a Firestore document holds 1 MiB)
# A caller waits a command's timeout and this much more for the agent's answer. The agent stops
# kubectl this much before the timeout (`tether.agent.kubectl`), so the answer comes within the
# timeout the caller asked for: clients time their own requests to it (Kubently's A2A agent
# asks 30 s and gives up at 30 s).
ANSWER_MARGIN = 0.5
AUDIT_PAGE_MAX = 1000


@dataclass(frozen=True)
class RunRequest:
    """A kubectl command as a Kubently client asks for it (the document's form, or the real
    CLI's: no `command_type`, the verb first in `args`)."""

    cluster_id: str
    args: Sequence[str]
    command_type: str | None = None
    namespace: str = "default"
    timeout: float = 10.0
    session_id: str | None = None
    correlation_id: str | None = None
    service_identity: str | None = None


def _id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def settled(run: KubectlRun, command: Command) -> KubectlRun:
    """`run` with its command's result. A streaming command (`logs -f`) is meant to run until
    its timeout: there, reaching it is success, with the output so far; so is output cut at
    the cap (the agent stops kubectl there)."""
    result = command.result or {}
    run.command_id = command.id
    run.output = result.get("output")
    run.error = result.get("error") or command.error
    run.exit_code = result.get("exit_code")
    run.truncated = bool(result.get("truncated"))
    run.execution_time_ms = result.get("execution_time_ms")
    run.completed_at = command.updated_at
    follows = bool(command.payload.get("follows"))
    if result.get("timed_out") and not follows:
        run.state = RunState.TIMEOUT
    elif command.state.value == "succeeded" and (
        run.exit_code == 0 or result.get("timed_out") or run.truncated  # stopped by us
    ):
        run.state = RunState.SUCCESS
    else:
        run.state = RunState.FAILURE
    return run


@dataclass
class Debug:
    store: Store
    commands: Commands
    clusters: Clusters
    audit_retention: timedelta = timedelta(days=30)
    session_retention: timedelta = timedelta(days=7)

    def __post_init__(self) -> None:
        self.sessions = Repo(self.store, SESSION_KIND, DebugSession)
        self.runs = Repo(self.store, RUN_KIND, KubectlRun)
        self.rules_repo = Repo(self.store, RULES_KIND, ApprovalRules)

    # -- sessions ----------------------------------------------------------------------------

    def open(
        self,
        principal: Principal,
        cluster_id: str,
        ttl_seconds: int = TTL_DEFAULT,
        user_id: str | None = None,
        correlation_id: str | None = None,
        service_identity: str | None = None,
    ) -> DebugSession:
        self.clusters.get(cluster_id)
        now = utcnow()
        session = DebugSession(
            id=_id("sess"),
            owner=principal.id,
            cluster_id=cluster_id,
            user_id=user_id,
            correlation_id=correlation_id,
            service_identity=service_identity,
            ttl_seconds=ttl_seconds,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_seconds),
            purge_at=now + timedelta(seconds=ttl_seconds) + self.session_retention,
        )
        return self.sessions.create(session.id, session)

    def session(self, principal: Principal, session_id: str) -> DebugSession:
        """The caller's session (an admin's: anyone's); another user's is NotFound."""
        session = self.sessions.find(session_id)
        if session is None or (session.owner != principal.id and not principal.is_admin):
            raise NotFound("Session not found", field="session_id", code="NOT_FOUND")
        return session

    def status(self, session: DebugSession, now: datetime | None = None) -> DebugStatus:
        return session.status(now or utcnow(), IDLE_AFTER)

    def end(self, principal: Principal, session_id: str) -> DebugSession:
        """End a session (ending an ended one changes nothing); it is deleted after the
        retention period."""
        found = self.session(principal, session_id)

        def close(s: DebugSession) -> DebugSession | None:
            if s.ended_at is not None:
                return None
            s.ended_at, s.open = utcnow(), False
            s.purge_at = s.ended_at + self.session_retention
            return s

        return self.sessions.mutate(found.id, close, start=found)

    def live_sessions(self) -> int:
        """Sessions not yet over (/health's `active_sessions`): a bounded count query."""
        return self.sessions.count([("open", "==", True), ("expires_at", ">", utcnow())])

    def _usable(self, principal: Principal, session_id: str, cluster_id: str) -> DebugSession:
        session = self.session(principal, session_id)
        status = self.status(session)
        if status in (DebugStatus.ENDED, DebugStatus.EXPIRED):
            raise InvalidTransition(f"Session {session_id} has {status.value}", field="session_id")
        if session.cluster_id != cluster_id:
            raise Unprocessable(
                f"Session {session_id} is on cluster '{session.cluster_id}'", field="cluster_id"
            )
        return session

    def _count(self, session: DebugSession) -> None:
        """A command in the session: counted, and the session kept alive its TTL from now."""

        def count(s: DebugSession) -> DebugSession:
            s.command_count += 1
            s.last_activity = utcnow()
            s.expires_at = max(s.expires_at, s.last_activity + timedelta(seconds=s.ttl_seconds))
            s.purge_at = s.expires_at + self.session_retention
            return s

        self.sessions.mutate(session.id, count, start=session)

    # -- kubectl runs ------------------------------------------------------------------------

    def execute(self, principal: Principal, request: RunRequest, wait: bool) -> KubectlRun:
        """Run a command on a cluster: with `wait`, until it is done (its timeout at most);
        without, it is queued and its run is returned at once. A command the approval rules
        hold waits for an admin either way (its run says `awaiting_approval`)."""
        cluster = self.clusters.get(request.cluster_id)
        session = None
        if request.session_id:
            session = self._usable(principal, request.session_id, request.cluster_id)
        now = utcnow()
        run = KubectlRun(
            id=_id("op"),
            owner=principal.id,
            username=principal.username,
            cluster_id=request.cluster_id,
            session_id=request.session_id,
            argv=list(request.args),
            correlation_id=request.correlation_id,
            service_identity=request.service_identity,
            timeout=request.timeout,
            created_at=now,
            expires_at=now + self.audit_retention,
        )
        verb = request.command_type
        if verb is None and request.args and not kubectl_policy.names_a_command(request.args[0]):
            verb = "get"  # Kubently's default: `{"args": ["pods"]}` is `get pods`
        try:
            command = kubectl_policy.parse(request.args, verb, request.namespace)
        except Unprocessable as exc:
            run.state, run.error, run.completed_at = RunState.FORBIDDEN, exc.message, now
            self.runs.create(run.id, run)  # refusals are in the audit trail too
            raise
        run.argv, run.verb, run.namespace = list(command.argv), command.verb, command.namespace
        # The policy's argv is canonical: `--all-namespaces` is in it exactly when it holds.
        everywhere = "--all-namespaces" in command.argv
        if self.rules().needs_approval(command.verb, command.namespace, everywhere):
            run.state = RunState.AWAITING_APPROVAL
        elif cluster.agent is not None and not cluster.online and cluster.token is None:
            raise Unavailable(f"Cluster '{cluster.id}' agent is offline", field="cluster_id")
        self.runs.create(run.id, run)
        if session is not None:
            self._count(session)
        if run.state is RunState.AWAITING_APPROVAL:
            return run
        return self._send(run, command.follows, wait)

    def _send(self, run: KubectlRun, follows: bool, wait: bool) -> KubectlRun:
        payload: dict[str, Any] = {"argv": run.argv, "timeout": run.timeout, "cap": OUTPUT_CAP,
                                   "follows": follows, "operation_id": run.id,
                                   "correlation_id": run.correlation_id}  # fmt: skip
        issued = self.commands.issue(
            run.cluster_id, CommandType.KUBECTL, run.session_id, payload, awaited=wait
        )
        if not wait:
            return run
        final = self.commands.wait(issued, run.timeout + ANSWER_MARGIN)
        if final.state.value not in ("succeeded", "failed"):
            return self._unanswered(run, issued.id)
        return self.apply_result(final, run) or run

    def _unanswered(self, run: KubectlRun, command_id: str) -> KubectlRun:
        """No answer in time: the agent is gone or behind. The run says so (a late result
        still replaces it)."""

        def expire(r: KubectlRun) -> KubectlRun | None:
            if r.state is not RunState.PENDING:
                return None
            r.state, r.command_id, r.completed_at = RunState.TIMEOUT, command_id, utcnow()
            r.error = "The cluster agent did not answer in time"
            return r

        try:
            return self.runs.mutate(run.id, expire, start=run)
        except NotFound:
            return run

    def apply_result(self, command: Command, known: KubectlRun | None = None) -> KubectlRun | None:
        """Record a KUBECTL command's final result in its run (from the events handler, and
        from the caller that waited for it). Idempotent; None for other commands."""
        run_id = command.payload.get("operation_id")
        if command.type is not CommandType.KUBECTL or not isinstance(run_id, str):
            return None

        def finish(r: KubectlRun) -> KubectlRun | None:
            # A timeout the caller gave up at is replaced by the result that came late.
            late = r.state is RunState.TIMEOUT and r.execution_time_ms is None
            return None if r.state in FINAL_RUN_STATES and not late else settled(r, command)

        try:
            return self.runs.mutate(run_id, finish, start=known)
        except NotFound:
            return None  # expired from the audit trail meanwhile

    def operation(self, principal: Principal, run_id: str) -> KubectlRun:
        run = self.runs.find(run_id)
        if run is None or (run.owner != principal.id and not principal.is_admin):
            raise NotFound("Operation not found", field="operation_id", code="NOT_FOUND")
        return run

    # -- the approval gate -------------------------------------------------------------------

    def rules(self) -> ApprovalRules:
        return self.rules_repo.find(RULES_ID) or ApprovalRules()

    def set_rules(
        self, admin: Principal, verbs: Sequence[str], namespaces: Sequence[str]
    ) -> ApprovalRules:
        for verb in verbs:
            if verb not in kubectl_policy.READ_VERBS:
                raise Unprocessable(f"'{verb}' is not a verb Kubently runs", field="verbs")
        rules = ApprovalRules(verbs=sorted(set(verbs)), namespaces=sorted(set(namespaces)),
                              updated_by=admin.username)  # fmt: skip
        current = self.rules_repo.find(RULES_ID)
        if current is None:
            return self.rules_repo.create(RULES_ID, rules)
        rules.version = current.version
        return self.rules_repo.save(RULES_ID, rules)

    def decide(self, admin: Principal, run_id: str, approve: bool) -> KubectlRun:
        """Approve (the command is sent now) or deny a run held at the gate; the audit trail
        keeps who decided. Deciding twice is a conflict."""

        def move(r: KubectlRun) -> KubectlRun:
            if r.state is not RunState.AWAITING_APPROVAL:
                raise InvalidTransition(
                    f"Operation {run_id} is {r.state.value}, not awaiting approval"
                )
            r.decided_by, r.decided_at = admin.username, utcnow()
            r.state = RunState.PENDING if approve else RunState.DENIED
            if not approve:
                r.completed_at = r.decided_at
            return r

        decided = self.runs.mutate(self.operation(admin, run_id).id, move)
        if approve:
            follows = kubectl_policy.parse(decided.argv).follows
            return self._send(decided, follows, wait=False)
        return decided

    def audit(
        self,
        owner: str | None,
        cluster_id: str | None = None,
        session_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[KubectlRun]:
        """The audit trail (`owner`'s runs; None: everyone's), newest first."""
        where: list[Filter] = [(name, "==", value) for name, value in
                               (("owner", owner), ("cluster_id", cluster_id),
                                ("session_id", session_id)) if value is not None]  # fmt: skip
        if since is not None:
            where.append(("created_at", ">=", since))
        if until is not None:
            where.append(("created_at", "<=", until))
        return self.runs.query(where, order_by="created_at", descending=True,
                               limit=min(limit, AUDIT_PAGE_MAX))  # fmt: skip

    def awaiting(self, limit: int = 100) -> list[KubectlRun]:
        return self.runs.query([("state", "==", RunState.AWAITING_APPROVAL.value)], limit=limit)
