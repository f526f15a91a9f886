"""JWTs (HS256) for the StreamSpace login, revocable at once through a denylist in the Store."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from tether.core.models import Principal, User, utcnow
from tether.core.ports import Store
from tether.errors import Conflict, Unauthenticated
from tether.service.repo import Repo

REVOKED = "revoked_tokens"


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


def holder(users: Repo[User], name: str, uid: str, version: int) -> User:
    """The user a token of `uid` at credential `version` was issued to, if it still holds:
    the user is there and active, the same incarnation, its credentials unchanged."""
    user = users.find(name)
    if user is None or not user.active or user.uid != uid:
        raise Unauthenticated("Token is invalid", code="AUTH_TOKEN_INVALID")
    if user.credentials_version != version:
        raise Unauthenticated("Token has been revoked", code="AUTH_TOKEN_INVALID")
    return user


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
            "sub": user.uid,  # the user's incarnation, never reused (the name may be)
            "name": user.username,
            "ver": user.credentials_version,
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
                options={"require": ["exp", "iat", "sub", "jti", "iss", "aud", "name"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("Token has expired", code="AUTH_TOKEN_EXPIRED") from None
        except jwt.InvalidTokenError:
            raise Unauthenticated("Token is invalid", code="AUTH_TOKEN_INVALID") from None
        if self.revoked(str(claims["jti"])):
            raise Unauthenticated("Token has been revoked", code="AUTH_TOKEN_INVALID")
        return claims

    def verify(self, token: str) -> Principal:
        """The token's user as the store has it now (a demotion takes effect at once). Refused
        if the user is gone or inactive, was made again since (another incarnation), or has been
        deactivated or changed password since the token was issued."""
        claims = self.claims(token)
        user = holder(
            self.users, str(claims["name"]), str(claims["sub"]), int(claims.get("ver", 0))
        )
        expires = datetime.fromtimestamp(int(claims["exp"]), tz=UTC)
        return Principal.of(user, token_id=str(claims["jti"]), until=expires)

    def revoked(self, token_id: str) -> bool:
        return self.store.get(REVOKED, token_id) is not None

    def revoke(self, token: str) -> None:
        claims = self.claims(token)
        expires = datetime.fromtimestamp(int(claims["exp"]), tz=utcnow().tzinfo)
        with contextlib.suppress(Conflict):  # revoked already
            self.store.create(REVOKED, str(claims["jti"]), {"expires_at": expires})
