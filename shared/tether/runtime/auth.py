"""The per-workspace credential between the agent (and the local relay) and a runtime.

The runtime's sockets are reached by nothing inside another workspace, but were one to leak
anyway (a bind mount, a path guessed) it would give nothing without this: an HMAC of the
session id under the stack's secret, handed to the runtime in its environment, sent back in a
header (HTTP) or a field (the exec channel). A runtime given none (Cloud Run, where Google's
front end checks an ID token before a request arrives) checks none.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "X-Tether-Runtime-Token"
FIELD = "token"
ENV = "TETHER_RUNTIME_TOKEN"


def token_for(secret: str, session_id: str) -> str:
    return hmac.new(
        secret.encode(), b"tether-runtime:" + session_id.encode(), hashlib.sha256
    ).hexdigest()


def valid(expected: str | None, given: object) -> bool:
    """Whether `given` is the token (always, for a runtime that was given none)."""
    if expected is None:
        return True
    return isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())


class Credential:
    """The token a runtime accepts now. One started ahead for a warm pool is handed its
    session's token when a session takes it (`POST /adopt`), and accepts only that after."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token

    def accepts(self, given: object) -> bool:
        return valid(self.token, given)
