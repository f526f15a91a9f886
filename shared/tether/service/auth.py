"""API keys and passwords. Keys are stored only as hashes, found by the prefix they carry."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tether.core.models import ApiKey, Principal, Role, User
from tether.core.ports import Store
from tether.errors import Conflict, Unauthenticated, Unavailable
from tether.service.repo import Repo
from tether.service.tokens import Tokens, looks_like_jwt

KEY_PREFIX = "tether"
# How long a checked key is trusted without reading the store again: removing a key, or changing
# its owner, takes effect within this. The two reads were a sixth of the server's work per exec.
KEY_CACHE_SECONDS = 5.0
_KEYS_CACHED = 1024


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
    store: Store
    tokens: Tokens | None = None
    key_cache_seconds: float = KEY_CACHE_SECONDS

    def __post_init__(self) -> None:
        self.users = Repo(self.store, "users", User)
        self.keys = Repo(self.store, "api_keys", ApiKey)
        self._checked: dict[str, tuple[Principal, float]] = {}  # key hash -> (who, until)

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
        digest = _hash_key(key)
        checked = self._checked.get(digest)
        if checked is not None and time.monotonic() < checked[1]:
            return checked[0]
        record = self.keys.find(lookup_id(key))
        if record is None or not hmac.compare_digest(record.key_hash, digest):
            raise Unauthenticated("Invalid API key", code="AUTH_TOKEN_INVALID")
        user = self.users.find(record.owner)
        if user is None:
            raise Unauthenticated("Invalid API key", code="AUTH_TOKEN_INVALID")
        principal = Principal(id=user.id, username=user.username, role=user.role)
        if len(self._checked) >= _KEYS_CACHED:  # more keys in use than that: start again
            self._checked.clear()
        self._checked[digest] = (principal, time.monotonic() + self.key_cache_seconds)
        return principal

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

    def add_key(self, owner: str, key: str | None = None, name: str = "default") -> str:
        """Register `key` (or a new random one) for `owner`; returns the key. Idempotent."""
        # Hex on both sides: a secret with "_" in it (token_urlsafe's alphabet) would break
        # the key's three parts, and with them the lookup prefix.
        key = key or f"{KEY_PREFIX}_{secrets.token_hex(6)}_{secrets.token_hex(24)}"
        prefix = lookup_id(key)
        record = ApiKey(id=prefix, owner=owner, key_hash=_hash_key(key), name=name)
        existing = self.keys.find(prefix)
        if existing is None:
            try:
                self.keys.create(prefix, record)
            except Conflict:
                existing = self.keys.get(prefix)
        if existing is not None and existing.key_hash != record.key_hash:
            raise Conflict("An API key with that prefix exists already")
        return key

    def has_key(self, owner: str) -> bool:
        return bool(self.keys.query([("owner", "==", owner)], limit=1))
