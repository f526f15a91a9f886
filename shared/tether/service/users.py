"""Users: login with a password, and the admin's list and create."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from tether.core.models import Principal, Role, User, utcnow
from tether.core.ports import Filter, Store
from tether.errors import Conflict, Invalid, NotFound, Unauthenticated
from tether.service.auth import hash_password, verify_password
from tether.service.repo import Repo

MAX_FAVORITES = 100
TEMPLATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


@cache
def _dummy_hash() -> str:
    """Verified against when the username is unknown, so both failures take the same time.
    Made on first use: a scrypt hash at import would slow every function's cold start."""
    return hash_password("not a password anyone has")


def _checked(password: str) -> str:
    if len(password) < 8:
        raise Invalid("Password must be at least 8 characters", field="password")
    return password


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

    def get(self, username: str) -> User:
        user = self.repo.find(username)
        if user is None:
            raise NotFound(f"User '{username}' not found", code="USER_NOT_FOUND")
        return user

    def update(
        self,
        caller: Principal,
        username: str,
        active: bool | None = None,
        role: Role | None = None,
        password: str | None = None,
        email: str | None = None,
        full_name: str | None = None,
    ) -> User:
        """Deactivate or reactivate a user, change their role, password, email or full name
        (None: unchanged; "": cleared). A deactivation, a reactivation or a new password ends
        every JWT issued before it (the user's credential version moves); an inactive user's
        API keys are refused while it lasts."""
        if username == caller.id and (active is False or (role and role is not caller.role)):
            raise Conflict("You cannot deactivate or demote yourself", code="USER_SELF")
        hashed = hash_password(_checked(password)) if password is not None else None

        def change(user: User) -> User:
            if active is not None and active != user.active:
                user.active = active
                user.credentials_version += 1
            if hashed is not None:
                user.password_hash = hashed
                user.credentials_version += 1
            if role is not None:
                user.role = role
            if email is not None:
                user.email = email or None
            if full_name is not None:
                user.full_name = full_name or None
            return user

        self.get(username)
        return self.repo.mutate(username, change)

    def favorite(self, username: str, template: str, marked: bool) -> User:
        """Mark a template as one of the user's favourites, or unmark it (either twice is
        the same as once). At most MAX_FAVORITES: the list lives on the user's record."""
        if not TEMPLATE_NAME.fullmatch(template):  # no template could be called so
            raise NotFound(f"Template '{template}' not found", code="TEMPLATE_NOT_FOUND")

        def change(user: User) -> User | None:
            if marked == (template in user.favorites):
                return None
            if marked and len(user.favorites) >= MAX_FAVORITES:
                raise Invalid(f"At most {MAX_FAVORITES} favourites", field="templateName")
            favorites = dict(user.favorites)
            if marked:
                favorites[template] = utcnow()
            else:
                del favorites[template]
            user.favorites = favorites
            return user

        found = self.get(username)
        return self.repo.mutate(found.id, change, start=found)

    def create(
        self,
        username: str,
        password: str,
        role: Role,
        email: str | None,
        full_name: str | None = None,
    ) -> User:
        user = User(
            id=username,
            username=username,
            email=email,
            full_name=full_name or None,
            role=role,
            password_hash=hash_password(_checked(password)),
        )
        try:
            return self.repo.create(username, user)
        except Conflict:
            raise Conflict(
                f"User '{username}' already exists", field="username", code="USER_EXISTS"
            ) from None

    def page(self, role: Role | None, page: int, limit: int) -> tuple[list[User], int]:
        where: list[Filter] = [("role", "==", role.value)] if role else []
        users = self.repo.query(where, "username", limit=limit, offset=(page - 1) * limit)
        return users, self.repo.count(where)
