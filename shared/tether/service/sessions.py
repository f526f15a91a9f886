"""Session use cases: create, read, list, execute, delete; apply agents' results."""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from tether.core.durations import parse_duration
from tether.core.lifecycle import (
    ACTIVE_SESSION_STATES,
    CommandState,
    SessionState,
    check_session_move,
)
from tether.core.models import (
    ActivitySource,
    Agent,
    Command,
    CommandType,
    ExecResult,
    Principal,
    Session,
    SessionRequest,
    Template,
    WorkspaceActivity,
    utcnow,
)
from tether.core.ports import Filter, Store
from tether.core.shell import command_line
from tether.errors import Conflict, Invalid, InvalidTransition, NotFound, Timeout, Unavailable
from tether.service import idempotency, pages
from tether.service.agents import Agents
from tether.service.commands import ID as COMMAND_ID
from tether.service.commands import Commands
from tether.service.pages import Page
from tether.service.repo import Repo
from tether.service.templates import Templates

log = logging.getLogger(__name__)

DEFAULT_TTL_MINUTES = 60
# Time an agent gets on top of a command's own timeout before we stop waiting for it.
AGENT_MARGIN = 15.0
ACTIVITY_RESOLUTION = timedelta(minutes=1)
MAX_LIFETIME = timedelta(days=7)  # the longest a session may be extended to live from now
# How long an idle check (`Sessions.hibernate_idle`) waits for its answer before it asks again.
IDLE_CHECK_WAIT = timedelta(minutes=2)
_UNSAFE = re.compile(r"[^a-z0-9-]+")


def start_command(session_id: str) -> str:
    """The id of a session's start command: there is one, however often it is issued."""
    return f"cmd-start-{session_id}"


def new_session_id(namespace: str, user: str, seed: str | None = None) -> str:
    """Readable, and unguessable by its 64 random bits (the time is for people, not for
    uniqueness). `seed`: the time and bits to use (a create under an Idempotency-Key names its
    session after the key's seed, so a run again finds the session the first run made)."""

    def part(s: str) -> str:
        return _UNSAFE.sub("-", s.lower()).strip("-")[:20] or "x"

    return f"ws-{part(namespace)}-{part(user)}-{seed or idempotency.new_seed()}"


def _leave_slot(s: Session) -> str | None:
    """The session's slot if its state no longer uses the agent's capacity: the caller frees
    it once the session is saved. (The session keeps naming it: a slot whose session is saved
    in such a state is free for the taking even before that, `Agents.reserve`.)"""
    return None if s.state in ACTIVE_SESSION_STATES else s.slot


def _idle_unasked(s: Session, now: datetime, early: bool = False) -> bool:
    """Due for an idle check (running, past its `idle_at`, or before it if `early`), and not
    asked about already."""
    if s.state is not SessionState.RUNNING or s.idle_at is None or (s.idle_at > now and not early):
        return False
    return s.idle_check_at is None or now - s.idle_check_at >= IDLE_CHECK_WAIT


def _ask_idle(s: Session, now: datetime, early: bool = False) -> Session | None:
    """Marks the idle check as asked (`Repo.mutate`); None: touched or asked meanwhile."""
    if not _idle_unasked(s, now, early):
        return None
    s.idle_check_at = now
    return s


# What a successful command moves its session from and to.
_AFTER: dict[CommandType, tuple[SessionState, SessionState]] = {
    CommandType.START_SESSION: (SessionState.PENDING, SessionState.RUNNING),
    CommandType.WAKE_SESSION: (SessionState.WAKING, SessionState.RUNNING),
    # A forced terminate is final already; its stop result changes nothing.
    CommandType.HIBERNATE_SESSION: (SessionState.HIBERNATING, SessionState.HIBERNATED),
    CommandType.STOP_SESSION: (SessionState.TERMINATING, SessionState.TERMINATED),
}


# Every state but terminated, and of those the ones a TTL still ends.
LIVE = [st.value for st in SessionState if st is not SessionState.TERMINATED]
ENDING = [st for st in LIVE if st != SessionState.TERMINATING.value]


@dataclass
class Sessions:
    store: Store
    commands: Commands
    agents: Agents
    templates: Templates
    retention: timedelta = timedelta(days=7)  # a terminated session is kept this long
    # How long before its TTL or idle timeout a session is warned, unless its create says.
    expiry_warning: timedelta = timedelta(minutes=5)

    def __post_init__(self) -> None:
        self.repo = Repo(self.store, "sessions", Session)

    # -- reads -------------------------------------------------------------------------------

    def get(self, principal: Principal, session_id: str, by_name: bool = False) -> Session:
        """The caller's session (any, for an admin). `by_name`: `session_id` may be its name
        instead (StreamSpace's clients address sessions by name); use the answer's id after."""
        session = self.repo.find(session_id)
        if session is None and by_name:
            session = self.named(principal, session_id)
        if session is None or not (principal.is_admin or session.owner == principal.id):
            # Another user's session is not found, too.
            raise NotFound("Session not found", code="SESSION_NOT_FOUND", id=session_id)
        return session

    def named(self, principal: Principal, name: str) -> Session | None:
        """The session called `name` among the caller's (everyone's, for an admin): one
        equality query, which single-field indexes serve."""
        where: list[tuple[str, str, object]] = [("name", "==", name)]
        if not principal.is_admin:
            where.append(("owner", "==", principal.id))
        found = self.repo.query(where, limit=1)  # type: ignore[arg-type]
        return found[0] if found else None

    def listed(
        self,
        principal: Principal,
        *,
        states: list[str] | None = None,
        include_terminated: bool = False,
        tags: list[str] | None = None,
        all_tags: list[str] | None = None,
        order_by: str = "created_at",
        descending: bool = False,
        limit: int = 100,
        offset: int = 0,
        cursor: str | None = None,
        counted: bool = True,
        **equal: str | None,
    ) -> Page[Session]:
        """A page of the caller's sessions (every session, for an admin) whose fields equal
        `equal`'s non-empty values, in `states` (else any live one, or any at all with
        `include_terminated`), carrying any of `tags` and all of `all_tags`; ordered by
        `order_by` then id, from `offset` or after `cursor`. One query and one count: the same
        cost however much history the store holds. Not `counted`: no count (the total is the
        page's). A store query holds one condition on tags: beyond it, `all_tags` are looked
        for in the page (which may then hold fewer than `limit`; the total does not know them)."""
        where: list[Filter] = [(k, "==", v) for k, v in equal.items() if v]
        if not principal.is_admin:
            where.append(("owner", "==", principal.id))
        if states is not None:
            where.append(("state", "in", states))
        elif not include_terminated:
            where.append(("state", "in", LIVE))
        wanted = list(all_tags or [])
        if tags:
            where.append(("tags", "contains", tags[0]) if len(tags) == 1 else
                         ("tags", "contains_any", tags))  # fmt: skip
        elif wanted:
            where.append(("tags", "contains", wanted.pop(0)))
        fixed = {name for name, op, _ in where if op == "=="}
        key = None if order_by in fixed else order_by  # one value: the order is by id
        after = pages.position(cursor) if cursor else None
        items = self.repo.query(where, key, descending, limit + 1, offset, after)  # one more:
        last = items[limit - 1] if len(items) > limit else None  # is there a page after?
        token = pages.cursor(getattr(last, key) if key else None, last.id) if last else None
        total = self.repo.count(where) if counted else len(items[:limit])
        found = [s for s in items[:limit] if all(tag in s.tags for tag in wanted)]
        return Page(found, total, token)

    # -- writes ------------------------------------------------------------------------------

    def amend(
        self,
        principal: Principal,
        session_id: str,
        ttl_minutes: int | None = None,
        retag: Callable[[list[str]], list[str]] | None = None,
        expires: Callable[[Session, datetime], datetime] | None = None,
    ) -> Session:
        """Give the caller's session a new TTL (counted from its creation, as at create), or
        the expiry `expires` makes of it and now (then it is not long-lived either), and tags
        made from its present ones, in one write. A session that has ended or expired is not
        changed (InvalidTransition)."""
        found = self.get(principal, session_id)
        if ttl_minutes is not None:

            def expires(s: Session, _: datetime) -> datetime:
                return s.created_at + timedelta(minutes=ttl_minutes)

        def change(s: Session) -> Session:
            now = utcnow()
            ended = s.state in (SessionState.TERMINATING, SessionState.TERMINATED)
            if ended or s.expired(now):
                shown = s.state.value if ended else "expired"
                raise InvalidTransition(
                    f"Session {session_id} is {shown}: it can no longer be changed",
                    code="SESSION_NOT_RUNNING",
                )
            if expires is not None:
                s.expires_at, s.long_lived = expires(s, now), False
            if retag is not None:
                s.tags = list(dict.fromkeys(retag(list(s.tags))))
            s.updated_at = now
            return s

        return self.repo.mutate(found.id, change, start=found)

    def extend(
        self,
        principal: Principal,
        session_id: str,
        more: timedelta | None = None,
        left: timedelta | None = None,
        longest: timedelta = MAX_LIFETIME,
    ) -> Session:
        """The caller's session given `more` time (added to its expiry; a long-lived one's is
        counted from now) or `left` to live from now; never more than `longest` from now
        (Invalid, naming the field). Counts as activity."""

        def expires(s: Session, now: datetime) -> datetime:
            until = (
                max(s.expires_at or now, now) + more
                if more is not None
                else now + (left or longest)
            )
            if until - now > longest:
                field = "minutes" if more is not None else "expires_in"
                hours = longest / timedelta(hours=1)
                raise Invalid(
                    f"{field}: the session would live more than {hours:g} hours from now",
                    field=field,
                )
            return until

        session = self.amend(principal, session_id, expires=expires)
        self.touch(session)
        return session

    def create(
        self,
        principal: Principal,
        req: SessionRequest,
        wait: float = 60.0,
        hibernated: bool = False,
    ) -> Session:
        """Record a session on an agent that can take it and start it (or, `hibernated`, keep it
        asleep until woken); waits up to `wait` seconds for it to leave pending."""
        template = self.templates.get(req.template)
        ranked = self.agents.candidates(req.provider, req.prefer)
        if req.idle_timeout:
            parse_duration(req.idle_timeout, "idle_timeout")
        now = utcnow()
        ttl = None if req.long_lived else (req.ttl_minutes or DEFAULT_TTL_MINUTES)
        session = Session(
            id="",
            owner=principal.id,
            template=template.name,
            platform=ranked[0].platform,
            agent_id=ranked[0].id,
            namespace=req.namespace,
            user=req.user,
            long_lived=req.long_lived,
            expires_at=now + timedelta(minutes=ttl) if ttl else None,
            resources=template.resources | req.resources,
            tags=req.tags,
            persistent_home=(
                template.persistent_home if req.persistent_home is None else req.persistent_home
            ),
            idle_timeout=req.idle_timeout or template.idle_timeout,
            vnc=template.vnc.enabled,
            state=SessionState.HIBERNATED if hibernated else SessionState.PENDING,
            message="" if hibernated else "Session provisioning in progress...",
            webhook_url=req.webhook_url,
            # Kept to sign its webhooks with; shown once, in the answer to this create.
            webhook_secret=f"whsec_{secrets.token_urlsafe(32)}" if req.webhook_url else None,
            warn_minutes=(
                self.expiry_warning / timedelta(minutes=1)
                if req.warn_minutes is None
                else req.warn_minutes
            ),
        )
        seed = idempotency.seed()
        for attempt in range(3):  # a collision of 64 random bits: astronomically rare
            session.id = new_session_id(req.namespace, req.user, seed)
            session.name = f"{req.user}-{template.name}-{session.id.rsplit('-', 1)[1][:8]}"
            if not hibernated:  # a hibernated workspace uses no agent's capacity
                self._place(session, ranked)
            try:
                self.repo.create(session.id, session)
                break
            except Conflict:
                self.agents.release(session.slot, session.id)
                earlier = self.repo.find(session.id) if seed else None
                if earlier is not None and earlier.owner == principal.id:
                    # This create's own, made by its first run (whose answer was a 5xx):
                    # finished, not made twice.
                    session = earlier
                    break
                if attempt == 2 or seed:
                    raise
        if session.state is SessionState.PENDING:  # its start command, if not issued already
            with contextlib.suppress(Conflict):
                self._command(session, CommandType.START_SESSION, template,
                              start_command(session.id))  # fmt: skip
        return self.wait_while(session.id, {SessionState.PENDING}, wait, known=session)

    def _place(self, session: Session, ranked: list[Agent]) -> None:
        """Onto the first agent of `ranked` with a slot free (the slot is the session's)."""
        for agent in ranked:
            slot = self.agents.reserve(agent, session.id)
            if slot is not None:
                session.slot, session.agent_id, session.platform = slot, agent.id, agent.platform
                return
        raise Unavailable(
            "Every agent that could serve this session is at capacity",
            code="AGENT_CAPACITY_EXCEEDED",
        )

    def _command(
        self,
        session: Session,
        kind: CommandType,
        template: Template | None = None,
        command_id: str | None = None,
    ) -> None:
        payload = {
            "name": session.name or session.id,
            "namespace": session.namespace,
            "user": session.user,
            "persistent_home": session.persistent_home,
        }
        if template is not None:  # start and wake carry everything needed to start afresh
            template_json = template.model_dump(mode="json", exclude={"version"})
            payload |= {"template": template_json, "resources": session.resources}
        self.commands.issue(session.agent_id, kind, session.id, payload, command_id=command_id)

    def start_unstarted(self, older_than: float, most: int = 500) -> int:
        """Issue the start command of each session pending for `older_than` seconds without
        one: its create recorded the session, then could not record the command (the store
        went away, the process died). Returns how many. Reads pending sessions only."""
        cutoff = utcnow() - timedelta(seconds=older_than)
        started = 0
        for session in self.repo.query([("state", "==", SessionState.PENDING.value)], limit=most):
            if session.created_at > cutoff or self.commands.repo.find(start_command(session.id)):
                continue
            template = self.templates.get(session.template)
            with contextlib.suppress(Conflict):  # another sweep issued it meanwhile
                self._command(session, CommandType.START_SESSION, template,
                              start_command(session.id))  # fmt: skip
                started += 1
        return started

    def wait_while(
        self,
        session_id: str,
        states: set[SessionState],
        timeout: float,
        known: Session | None = None,
    ) -> Session:
        """Wait until the session leaves `states` (or `timeout` passes); returns it. `known`:
        the caller's copy, just written (spares a read)."""
        deadline = time.monotonic() + timeout
        session = known or self.repo.get(session_id, "Session")
        while session.state in states and (remaining := deadline - time.monotonic()) > 0:
            changed = self.repo.watch(session_id, session.version, remaining)
            if changed is None:
                raise NotFound("Session not found")
            session = changed
        return session

    def usable(self, principal: Principal, session_id: str, by_name: bool = False) -> Session:
        session = self.get(principal, session_id, by_name)
        if session.expired(utcnow()):
            raise InvalidTransition(f"Session {session_id} has expired", code="SESSION_NOT_RUNNING")
        if session.state is not SessionState.RUNNING:
            raise InvalidTransition(
                f"Session {session_id} is {session.state.value}, not running",
                code="SESSION_NOT_RUNNING",
            )
        return session

    def execute(
        self,
        principal: Principal,
        session_id: str,
        command: str,
        timeout: float,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> ExecResult:
        """Runs `command` (with `env` added, in `cwd`) in the session's workspace."""
        session, payload = self._exec(principal, session_id, command, timeout, env, cwd)
        result = self._ask(session, CommandType.EXEC, payload, timeout + AGENT_MARGIN)
        return ExecResult.model_validate(result)

    def submit(
        self,
        principal: Principal,
        session_id: str,
        command: str,
        timeout: float,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> Command:
        """Starts `command` as `execute` does, without waiting: the command's record is the
        job (read it with `job` until it is final; it expires some minutes after)."""
        session, payload = self._exec(principal, session_id, command, timeout, env, cwd)
        self.agents.check_reachable(session.agent_id)
        return self.commands.issue(session.agent_id, CommandType.EXEC, session.id, payload)

    def _exec(
        self,
        principal: Principal,
        session_id: str,
        command: str,
        timeout: float,
        env: Mapping[str, str] | None,
        cwd: str | None,
    ) -> tuple[Session, dict[str, object]]:
        """The running session an exec goes to (touched: it is activity) and its payload."""
        line = command_line(command, env, cwd)
        session = self.usable(principal, session_id)
        self.touch(session, "exec")
        return session, {"command": line, "timeout": timeout}

    def job(self, principal: Principal, session_id: str, job_id: str) -> Command:
        """A command `submit` started in the caller's session."""
        session = self.get(principal, session_id)
        # Only a command's own form of id is looked up (the store's ids have rules of their own).
        command = self.commands.repo.find(job_id) if COMMAND_ID.fullmatch(job_id) else None
        if (
            command is None
            or command.session_id != session.id
            or command.type is not CommandType.EXEC
        ):
            raise NotFound("Job not found", code="JOB_NOT_FOUND")
        return command

    def _ask(
        self, session: Session, kind: CommandType, payload: dict[str, object], wait: float
    ) -> dict[str, object]:
        """Send the session's agent a command and wait for its result."""
        self.agents.check_reachable(session.agent_id)
        issued = self.commands.issue(session.agent_id, kind, session.id, payload, awaited=True)
        done = self.commands.wait(issued, wait)
        if done.state is CommandState.SUCCEEDED:
            return done.result or {}
        if done.state is CommandState.FAILED:
            raise Unavailable(f"Command could not run: {done.error or 'agent error'}")
        raise Timeout(f"Agent {session.agent_id} did not answer within {wait:g}s")

    def delete(self, principal: Principal, session_id: str, wait: float = 30.0) -> Session:
        session = self.get(principal, session_id)
        if session.state is SessionState.TERMINATED:
            return session
        ending = self.terminate(session_id, "Session deleted", start=session)
        return self.wait_while(session_id, {SessionState.TERMINATING}, wait, known=ending)

    def terminate(self, session_id: str, message: str, start: Session | None = None) -> Session:
        """Move to terminating and tell the agent to stop the workspace (idempotent). `start`:
        the session as the caller just read it (spares a read)."""
        moved = self._move(
            session_id, SessionState.TERMINATING, message, done={SessionState.TERMINATED},
            start=start,
        )  # fmt: skip
        if moved is None:
            return self.repo.get(session_id, "Session")
        self._command(moved, CommandType.STOP_SESSION)
        return moved

    def _move(
        self,
        session_id: str,
        target: SessionState,
        message: str,
        done: set[SessionState] | None = None,
        slot: str | None = None,
        start: Session | None = None,
    ) -> Session | None:
        """Move to `target` (checked against the table); None when it was there already (or
        in one of the `done` states), so only the caller that moved it acts on the move. A
        session that stops using its agent's capacity gives its slot back; `slot` is one it
        takes."""
        moved = False
        freed: list[str | None] = []

        def move(s: Session) -> Session | None:
            nonlocal moved
            moved = False  # a retry after a lost race decides afresh
            if s.state is target or s.state in (done or ()):
                return None
            check_session_move(s.state, target)
            s.state, s.message, s.updated_at = target, message, utcnow()
            self._retain(s)
            freed[:] = [_leave_slot(s)]
            if slot is not None:
                s.slot = slot
            moved = True
            return s

        after = self.repo.mutate(session_id, move, start=start)
        if moved:
            self.agents.release(freed[0] if freed else None, session_id)
        return after if moved else None

    def hibernate(self, principal: Principal, session_id: str, wait: float = 30.0) -> Session:
        """Stop the workspace's processes, keeping its home (when persistent_home)."""
        self.get(principal, session_id)
        session = self._move(session_id, SessionState.HIBERNATING, "Hibernating...")
        if session is not None:
            self._command(session, CommandType.HIBERNATE_SESSION)
        return self.wait_while(session_id, {SessionState.HIBERNATING}, wait)

    def wake(self, principal: Principal, session_id: str, wait: float = 60.0) -> Session:
        """Back to running, on its agent, which must have a slot free."""
        current = self.get(principal, session_id)
        slot = None
        if current.state is SessionState.HIBERNATED:
            agent = self.agents.repo.get(current.agent_id, "Agent")
            slot = self.agents.reserve(agent, session_id)
            if slot is None:
                raise Unavailable(
                    f"Agent {agent.id} is at capacity", code="AGENT_CAPACITY_EXCEEDED"
                )
        session = self._move(session_id, SessionState.WAKING, "Waking...", slot=slot)
        if session is None:  # woken already by another call: the slot is not needed
            self.agents.release(slot, session_id)
        else:
            self._command(session, CommandType.WAKE_SESSION, self.templates.get(current.template))
        return self.wait_while(session_id, {SessionState.WAKING}, wait)

    def force_terminate(self, session_id: str) -> Session:
        """Terminated at once (admin, or delete with force): the agent frees it behind."""
        session = self._move(session_id, SessionState.TERMINATED, "Force terminated")
        if session is None:
            return self.repo.get(session_id, "Session")
        self._command(session, CommandType.STOP_SESSION)
        return session

    def logs(self, principal: Principal, session_id: str, tail: int) -> list[str]:
        session = self.get(principal, session_id)
        result = self._ask(session, CommandType.GET_LOGS, {"tail": tail}, AGENT_MARGIN)
        lines: list[str] = result.get("lines", [])  # type: ignore[assignment]
        return lines

    def touch(self, session: Session, source: ActivitySource = "api") -> None:
        """Record activity (for idle_timeout) and what it was: at most
        once a minute, and at least four times within the session's idle timeout, so a short
        timeout still sees a busy session."""
        now = utcnow()
        resolution = ACTIVITY_RESOLUTION
        if session.idle_timeout:
            resolution = min(resolution, parse_duration(session.idle_timeout) / 4)
        if now - session.last_activity < resolution:
            return

        def seen(s: Session) -> Session:
            s.last_activity, s.last_activity_source = now, source
            return s

        with contextlib.suppress(Conflict, NotFound):
            self.repo.mutate(session.id, seen, attempts=2)

    def store_idle_times(self) -> int:
        """Running sessions saved before `idle_at` was stored get it now (a start-up step: it
        reads the running sessions once); returns how many."""
        stored = 0
        for doc in self.store.query("sessions", [("state", "==", SessionState.RUNNING.value)]):
            if "idle_at" not in doc.data and doc.data.get("idle_timeout"):
                with contextlib.suppress(Conflict, NotFound):
                    self.repo.mutate(doc.id, lambda s: s)  # saved again: with its idle_at
                    stored += 1
        return stored

    def hibernate_idle(self) -> list[str]:
        """Ask about running sessions idle for longer than their idle_timeout, as far as the
        control plane saw: those the store finds due (`Session.idle_at`), not every running
        one. Each one's agent asks its workspace (`CHECK_IDLE`), and the answer hibernates it
        or records the work found (`idle_checked`). Returns the ids asked about."""
        now = utcnow()
        return [s.id for s in self.repo.query([("idle_at", "<=", now)]) if self.ask_idle(s, now)]

    def ask_idle(self, s: Session, now: datetime, early: bool = False) -> bool:
        """Asks the session's workspace whether it has been at work (`CHECK_IDLE`), unless it
        is not due (`early`: before its idle_at, as its warning is) or asked already. True if
        this call asked."""
        if not _idle_unasked(s, now, early):
            return False
        with contextlib.suppress(Conflict, NotFound):
            ask = functools.partial(_ask_idle, now=now, early=early)
            after = self.repo.mutate(s.id, ask, start=s)
            if after.idle_check_at == now:  # this call asks (no other one did)
                self.commands.issue(after.agent_id, CommandType.CHECK_IDLE, s.id, {})
                return True
        return False

    def idle_checked(self, command: Command) -> None:
        """Applies a `CHECK_IDLE`'s answer: a workspace busy (an exec or a process running) is
        active now; one whose last work came after the last activity recorded was active then;
        either moves `idle_at` on and shows what kept it. A session still due after that is
        hibernated, as is one whose workspace could not say (a failed check included).
        Idempotent: a session no longer running, or not asked, is left alone."""
        if command.session_id is None:
            return
        result = command.result if command.state is CommandState.SUCCEEDED else None
        try:
            found = WorkspaceActivity.model_validate((result or {}).get("activity") or {})
        except ValueError:  # the workspace's words: nonsense says nothing
            found = WorkspaceActivity()
        now = utcnow()
        seen: tuple[datetime, ActivitySource] | None = None
        if found.busy:
            seen = (now, "exec" if found.running.execs else "process")
        elif found.last_activity_at is not None and found.last_activity_source is not None:
            seen = (min(found.last_activity_at, now), found.last_activity_source)  # no future
        answered = False

        def answer(s: Session) -> Session | None:
            nonlocal answered
            answered = s.state is SessionState.RUNNING and s.idle_check_at is not None
            if not answered:
                return None
            s.idle_check_at = None
            if seen is not None and seen[0] > s.last_activity:
                s.last_activity, s.last_activity_source = seen
            return s

        with contextlib.suppress(Conflict, NotFound):
            after = self.repo.mutate(command.session_id, answer)
            if answered and after.idle_at is not None and after.idle_at <= now:
                message = "Hibernated after idle timeout"
                moved = self._move(after.id, SessionState.HIBERNATING, message, start=after)
                if moved is not None:
                    self._command(moved, CommandType.HIBERNATE_SESSION)

    # -- results from agents -----------------------------------------------------------------

    def apply_result(self, command: Command) -> None:
        """Move the command's session on from a final result. Idempotent: applying the same
        result twice, or one the session has moved past, changes nothing."""
        if command.session_id is None or command.type not in _AFTER:
            return
        expected, target = _AFTER[command.type]
        ok = command.state.value == "succeeded"
        result = command.result or {}

        freed: list[str | None] = []

        def move(s: Session) -> Session | None:
            if s.state is not expected:
                return None
            s.updated_at = utcnow()
            if ok:
                s.state = target
                s.message = ""
                self._retain(s)
                if target is SessionState.RUNNING:
                    s.started_at = s.last_activity = utcnow()
                if "url" in result:
                    s.url = result["url"]
                s.details.update(result.get("details") or {})
            else:
                s.state = SessionState.FAILED
                s.message = command.error or "agent reported a failure"
            freed[:] = [_leave_slot(s)]
            return s

        if self.repo.find(command.session_id) is None:
            return
        self.repo.mutate(command.session_id, move)
        if freed:
            self.agents.release(freed[0], command.session_id)

    def _retain(self, s: Session) -> None:
        if s.state is SessionState.TERMINATED:
            s.purge_at = s.updated_at + self.retention

    def _due(self) -> list[Session]:
        return self.repo.query([("state", "in", ENDING), ("expires_at", "<=", utcnow())])

    def overdue(self, principal: Principal) -> list[Session]:
        """The caller's live sessions past their TTL that the sweeper has yet to end (no more
        than a sweep's interval of them), oldest first."""
        mine = [s for s in self._due() if principal.is_admin or s.owner == principal.id]
        return sorted(mine, key=lambda s: (s.created_at, s.id))

    def expire(self) -> list[str]:
        """Terminate every session whose TTL has passed; returns their ids. Reads only those
        due (ended sessions keep their `expires_at`, and would pile up here otherwise)."""
        ended = []
        for session in self._due():
            self.terminate(session.id, "Session expired")
            ended.append(session.id)
        return ended
