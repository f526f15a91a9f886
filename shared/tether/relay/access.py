"""Who may open a session's WebSocket, and whether it may stay open: the checks every relay
route makes before the upgrade (credential, ownership, Origin) and while it lasts."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from urllib.parse import urlsplit

from tether import bootstrap
from tether.core.models import ActivitySource, Principal, Session, utcnow
from tether.errors import Forbidden, Unauthenticated
from tether.provision.runtime_http import IdToken
from tether.runtime import auth
from tether.service.tickets import is_ticket
from tether.service.tokens import looks_like_jwt

WATCH_INTERVAL = 2.0  # seconds between checks that a relayed connection may go on
ACCESS_REVOKED = 4401  # a shell's close code when its caller's access ends (4001: the session)


def principal(
    session_id: str, query: Mapping[str, str], authorization: str | None, api_key: str | None
) -> Principal:
    """From the query string (`ticket`, `token` or `api_key`, as browsers cannot set headers on
    a WebSocket) or else the headers."""
    services = bootstrap.services()
    for name in ("ticket", "token", "api_key"):
        value = query.get(name)
        if not value:
            continue
        if is_ticket(value):
            return services.auth.current(services.tickets.redeem(value, session_id))
        if looks_like_jwt(value):
            return services.tokens.verify(value)
        return services.auth.principal_for_key(value)
    return services.auth.authenticate(authorization, api_key)


def authorize(
    session_id: str,
    query: Mapping[str, str],
    authorization: str | None,
    api_key: str | None,
    write: bool = True,
    by_name: bool = False,
) -> tuple[Principal, Session]:
    """The caller and its running session; raises the error to answer otherwise. A read-only
    key opens only what cannot change anything (`write=False`: live logs). `by_name`: the
    session may be named by its name (StreamSpace's clients do)."""
    who = principal(session_id, query, authorization, api_key)
    if write and who.read_only:
        raise Forbidden("This API key is read-only", code="AUTH_READ_ONLY")
    return who, bootstrap.services().sessions.usable(who, session_id, by_name)


def same_origin(origin: str | None, host: str | None) -> bool:
    """Browsers send Origin; a page from another site must not drive a user's session.
    (Programs send no Origin, and are judged by their credential alone.)"""
    return origin is None or urlsplit(origin).netloc == host


def still_running(session_id: str, source: ActivitySource = "terminal") -> bool:
    """Whether the session still runs. An open desktop counts as its activity (a VNC viewer's
    input cannot be told from its polling, and the runtime does not see it); any other open
    connection does not: the workspace's runtime reports the traffic that crosses it (a
    terminal's bytes, a port's frames) and its running commands, asked before an idle
    hibernation (`Sessions.hibernate_idle`). A terminal left at its prompt is idle."""
    sessions = bootstrap.services().sessions
    session = sessions.repo.find(session_id)
    if session is None or session.state.value != "running" or session.expired(utcnow()):
        return False
    if source == "desktop":
        sessions.touch(session, source)
    return True


def standing(who: Principal, session_id: str, source: ActivitySource = "terminal") -> str | None:
    """Why a relayed connection must end now: "revoked" (its credential no longer holds: a key
    revoked, a user deactivated or deleted), "ended" (its session no longer runs); or None."""
    try:
        bootstrap.services().auth.current(who)
    except Unauthenticated:
        return "revoked"
    return None if still_running(session_id, source) else "ended"


def runtime_token(session_id: str) -> str:
    """What a runtime reached by the relay wants of its callers (`tether.runtime.auth`)."""
    return auth.token_for(bootstrap.services().runtime_key, session_id)


@functools.cache
def id_tokens() -> IdToken:
    """ID tokens for private Cloud Run workspaces (made on first use: google.auth is heavy)."""
    from tether.provision.runtime_http import GoogleIdTokens

    return GoogleIdTokens()
