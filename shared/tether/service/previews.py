"""Preview links: a URL that opens one port of one session to anyone holding it, until it
expires. A signed token (HS256, the deployment's secret) carries the session, the port and
who made it, so nothing is stored; used, it is checked again: the session still runs and its
maker's credential still holds (a revoked key, a deactivated user end their links at once).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt

from tether.core.models import Principal, utcnow
from tether.errors import NotFound

AUDIENCE = "tether-preview"


@dataclass(frozen=True)
class Preview:
    principal: Principal  # who made the link, as they were then (`Auth.current` re-checks)
    session_id: str
    port: int


@dataclass
class Previews:
    secret: str

    def issue(
        self, principal: Principal, session_id: str, port: int, lifetime: timedelta
    ) -> tuple[str, datetime]:
        expires = utcnow() + lifetime
        claims: dict[str, Any] = {
            "aud": AUDIENCE,
            "exp": int(expires.timestamp()),
            "sid": session_id,
            "port": port,
            "who": principal.model_dump(mode="json", exclude_none=True),
        }
        return jwt.encode(claims, self.secret, algorithm="HS256"), expires

    def read(self, token: str) -> Preview:
        """The link's session, port and maker; NotFound for any link that is not (or no
        longer) one: an expired link looks like a wrong one to whoever holds it."""
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=["HS256"],
                audience=AUDIENCE,
                options={"require": ["exp", "aud", "sid", "port", "who"]},
            )
            return Preview(Principal.model_validate(claims["who"]), str(claims["sid"]),
                           int(claims["port"]))  # fmt: skip
        except (jwt.InvalidTokenError, ValueError, TypeError):
            raise GONE from None


GONE = NotFound("No such preview link (or it has expired)", code="PREVIEW_NOT_FOUND")
