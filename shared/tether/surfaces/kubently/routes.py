"""Kubently's routes: debug sessions, kubectl (sync, async, approval), clusters, the admin
endpoints of its CLI, and the audit trail. Clients authenticate with `X-API-Key` (the real
clients) or `Authorization: Bearer` (the document); answers carry `X-API-Version`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from werkzeug.wrappers import Request, Response

from tether import bootstrap, errors
from tether.core.models import DebugSession, KubectlRun, Principal, RunState, utcnow
from tether.service.debug import RunRequest
from tether.surfaces import openapi
from tether.surfaces.http import Router, client_address, iso, json_response, proxy_matcher
from tether.surfaces.http import caller as who
from tether.surfaces.kubently import models as m
from tether.surfaces.shapes import kubently as render_error

VERSION = "1.0.0"
_WRITES_NO_BODY = 204


def admin(request: Request) -> Principal:
    principal = who(request)
    if not principal.is_admin:
        raise errors.Forbidden("This requires an admin's key")
    return principal


router = Router(render_error, owner=lambda request: who(request).id)


def _limited(request: Request) -> list[tuple[str, int]]:
    """The rate limits a request counts against: Kubently's 100 a minute per key, 10 session
    creates per key, and 50 commands a minute per cluster (whoever sends them)."""
    limits = bootstrap.services().settings.rate_limits
    try:
        principal = who(request)
        subject = f"key:{principal.key_id or principal.id}"
    except errors.TetherError:
        trusted = proxy_matcher(bootstrap.services().settings.trusted_proxies)
        subject = f"addr:{client_address(request, trusted)}"
    counted = [(f"kubently:api:{subject}", limits["api"])]
    if request.method == "POST" and request.path.rstrip("/") == "/debug/session":
        counted.append((f"kubently:create:{subject}", limits["create"]))
    if request.method == "POST" and request.path.rstrip("/").startswith("/debug/execute"):
        cluster = request.get_json(silent=True, cache=True)
        if isinstance(cluster, dict) and isinstance(cluster.get("cluster_id"), str):
            counted.append((f"kubently:commands:{cluster['cluster_id'][:100]}", limits["commands"]))
    return counted


def handle(request: Request) -> Response:
    """Route, with Kubently's rate limits (the tightest one's headers on every answer)."""
    services = bootstrap.services()
    try:
        quotas = [services.limits.hit(key, limit) for key, limit in _limited(request)]
    except errors.TetherError as exc:  # the store is away: 503, as the call itself would be
        return router.refusal(exc)
    refused = next((q for q in quotas if not q.allowed), None)
    if refused is not None:
        reset = datetime.fromtimestamp(refused.reset, UTC)
        error = errors.RateLimited("Rate limit exceeded", code="RATE_LIMITED",
                                   limit=refused.limit, reset_at=iso(reset))  # fmt: skip
        response = render_error(error, 429)
        response.headers["Retry-After"] = str(refused.retry_after)
    else:
        response = router(request)
    response.headers.update(min(quotas, key=lambda q: q.remaining).headers())
    response.headers["X-API-Version"] = VERSION
    return response


# -- debug sessions ---------------------------------------------------------------------------


def session_out(session: DebugSession) -> m.SessionOut:
    return m.SessionOut(
        session_id=session.id,
        cluster_id=session.cluster_id,
        status=bootstrap.services().debug.status(session).value,
        created_at=iso(session.created_at) or "",
        expires_at=iso(session.expires_at) or "",
        ttl_seconds=session.ttl_seconds,
        last_activity=iso(session.last_activity),
        command_count=session.command_count,
        user_id=session.user_id,
        correlation_id=session.correlation_id,
        service_identity=session.service_identity,
    )


@router.route("/debug/session", ["POST"], body=m.CreateSession, answers={201: m.SessionOut},
              errors=(400, 401, 404, 429), idempotent=True)  # fmt: skip
def create_session(request: Request, body: m.CreateSession) -> Response:
    """Open a debug session on a cluster (TTL 60-3600 s, default 300)."""
    session = bootstrap.services().debug.open(
        who(request),
        body.cluster_id,
        body.ttl_seconds or 300,
        user_id=body.user_id,
        correlation_id=request.headers.get("X-Correlation-ID") or body.correlation_id,
        service_identity=request.headers.get("X-Service-Identity") or body.service_identity,
    )
    return json_response(session_out(session), 201)


@router.route("/debug/session/<session_id>", ["GET"], answers={200: m.SessionOut}, errors=(404,))
def get_session(request: Request, session_id: str) -> Response:
    """A session: its status, command count and last activity."""
    return json_response(session_out(bootstrap.services().debug.session(who(request), session_id)))


@router.route("/debug/session/<session_id>", ["DELETE"], answers={200: m.Ended, 204: None},
              errors=(404,))  # fmt: skip
def end_session(request: Request, session_id: str) -> Response:
    """End a session: 200 with a body for a client that asks for JSON (the document), else
    204 (the real server)."""
    bootstrap.services().debug.end(who(request), session_id)
    if "application/json" in request.headers.get("Accept", ""):
        return json_response(m.Ended(message="Session ended successfully", session_id=session_id))
    return Response(status=_WRITES_NO_BODY)


# -- kubectl ----------------------------------------------------------------------------------


def _request(request: Request, body: m.Execute) -> RunRequest:
    return RunRequest(
        cluster_id=body.cluster_id,
        args=[*body.args, *(body.extra_args or [])],
        command_type=body.command_type,
        namespace=body.namespace or "default",
        timeout=float(body.timeout_seconds or 10),
        session_id=body.session_id,
        correlation_id=request.headers.get("X-Correlation-ID") or body.correlation_id,
        service_identity=request.headers.get("X-Service-Identity"),
    )


def command_out(run: KubectlRun) -> m.CommandOut:
    return m.CommandOut(
        command_id=run.command_id or run.id,
        operation_id=run.id,
        session_id=run.session_id,
        cluster_id=run.cluster_id,
        status=run.state.value if run.state is not RunState.FORBIDDEN else "failure",  # type: ignore[arg-type]
        success=run.state is RunState.SUCCESS,
        correlation_id=run.correlation_id,
        output=run.output,
        error=run.error,
        exit_code=run.exit_code,
        truncated=run.truncated,
        execution_time_ms=run.execution_time_ms,
        executed_at=iso(run.completed_at),
    )


def accepted(run: KubectlRun) -> Response:
    status = "awaiting_approval" if run.state is RunState.AWAITING_APPROVAL else "pending"
    body = m.Accepted(operation_id=run.id, status=status, poll_url=f"/debug/operations/{run.id}")
    return json_response(body, 202, {"Location": body.poll_url})


@router.route("/debug/execute", ["POST"], body=m.Execute,
              answers={200: m.CommandOut, 202: m.Accepted},
              errors=(400, 401, 404, 408, 422, 429))  # fmt: skip
def execute(request: Request, body: m.Execute) -> Response:
    """Run a read-only kubectl command and wait for it (its timeout, 1-30 s). A command the
    approval rules hold answers 202, as an async one does."""
    run = bootstrap.services().debug.execute(who(request), _request(request, body), wait=True)
    if run.state is RunState.AWAITING_APPROVAL:
        return accepted(run)
    if run.state is RunState.TIMEOUT:
        raise errors.Timeout(
            run.error or f"Command timed out after {run.timeout:g} s",
            code="TIMEOUT", command_id=run.command_id or run.id, operation_id=run.id,
            output=run.output,
        )  # fmt: skip
    return json_response(command_out(run))


@router.route("/debug/execute/async", ["POST"], body=m.Execute, answers={202: m.Accepted},
              errors=(400, 401, 404, 422, 429))  # fmt: skip
def execute_async(request: Request, body: m.Execute) -> Response:
    """Queue a command; poll its operation for the result."""
    run = bootstrap.services().debug.execute(who(request), _request(request, body), wait=False)
    return accepted(run)


def operation_out(run: KubectlRun) -> m.Operation:
    if run.state is RunState.AWAITING_APPROVAL or run.state is RunState.PENDING:
        status: Any = run.state.value
    else:
        status = "denied" if run.state is RunState.DENIED else "completed"
    done = status in ("completed", "denied")
    return m.Operation(
        operation_id=run.id,
        status=status,
        command=run.argv,
        cluster_id=run.cluster_id,
        result=command_out(run) if status == "completed" else None,
        created_at=iso(run.created_at) or "",
        completed_at=iso(run.completed_at) if done else None,
        decided_by=run.decided_by,
    )


@router.route("/debug/operations/<operation_id>", ["GET"], answers={200: m.Operation},
              errors=(404,))  # fmt: skip
def get_operation(request: Request, operation_id: str) -> Response:
    """An async command: pending (or awaiting approval), then completed with its result."""
    run = bootstrap.services().debug.operation(who(request), operation_id)
    return json_response(operation_out(run))


# -- the approval gate (admins) --------------------------------------------------------------


@router.route("/debug/operations/<operation_id>/approve", ["POST"], answers={200: m.Operation},
              errors=(403, 404, 409))  # fmt: skip
def approve(request: Request, operation_id: str) -> Response:
    """Approve a held command: it is sent to its cluster now."""
    run = bootstrap.services().debug.decide(admin(request), operation_id, approve=True)
    return json_response(operation_out(run))


@router.route("/debug/operations/<operation_id>/deny", ["POST"], answers={200: m.Operation},
              errors=(403, 404, 409))  # fmt: skip
def deny(request: Request, operation_id: str) -> Response:
    """Deny a held command: it never runs."""
    run = bootstrap.services().debug.decide(admin(request), operation_id, approve=False)
    return json_response(operation_out(run))


@router.route("/admin/approvals", ["GET"], answers={200: m.Pending}, errors=(403,))
def awaiting(request: Request) -> Response:
    """Commands waiting for an admin's decision."""
    admin(request)
    runs = bootstrap.services().debug.awaiting()
    return json_response(m.Pending(operations=[operation_out(r) for r in runs], count=len(runs)))


def rules_out() -> m.RulesOut:
    rules = bootstrap.services().debug.rules()
    return m.RulesOut(verbs=rules.verbs, namespaces=rules.namespaces, updated_by=rules.updated_by,
                      updated_at=iso(rules.updated_at) or "")  # fmt: skip


@router.route("/admin/approval-rules", ["GET"], answers={200: m.RulesOut}, errors=(403,))
def get_rules(request: Request) -> Response:
    """Which verbs and namespaces need an admin's approval."""
    admin(request)
    return json_response(rules_out())


@router.route("/admin/approval-rules", ["PUT"], body=m.Rules, answers={200: m.RulesOut},
              errors=(403, 422))  # fmt: skip
def set_rules(request: Request, body: m.Rules) -> Response:
    """Set which verbs and namespaces need an admin's approval (empty lists: none)."""
    bootstrap.services().debug.set_rules(admin(request), body.verbs, body.namespaces)
    return json_response(rules_out())


# -- clusters and their agents ---------------------------------------------------------------


@router.route("/debug/clusters", ["GET"], answers={200: m.Clusters})
def list_clusters(request: Request) -> Response:
    """The clusters commands can be sent to."""
    who(request)
    ids = [c.id for c in bootstrap.services().clusters.list()]
    return json_response(m.Clusters(clusters=ids, count=len(ids)))


def cluster_detail(cluster_id: str) -> m.ClusterDetail:
    cluster = bootstrap.services().clusters.get(cluster_id)
    connected = cluster.connected(utcnow())
    return m.ClusterDetail(
        id=cluster.id,
        connected=connected,
        status="connected" if connected else "disconnected",
        lastSeen=iso(cluster.last_seen),
        agent="tether" if cluster.agent else "executor",
        hasToken=cluster.token is not None,
        mode="readOnly",
    )


@router.route("/debug/clusters/<cluster_id>", ["GET"], answers={200: m.ClusterDetail},
              errors=(404,))  # fmt: skip
def get_cluster(request: Request, cluster_id: str) -> Response:
    """One cluster: whether its agent is connected, and when it was last seen."""
    who(request)
    return json_response(cluster_detail(cluster_id))


@router.route("/admin/agents", ["GET"], answers={200: m.Agents}, errors=(403,))
def list_agents(request: Request) -> Response:
    """Every cluster agent and executor, connected or not (the CLI's `agent list`)."""
    admin(request)
    found = [cluster_detail(c.id) for c in bootstrap.services().clusters.list()]
    summaries = [m.AgentSummary(id=c.id, connected=c.connected, lastSeen=c.lastSeen) for c in found]
    return json_response(m.Agents(clusters=summaries, count=len(summaries)))


@router.route("/admin/agents/<cluster_id>/status", ["GET"], answers={200: m.ClusterDetail},
              errors=(403, 404))  # fmt: skip
def agent_status(request: Request, cluster_id: str) -> Response:
    """One cluster's agent (the CLI's `agent status`)."""
    admin(request)
    return json_response(cluster_detail(cluster_id))


@router.route("/admin/agents/<cluster_id>/token", ["POST"], body=m.NewToken,
              answers={200: m.TokenOut}, errors=(400, 403, 409))  # fmt: skip
def create_token(request: Request, cluster_id: str, body: m.NewToken) -> Response:
    """A token for the cluster's executors (yours, or a random one): shown this once."""
    record, token = bootstrap.services().clusters.new_token(
        cluster_id, admin(request).username, body.token
    )
    out = m.TokenOut(token=token, clusterId=cluster_id, createdAt=iso(record.created_at) or "")
    return json_response(out)  # 200, as Kubently's server answers (its CLI takes any 2xx)


@router.route("/admin/agents/<cluster_id>/token", ["DELETE"], answers={204: None},
              errors=(403, 404))  # fmt: skip
def revoke_token(request: Request, cluster_id: str) -> Response:
    """Revoke the cluster's executor token: its executors are refused from their next call."""
    admin(request)
    bootstrap.services().clusters.revoke(cluster_id)
    return Response(status=_WRITES_NO_BODY)


# -- third-party executors (per-cluster tokens) ----------------------------------------------
# The real executor's stream, GET /executor/stream, is the relay's (tether.relay.executor).


def executor(request: Request) -> str:
    """The cluster an executor's `Authorization: Bearer <token>` + `X-Cluster-ID` name."""
    return bootstrap.services().clusters.executor(
        request.headers.get("Authorization"), request.headers.get("X-Cluster-ID")
    )


def _posted(outcome: m.Outcome) -> dict[str, Any]:
    return outcome.model_dump(exclude_none=True)


@router.route("/agent/commands", ["GET"], query=m.WaitQuery, answers={200: m.Handed, 204: None},
              errors=(401,), public=True)  # fmt: skip
def agent_commands(request: Request, query: m.WaitQuery) -> Response:
    """The cluster's next commands, waiting up to `wait` seconds for one (204: none came)."""
    cluster_id = executor(request)
    handed = bootstrap.services().executors.take(cluster_id, 10, float(query.wait))
    if not handed:
        return Response(status=_WRITES_NO_BODY)
    out = [m.HandedOut(id=h.id, args=h.args, timeout=h.timeout, session_id=h.session_id)
           for h in handed]  # fmt: skip
    return json_response(m.Handed(commands=out))


@router.route("/agent/results", ["POST"], body=m.NestedResult, answers={200: m.Stored},
              errors=(400, 401, 404), public=True)  # fmt: skip
def agent_results(request: Request, body: m.NestedResult) -> Response:
    """A command's result (the document's shape: `{command_id, result: {...}}`)."""
    cluster_id = executor(request)
    bootstrap.services().executors.report(
        cluster_id, body.command_id, _posted(body.result), unknown="not_found"
    )
    return json_response(m.Stored(message="Result stored successfully", command_id=body.command_id))


@router.route("/agent/status", ["GET"], answers={200: m.AgentStatus}, errors=(401,), public=True)
def agent_status_poll(request: Request) -> Response:
    """Whether the cluster has work waiting (the document's polling hint)."""
    cluster_id = executor(request)
    depth = bootstrap.services().executors.queue_depth(cluster_id)
    return json_response(m.AgentStatus(cluster_id=cluster_id, is_active=depth > 0,
                                       queue_depth=depth))  # fmt: skip


@router.route("/executor/results", ["POST"], body=m.FlatResult, answers={200: m.AcceptedResult},
              errors=(401, 403), public=True)  # fmt: skip
def executor_results(request: Request, body: m.FlatResult) -> Response:
    """A command's result (the real executor's flat shape); 403 for another cluster's."""
    cluster_id = executor(request)
    bootstrap.services().executors.report(cluster_id, body.command_id, _posted(body))
    return json_response(m.AcceptedResult(status="accepted", command_id=body.command_id))


@router.route("/executor/heartbeat", ["POST"], answers={200: m.Beat}, errors=(401,), public=True)
def executor_heartbeat(request: Request) -> Response:
    """The executor is alive."""
    executor(request)
    return json_response(m.Beat(status="success", message="Heartbeat received"))


@router.route("/executor/capabilities", ["POST"], answers={200: m.Beat}, errors=(401,),
              public=True)  # fmt: skip
def executor_capabilities(request: Request) -> Response:
    """The executor's own allowlist: noted, not needed (Tether's policy decides)."""
    executor(request)
    return json_response(m.Beat(status="success", message="Capabilities received"))


# -- the audit trail -------------------------------------------------------------------------


def audit_entry(run: KubectlRun) -> m.AuditEntry:
    refused = run.state is RunState.FORBIDDEN
    return m.AuditEntry(
        timestamp=iso(run.created_at),
        type="command_refused" if refused else "command_executed",
        service_identity=run.service_identity,
        username=run.username,
        cluster_id=run.cluster_id,
        session_id=run.session_id,
        command_id=run.command_id or run.id,
        command=" ".join(run.argv),
        outcome=run.state.value,
        error=(run.error or "")[:500] or None,
        correlation_id=run.correlation_id,
        execution_time_ms=run.execution_time_ms,
        decided_by=run.decided_by,
    )


@router.route("/audit", ["GET"], query=m.AuditQuery, answers={200: m.Audit})
def audit(request: Request, query: m.AuditQuery) -> Response:
    """The commands run, newest first: an admin's key reads everyone's, any other key its
    own user's."""
    principal = who(request)
    runs = bootstrap.services().debug.audit(
        None if principal.is_admin else principal.id,
        cluster_id=query.cluster_id,
        session_id=query.session_id,
        since=query.since,
        until=query.until,
        limit=query.limit,
    )
    entries = [audit_entry(r) for r in runs]
    if query.event_type:
        entries = [e for e in entries if e.type == query.event_type]
    return json_response(m.Audit(entries=entries, count=len(entries),
                                 service_identity=principal.username))  # fmt: skip


@router.route("/healthz", ["GET"], public=True, listed=False)
def healthz(request: Request) -> Response:
    """Kubently's probe: up."""
    return json_response({"status": "ok"})


def document() -> dict[str, Any]:
    return openapi.document(
        router,
        title="Kubently (Tether)",
        version=VERSION,
        description="Kubernetes debug sessions: read-only kubectl through a command policy, "
        "sync and async, an approval gate, and the audit trail. Authenticate with X-API-Key "
        "or Authorization: Bearer. Limits: 100 requests a minute per key, 10 sessions a "
        "minute per key, 50 commands a minute per cluster (X-RateLimit-* on every answer).",
        error=m.Error,
        security={
            "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "Bearer": {"type": "http", "scheme": "bearer"},
        },
        always=(*openapi.ALWAYS, 429),
    )


openapi.serve(router, "kubently", document)
