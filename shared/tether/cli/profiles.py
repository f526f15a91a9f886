"""Saved connections: `~/.config/tether/config.toml` (under XDG_CONFIG_HOME when set), written
by `tether login`, read by every client command.

    [profiles.default]
    url = "http://127.0.0.1:8080"
    api_key = "tether_..."

Which profile: `--profile NAME`, else TETHER_PROFILE, else `default`. The URL and key each come
from the first that has one: the option (--url, --api-key), the variable (TETHER_URL,
TETHER_API_KEY), the profile, then (the URL only) http://127.0.0.1:8080."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_PROFILE = "default"


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tether" / "config.toml"


class ProfileError(Exception):
    """A profile asked for that is not there (`missing`), or a config file that cannot be
    read."""

    def __init__(self, message: str, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


def load(path: Path | None = None) -> dict[str, Any]:
    path = path or config_path()
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ProfileError(f"cannot read {path}: {exc}") from exc


def save(name: str, url: str, api_key: str, path: Path | None = None) -> Path:
    """Add or replace profile `name`, keeping the others. The file holds keys: it is made
    0600 before anything is written to it, and its directory 0700."""
    path = path or config_path()
    config = load(path)
    profiles = config.setdefault("profiles", {})
    profiles[name] = {"url": url, "api_key": api_key}
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask, or a stale temp file's mode
        with os.fdopen(fd, "wb") as f:
            tomli_w.dump(config, f)
        os.replace(temp, path)  # a reader sees the old file or the new, never half of one
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


@dataclass(frozen=True)
class Connection:
    url: str
    api_key: str | None
    profile: str | None  # the profile read, when one was


def resolve(url: str | None, api_key: str | None, profile: str | None) -> Connection:
    """Where to connect and with which key (see the module's doc for the order). A profile
    named by --profile or TETHER_PROFILE must exist; `default` may be missing."""
    chosen = profile or os.environ.get("TETHER_PROFILE") or None
    url = url or os.environ.get("TETHER_URL") or None
    api_key = api_key or os.environ.get("TETHER_API_KEY") or None
    saved: dict[str, Any] = {}
    if not (url and api_key) or chosen:
        profiles = load().get("profiles", {})
        name = chosen or DEFAULT_PROFILE
        if isinstance(profiles, dict) and isinstance(profiles.get(name), dict):
            saved = profiles[name]
        elif chosen:
            raise ProfileError(
                f"no profile {chosen!r} in {config_path()} (`tether login "
                f"--profile {chosen}` saves one)",
                missing=True,
            )
    read = bool(saved) and (chosen or DEFAULT_PROFILE)
    return Connection(
        url=url or _str(saved.get("url")) or DEFAULT_URL,
        api_key=api_key or _str(saved.get("api_key")),
        profile=read or None,
    )


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
