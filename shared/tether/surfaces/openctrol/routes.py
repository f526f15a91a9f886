"""Openctrol's REST routes (docs/specs/openctrol-api.md, and what the real clients send and read:
/work/notes/openctrol-clients.md), each under `/openctrol/{agent_id}`, the desktop agent's id.

The HA integration has no path field: a user types `tether.example/openctrol/A1` as its host,
and it appends `:443`, so the agent segment may end in `:<port>`, which is dropped. Clients
authenticate with `X-Openctrol-Key` (what HA sends) or `Authorization: Bearer` (the document);
only /api/v1/health is public. Every success is a 200 with a JSON body (HA checks for exactly
200 and parses JSON), every error `{"error", "details"}`.
"""

from __future__ import annotations

import re
from typing import Any

from werkzeug.wrappers import Request, Response

from tether import bootstrap, errors
from tether.core.models import DesktopSession, Principal
from tether.surfaces import openapi
from tether.surfaces.http import Router, caller, json_response, may, proxy_matcher, status_for
from tether.surfaces.openctrol import models as m
from tether.surfaces.shapes import openctrol as render_error

VERSION = "1.0.0"
BASE = "/openctrol/<agent_id>/api/v1"
_PORT = re.compile(r":\d+$")
_API = re.compile(r"/openctrol/[^/]+/api/v1/")
CREDENTIALS = "Missing or invalid credentials"
POWER_ACTIONS = ("restart", "shutdown")


def desktop_id(segment: str) -> str:
    """The agent's id from its path segment (`A1:443` is `A1`)."""
    return _PORT.sub("", segment)


def who(request: Request) -> Principal:
    """The caller: `X-Openctrol-Key` when it is there (even empty), else the project's own
    credentials (`Authorization: Bearer <key or JWT>`, `X-API-Key`). Any refusal reads alike."""
    cached = request.environ.get("tether.principal")
    if isinstance(cached, Principal):
        return may(cached, request.method)
    key = request.headers.get("X-Openctrol-Key")
    try:
        if key is None:
            return caller(request)
        principal = bootstrap.services().auth.principal_for_key(key)
    except errors.Unauthenticated:
        raise errors.Unauthenticated(CREDENTIALS) from None
    request.environ["tether.principal"] = principal
    return may(principal, request.method)


router = Router(render_error, owner=lambda request: who(request).id)


def handle(request: Request) -> Response:
    """Route; a credential is checked first (a refused one is a 401 whatever the body)."""
    path = request.path.rstrip("/")
    if _API.match(path) and not path.endswith("/api/v1/health"):
        try:
            who(request)
        except errors.TetherError as exc:
            return render_error(exc, status_for(exc))
    return router(request)


def ok(**more: Any) -> Response:
    return json_response({"status": "ok", **more})


def ask(request: Request, agent_id: str, action: str, **fields: Any) -> dict[str, Any]:
    return bootstrap.services().desktops.ask(who(request), desktop_id(agent_id), action, **fields)


def reach(request: Request, agent_id: str) -> None:
    """The caller may use the agent (else NotFound), before a check of values its schema
    allows (a refused one is a 400 only for an agent the caller may use)."""
    bootstrap.services().desktops.desktop(who(request), desktop_id(agent_id))


def _str(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _list(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


# -- health -----------------------------------------------------------------------------------


@router.route(f"{BASE}/health", ["GET"], answers={200: m.Health}, public=True)
def health(request: Request, agent_id: str) -> Response:
    """The agent's version, uptime, display state and live sessions (public)."""
    h = bootstrap.services().desktops.health(desktop_id(agent_id))
    return json_response(
        m.Health(
            agent_id=h.agent_id,
            version=h.version,
            uptime_seconds=h.uptime_seconds,
            remote_desktop=m.RemoteDesktop(
                is_running=h.is_running,
                last_frame_at=h.last_frame_at,
                state=h.state,
                desktop_state=h.desktop_state,
                degraded=h.degraded,
            ),
            active_sessions=h.active_sessions,
        )
    )


# -- sessions ---------------------------------------------------------------------------------


def websocket_url(request: Request, session: DesktopSession, token: str) -> str:
    """Absolute, as the clients open it as given: wss when the client reached us over https
    (directly, or through a trusted proxy that says so), at the Host it asked for."""
    secure = request.scheme == "https"
    trusted = proxy_matcher(bootstrap.services().settings.trusted_proxies)
    if not secure and trusted(request.remote_addr or ""):
        forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[-1].strip()
        secure = forwarded.lower() == "https"
    scheme = "wss" if secure else "ws"
    return (
        f"{scheme}://{request.host}/openctrol/{session.agent_id}/ws/desktop"
        f"?sess={session.id}&token={token}"
    )


@router.route(f"{BASE}/sessions/desktop", ["POST"], body=m.CreateSession,
              answers={200: m.SessionOut}, errors=(404, 409))  # fmt: skip
def create_session(request: Request, agent_id: str, body: m.CreateSession) -> Response:
    """Open a remote-desktop session (TTL 60-3600 s, default 900): its WebSocket URL carries
    its token, valid while the session lives."""
    desktops = bootstrap.services().desktops
    session, token = desktops.open(who(request), desktop_id(agent_id), body.ha_id, body.ttl_seconds)
    url = websocket_url(request, session, token)
    expires = session.expires_at.isoformat()
    return json_response(
        m.SessionOut(
            session_id=session.id,
            websocket_url=url,
            expires_at=expires,
            sessionId=session.id,
            webSocketUrl=url,
            expiresAt=expires,
        )
    )


@router.route(f"{BASE}/sessions/desktop/<session_id>/end", ["POST"], answers={200: m.Ok})
def end_session(request: Request, agent_id: str, session_id: str) -> Response:
    """End a session (an unknown one: nothing to do); the agent closes its streams."""
    bootstrap.services().desktops.end(who(request), desktop_id(agent_id), session_id)
    return ok()


# -- power ------------------------------------------------------------------------------------


@router.route(f"{BASE}/power", ["POST"], body=m.Power, answers={200: m.PowerDone},
              errors=(404,))  # fmt: skip
def power(request: Request, agent_id: str, body: m.Power) -> Response:
    """Restart or shut down the desktop's machine (as its agent is configured to)."""
    reach(request, agent_id)  # an unknown agent is a 404 whatever the action
    action = body.action.lower()
    if action == "wol":
        raise errors.Invalid("Wake-on-LAN (wol) is not supported", field="action")
    if action not in POWER_ACTIONS:
        raise errors.Invalid(
            f"Invalid field 'action': '{body.action}' is not restart or shutdown", field="action"
        )
    try:
        ask(request, agent_id, action, force=body.force)  # the contract: action is the power action
    except errors.Unsupported as exc:  # not configured on the agent: the service is away
        raise errors.Unavailable(exc.message, field=exc.field) from None
    return json_response(m.PowerDone(action=action))


# -- audio ------------------------------------------------------------------------------------


def _audio(request: Request, agent_id: str) -> dict[str, Any]:
    return ask(request, agent_id, "audio_state")


def _default_device(state: dict[str, Any]) -> dict[str, Any] | None:
    default = _str(state.get("default_output_device_id"))
    devices = _list(state.get("devices"))
    return next((d for d in devices if d.get("is_default") is True), None) or next(
        (d for d in devices if default and d.get("id") == default), None
    )


@router.route(f"{BASE}/audio/state", ["GET"], answers={200: m.AudioState}, errors=(404,))
def audio_state(request: Request, agent_id: str) -> Response:
    """Output devices and application sessions, volumes 0.0-1.0."""
    state = _audio(request, agent_id)
    default = _str(state.get("default_output_device_id"))
    devices = [
        m.DeviceState(
            id=_str(d.get("id")),
            name=_str(d.get("name")),
            volume=_num(d.get("volume")),
            muted=d.get("muted") is True,
            is_default=d.get("is_default") is True,
            isDefault=d.get("is_default") is True,
        )
        for d in _list(state.get("devices"))
    ]
    sessions = [
        m.SessionState(
            id=_str(s.get("id")),
            name=_str(s.get("name")),
            volume=_num(s.get("volume")),
            muted=s.get("muted") is True,
            output_device_id=_str(s.get("output_device_id")),
            outputDeviceId=_str(s.get("output_device_id")),
        )
        for s in _list(state.get("sessions"))
    ]
    return json_response(
        m.AudioState(
            default_output_device_id=default,
            defaultOutputDeviceId=default,
            devices=devices,
            sessions=sessions,
        )
    )


def _percent(fraction: Any) -> float:
    return round(_num(fraction) * 100, 2)


@router.route(f"{BASE}/audio/status", ["GET"], answers={200: m.AudioStatus}, errors=(404,))
def audio_status(request: Request, agent_id: str) -> Response:
    """The default device as master and every output device, volumes 0-100."""
    state = _audio(request, agent_id)
    default = _default_device(state)
    master = m.MasterStatus(
        volume=_percent(default.get("volume")) if default else 0.0,
        muted=bool(default and default.get("muted") is True),
    )
    devices = [
        m.DeviceStatus(
            id=_str(d.get("id")),
            name=_str(d.get("name")),
            volume=_percent(d.get("volume")),
            muted=d.get("muted") is True,
            is_default=d is default,
            isDefault=d is default,
        )
        for d in _list(state.get("devices"))
    ]
    return json_response(m.AudioStatus(master=master, devices=devices))


@router.route(f"{BASE}/audio/master", ["POST"], body=m.Master, answers={200: m.Ok},
              errors=(404,))  # fmt: skip
def audio_master(request: Request, agent_id: str, body: m.Master) -> Response:
    """Set the default device's volume (0-100) and mute; a missing field is kept."""
    default = _default_device(_audio(request, agent_id))
    if default is None:
        raise errors.NotFound("No default audio output device", field="device_id")
    if body.volume is not None or body.muted is not None:
        volume = None if body.volume is None else body.volume / 100
        ask(request, agent_id, "audio_device", device_id=_str(default.get("id")), volume=volume,
            muted=body.muted, set_default=False)  # fmt: skip
    return ok()


@router.route(f"{BASE}/audio/device", ["POST"], body=m.Device, answers={200: m.Ok},
              errors=(404,))  # fmt: skip
def audio_device(request: Request, agent_id: str, body: m.Device) -> Response:
    """Set a device's volume and mute: `{DeviceId, Volume 0-100, Muted}` (the HA integration)
    or `{device_id, volume 0.0-1.0, muted, set_default}` (the document)."""
    reach(request, agent_id)  # an unknown agent is a 404 whatever the volume
    raw = request.get_json(silent=True, cache=True)
    raw = raw if isinstance(raw, dict) else {}
    # The document's snake_case id means its 0-1 scale; the integration's casings mean 0-100.
    scale = 1.0 if "device_id" in raw else 100.0
    volume = body.volume
    if volume is not None:
        if volume > scale:
            named = "volume" if "volume" in raw else "Volume"
            raise errors.Invalid(
                f"Invalid field '{named}': must be between 0 and {scale:g}", field=named
            )
        volume = volume / scale
    ask(request, agent_id, "audio_device", device_id=body.device_id, volume=volume,
        muted=body.muted, set_default=body.set_default)  # fmt: skip
    return ok()


@router.route(f"{BASE}/audio/default", ["POST"], body=m.Default, answers={200: m.Ok},
              errors=(404,))  # fmt: skip
def audio_default(request: Request, agent_id: str, body: m.Default) -> Response:
    """Make a device the default output."""
    ask(request, agent_id, "audio_default", device_id=body.device_id)
    return ok()


@router.route(f"{BASE}/audio/session", ["POST"], body=m.AudioSession, answers={200: m.Ok},
              errors=(404,))  # fmt: skip
def audio_session(request: Request, agent_id: str, body: m.AudioSession) -> Response:
    """Set an application's volume (0.0-1.0), mute and output device."""
    ask(request, agent_id, "audio_session", session_id=body.session_id, volume=body.volume,
        muted=body.muted, output_device_id=body.output_device_id)  # fmt: skip
    return ok()


# -- monitors ---------------------------------------------------------------------------------


@router.route(f"{BASE}/rd/monitors", ["GET"], answers={200: m.Monitors}, errors=(404,))
def monitors(request: Request, agent_id: str) -> Response:
    """The desktop's monitors and the one streamed."""
    found = ask(request, agent_id, "monitors")
    out = []
    for mon in _list(found.get("monitors")):
        width, height = _int(mon.get("width")), _int(mon.get("height"))
        primary = mon.get("is_primary") is True
        out.append(m.Monitor(id=_str(mon.get("id")), name=_str(mon.get("name")),
                             resolution=f"{width}x{height}", width=width, height=height,
                             is_primary=primary, isPrimary=primary))  # fmt: skip
    current = found.get("current_monitor_id")
    current = current if isinstance(current, str) else None
    return json_response(m.Monitors(monitors=out, current_monitor_id=current,
                                    currentMonitorId=current))  # fmt: skip


@router.route(f"{BASE}/rd/monitor", ["POST"], body=m.SelectMonitor,
              answers={200: m.MonitorSelected}, errors=(404,))  # fmt: skip
def select_monitor(request: Request, agent_id: str, body: m.SelectMonitor) -> Response:
    """Stream another monitor (for every viewer of the desktop)."""
    done = ask(request, agent_id, "monitor_select", monitor_id=body.monitor_id)
    chosen = _str(done.get("monitor_id"), body.monitor_id)
    return json_response(m.MonitorSelected(monitor_id=chosen, monitorId=chosen))


def document() -> dict[str, Any]:
    return openapi.document(
        router,
        title="Openctrol (Tether)",
        version=VERSION,
        description="A desktop agent's REST API: health, remote-desktop sessions (their "
        "WebSocket is the relay's, /openctrol/{agent}/ws/desktop), power, audio and monitors. "
        "Authenticate with X-Openctrol-Key or Authorization: Bearer (a Tether API key); "
        "/api/v1/health is public. The agent segment may end in :<port> (dropped).",
        error=m.Error,
        security={
            "OpenctrolKey": {"type": "apiKey", "in": "header", "name": "X-Openctrol-Key"},
            "Bearer": {"type": "http", "scheme": "bearer"},
        },
    )


openapi.serve(router, "openctrol", document)
