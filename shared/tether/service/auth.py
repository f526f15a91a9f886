"""API keys and passwords. Keys are stored only as hashes, found by the prefix they carry."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from tether.core.models import ApiKey, KeyScope, Principal, Role, User, utcnow
from tether.core.ports import Store
from tether.errors import Conflict, NotFound, Unauthenticated, Unavailable, Unprocessable
from tether.service.repo import Repo
from tether.service.tokens import Tokens, holder, looks_like_jwt

KEY_PREFIX = "tether"
MAX_KEYS_PER_USER = 100


def _hash_key(secret: str) -> str:
    # Keys carry 190+ bits of randomness, so a fast hash is the right tool (not a slow KDF).
    return hashlib.sha256(secret.encode()).hexdigest()


# A password hash (scrypt) takes 16 MiB and tens of milliseconds of a core: at most one per core
# runs at once. One that cannot start within HASH_WAIT is turned away (503), so a flood of
# sign-ins from many addresses, each under its own rate limit, cannot queue a real one behind
# seconds of hashing.
_HASHING = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))
HASH_WAIT = 0.25


@contextmanager
def _hashing() -> Iterator[None]:
    if not _HASHING.acquire(timeout=HASH_WAIT):
        raise Unavailable("Too many sign-ins at once; try again in a moment", code="AUTH_BUSY")
    try:
        yield
    finally:
        _HASHING.release()


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    with _hashing():
        digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    return f"scrypt$16384$8$1${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        _, n, r, p, salt, digest = stored.split("$")
        with _hashing():
            got = hashlib.scrypt(
                password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32
            )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


def lookup_id(key: str) -> str:
    """The id a key's record is stored under: the prefix our keys carry, or for a key an
    operator chose in another format, a stable digest of it."""
    parts = key.split("_")
    if len(parts) == 3 and parts[0] == KEY_PREFIX and parts[1] and parts[2]:
        return parts[1]
    return "x" + hashlib.sha256(key.encode()).hexdigest()[:11]


@dataclass
class Auth:
    """Who a credential is. Every check reads the store (no cache of trust): a key revoked, a
    user deactivated or deleted is refused on the next request, on every instance."""

    store: Store
    tokens: Tokens | None = None

    def __post_init__(self) -> None:
        self.users = Repo(self.store, "users", User)
        self.keys = Repo(self.store, "api_keys", ApiKey)

    def authenticate(self, authorization: str | None, api_key: str | None) -> Principal:
        """The caller, from `Authorization: Bearer <JWT or API key>` or `X-API-Key`. An
        Authorization header that is there decides, even empty: a refused credential is never
        passed over for another."""
        if authorization is not None:
            scheme, _, credential = authorization.strip().partition(" ")
            credential = credential.strip()
            if scheme.lower() != "bearer" or not credential:
                raise Unauthenticated(
                    "Authorization must be 'Bearer <token>'", code="AUTH_TOKEN_INVALID"
                )
            if looks_like_jwt(credential):
                if self.tokens is None:
                    raise Unauthenticated("Tokens are not enabled", code="AUTH_TOKEN_INVALID")
                return self.tokens.verify(credential)
            return self.principal_for_key(credential)
        if api_key:
            return self.principal_for_key(api_key)
        raise Unauthenticated("Authorization header missing", code="AUTH_TOKEN_MISSING")

    def principal_for_key(self, key: str | None) -> Principal:
        if not key:
            raise Unauthenticated("Missing API key", code="AUTH_TOKEN_MISSING")
        key = key.strip()
        record = self.keys.find(lookup_id(key))
        if record is None or not hmac.compare_digest(record.key_hash, _hash_key(key)):
            raise Unauthenticated("Invalid API key", code="AUTH_TOKEN_INVALID")
        return self._for_key(record)

    def _for_key(self, record: ApiKey) -> Principal:
        if record.expires_at is not None and record.expires_at <= utcnow():
            raise Unauthenticated("API key has expired", code="AUTH_TOKEN_EXPIRED")
        user = self.users.find(record.owner)
        if user is None or not user.active or record.owner_uid not in ("", user.uid):
            raise Unauthenticated("Invalid API key", code="AUTH_TOKEN_INVALID")
        return Principal.of(user, key_id=record.id, read_only=record.scope == "read")

    def current(self, principal: Principal) -> Principal:
        """`principal` as it stands now (its role may have changed); Unauthenticated if what it
        was made from has been revoked since: its key, or its user (deactivated, deleted, made
        again, its password changed)."""
        if principal.key_id is not None:
            record = self.keys.find(principal.key_id)
            if record is None or record.owner != principal.id:
                raise Unauthenticated("API key has been revoked", code="AUTH_TOKEN_INVALID")
            now = self._for_key(record)
            if now.uid != principal.uid:
                raise Unauthenticated("Invalid API key", code="AUTH_TOKEN_INVALID")
            return now
        if principal.until is not None and principal.until <= utcnow():
            raise Unauthenticated("Token has expired", code="AUTH_TOKEN_EXPIRED")
        if (
            principal.token_id
            and self.tokens is not None
            and self.tokens.revoked(principal.token_id)
        ):
            raise Unauthenticated("Token has been revoked", code="AUTH_TOKEN_INVALID")
        user = holder(self.users, principal.id, principal.uid, principal.version)
        return principal.model_copy(update={"role": user.role})

    def ensure_user(self, username: str, role: Role, password: str | None = None) -> User:
        user = self.users.find(username)
        if user is None:
            user = User(id=username, username=username, role=role)
            if password:
                user.password_hash = hash_password(password)
            try:
                return self.users.create(username, user)
            except Conflict:  # another instance bootstrapped it first
                return self.users.get(username)
        if password and not (user.password_hash and verify_password(password, user.password_hash)):
            user.password_hash = hash_password(password)
            user = self.users.save(username, user)
        return user

    def add_key(
        self,
        owner: str,
        key: str | None = None,
        name: str = "default",
        scope: KeyScope = "full",
        expires_at: datetime | None = None,
    ) -> str:
        """Register `key` (or a new random one) for `owner`; returns the key. Idempotent."""
        # Hex on both sides: a secret with "_" in it (token_urlsafe's alphabet) would break
        # the key's three parts, and with them the lookup prefix.
        key = key or f"{KEY_PREFIX}_{secrets.token_hex(6)}_{secrets.token_hex(24)}"
        prefix = lookup_id(key)
        user = self.users.get(owner, "User")
        record = ApiKey(id=prefix, owner=owner, owner_uid=user.uid, key_hash=_hash_key(key),
                        name=name, scope=scope, expires_at=expires_at)  # fmt: skip
        existing = self.keys.find(prefix)
        if existing is None:
            try:
                self.keys.create(prefix, record)
            except Conflict:
                existing = self.keys.get(prefix)
        if existing is not None and existing.key_hash != record.key_hash:
            raise Conflict("An API key with that prefix exists already")
        return key

    def new_key(
        self, owner: str, name: str, scope: KeyScope, expires_at: datetime | None
    ) -> tuple[ApiKey, str]:
        """A new key for `owner` (the key itself is shown this once: only its hash is kept)."""
        if expires_at is not None and expires_at <= utcnow():
            raise Unprocessable("expires_at must be in the future", field="expires_at")
        if len(self.keys_of(owner)) >= MAX_KEYS_PER_USER:
            raise Conflict(f"At most {MAX_KEYS_PER_USER} API keys a user", code="TOO_MANY_KEYS")
        key = self.add_key(owner, name=name, scope=scope, expires_at=expires_at)
        return self.keys.get(lookup_id(key)), key

    def keys_of(self, owner: str) -> list[ApiKey]:
        return self.keys.query([("owner", "==", owner)], limit=MAX_KEYS_PER_USER + 1)

    def revoke_key(self, principal: Principal, key_id: str) -> None:
        """Removes a key of the caller's (any key, for an admin); another's is not found."""
        record = self.keys.find(key_id)
        if record is None or not (principal.is_admin or record.owner == principal.id):
            raise NotFound("API key not found", code="KEY_NOT_FOUND")
        self.keys.delete(key_id)

    def delete_user(self, caller: Principal, username: str) -> None:
        """The user and every API key of theirs. Their JWTs die with them: a user made again
        under the name is another incarnation."""
        if username == caller.id:
            raise Conflict("You cannot delete yourself", code="USER_SELF")
        if self.users.find(username) is None:
            raise NotFound(f"User '{username}' not found", code="USER_NOT_FOUND")
        self.users.delete(username)  # first: from here no key of theirs is honoured
        for record in self.keys_of(username):
            self.keys.delete(record.id)

    def has_key(self, owner: str) -> bool:
        return bool(self.keys.query([("owner", "==", owner)], limit=1))
