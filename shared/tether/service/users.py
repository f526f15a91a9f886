"""Users: login with a password, and the admin's list and create."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from tether.core.models import Role, User, utcnow
from tether.core.ports import Store
from tether.errors import Conflict, Invalid, Unauthenticated
from tether.service.auth import hash_password, verify_password
from tether.service.repo import Repo


@cache
def _dummy_hash() -> str:
    """Verified against when the username is unknown, so both failures take the same time.
    Made on first use: a scrypt hash at import would slow every function's cold start."""
    return hash_password("not a password anyone has")


@dataclass
class Users:
    store: Store

    def __post_init__(self) -> None:
        self.repo = Repo(self.store, "users", User)

    def login(self, username: str, password: str) -> User:
        user = self.repo.find(username)
        ok = verify_password(password, user.password_hash if user and user.password_hash
                             else _dummy_hash())  # fmt: skip
        if user is None or not ok or not user.active or not user.password_hash:
            raise Unauthenticated("Invalid username or password", code="AUTH_INVALID_CREDENTIALS")

        def seen(u: User) -> User:
            u.last_login = utcnow()
            return u

        return self.repo.mutate(user.id, seen)

    def create(self, username: str, password: str, role: Role, email: str | None) -> User:
        if len(password) < 8:
            raise Invalid("Password must be at least 8 characters", field="password")
        user = User(
            id=username,
            username=username,
            email=email,
            role=role,
            password_hash=hash_password(password),
        )
        try:
            return self.repo.create(username, user)
        except Conflict:
            raise Conflict(
                f"User '{username}' already exists", field="username", code="USER_EXISTS"
            ) from None

    def page(self, role: Role | None, page: int, limit: int) -> tuple[list[User], int]:
        where = [("role", "==", role.value)] if role else []
        users = self.repo.query(where, order_by="username")  # type: ignore[arg-type]
        return users[(page - 1) * limit : page * limit], len(users)
