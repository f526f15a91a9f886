"""The one error tree. Each surface renders these in its own documented body shape.

Named by meaning, not by HTTP status: a surface maps each class to its status and code.
"""

from __future__ import annotations

from typing import Any


class TetherError(Exception):
    """Root of every error Tether raises on purpose."""

    def __init__(self, message: str, *, field: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details


class Invalid(TetherError):
    """The caller sent something malformed; `field` names what (the first thing, where
    `problems` lists every field and what is wrong with it)."""

    problems: tuple[tuple[str, str], ...] = ()


class Unprocessable(Invalid):
    """Well formed, but not something that can be done (an Idempotency-Key reused with another
    request)."""


class NotFound(TetherError):
    """No such object, or not one the caller may see (another user's object is NotFound too)."""


class Conflict(TetherError):
    """The object exists already, or changed under us (a lost compare-and-set)."""


class InvalidTransition(Conflict):
    """The object's state does not allow the requested move."""


class Unauthenticated(TetherError):
    """No credential, or one that is not valid."""


class Forbidden(TetherError):
    """A valid credential without the right to do this."""


class RateLimited(TetherError):
    """Too many requests; `retry_after` in seconds is in details."""


class Unavailable(TetherError):
    """A backend or capacity we need is not there now (no agent, store down)."""


class Timeout(TetherError):
    """The work did not finish within the time the caller allowed."""


class Unsupported(TetherError):
    """A feature a surface's clients know that Tether does not offer (cost estimation, say):
    the message names it and says what to do instead."""
