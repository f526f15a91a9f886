"""JWTs (HS256) for the StreamSpace login, revocable at once through a denylist in the Store."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt

from tether.core.models import Principal, User, utcnow
from tether.core.ports import Store
from tether.errors import Conflict, Unauthenticated
from tether.service.repo import Repo

REVOKED = "revoked_tokens"


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


@dataclass
class Tokens:
    store: Store
    secret: str
    issuer: str = "tether"
    audience: str = "tether-api"
    ttl: timedelta = timedelta(hours=24)

    def __post_init__(self) -> None:
        self.users = Repo(self.store, "users", User)

    def issue(self, user: User) -> tuple[str, datetime]:
        now = utcnow()
        expires = now + self.ttl
        claims = {
            "sub": user.id,
            "name": user.username,
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "iss": self.issuer,
            "aud": self.audience,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self.secret, algorithm="HS256"), expires

    def claims(self, token: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.secret,
                algorithms=["HS256"],  # pinned: never `none`, never what the header says
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "sub", "jti", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("Token has expired", code="AUTH_TOKEN_EXPIRED") from None
        except jwt.InvalidTokenError:
            raise Unauthenticated("Token is invalid", code="AUTH_TOKEN_INVALID") from None
        if self.store.get(REVOKED, str(claims["jti"])) is not None:
            raise Unauthenticated("Token has been revoked", code="AUTH_TOKEN_INVALID")
        return claims

    def verify(self, token: str) -> Principal:
        claims = self.claims(token)
        user = self.users.find(str(claims["sub"]))
        if user is None or not user.active:
            raise Unauthenticated("Token is invalid", code="AUTH_TOKEN_INVALID")
        # The role comes from the store, so a demotion takes effect at once.
        return Principal(id=user.id, username=user.username, role=user.role)

    def revoke(self, token: str) -> None:
        claims = self.claims(token)
        expires = datetime.fromtimestamp(int(claims["exp"]), tz=utcnow().tzinfo)
        with contextlib.suppress(Conflict):  # revoked already
            self.store.create(REVOKED, str(claims["jti"]), {"expires_at": expires})
