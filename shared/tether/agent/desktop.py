"""A desktop agent (Openctrol): the X display it runs on, streamed and controlled.

It dials out twice and listens nowhere, so a PC behind NAT works with no port opened: to the
bus for its commands (power, audio, monitors, ending a session's streams: `run`), as every
agent does, and to the relay for the streams, over one WebSocket (`tether.desktop.tunnel`)
that carries every viewer. The relay authenticates that WebSocket with the API key the agent
is given (TETHER_API_KEY): that key's user owns the desktop.

Configured from the environment (`DesktopConfig.from_env`); what the control plane needs to
know of it (its display's state, monitors, HA-id allowlist) goes with each heartbeat
(`details`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tether import errors
from tether.desktop import tunnel
from tether.desktop.audio import Audio
from tether.desktop.stream import Streamer
from tether.settings import Settings

log = logging.getLogger(__name__)
VERSION = "1.0.0"  # the Openctrol agent API version it speaks
REFUSED_RETRY = 30.0  # seconds between tries once the relay refused the key
# A failure the caller should see as its own kind (the service raises it again).
_KINDS: tuple[tuple[type[errors.TetherError], str], ...] = (
    (errors.NotFound, "not_found"),
    (errors.Invalid, "invalid"),
    (errors.Unsupported, "unsupported"),
)


def _words(name: str) -> tuple[str, ...]:
    return tuple(shlex.split(os.environ.get(name, "")))


@dataclass(frozen=True)
class DesktopConfig:
    display: str
    relay_url: str  # the Tether origin the tunnel dials (ws:// or wss://)
    api_key: str
    allowed_ha_ids: tuple[str, ...] = ("home-assistant",)
    max_sessions: int = 4
    fps: float = 30.0
    # What `POST /api/v1/power` runs on this host; none configured: refused (503).
    restart_command: tuple[str, ...] = ()
    shutdown_command: tuple[str, ...] = ()
    pulse_server: str | None = None

    @classmethod
    def from_env(cls, settings: Settings) -> DesktopConfig:
        if not settings.api_key:
            raise errors.Invalid(
                "a desktop agent needs TETHER_API_KEY: the key its owner's tunnel dials with",
                field="TETHER_API_KEY",
            )
        origin = settings.public_url.rstrip("/")
        return cls(
            display=os.environ.get("DISPLAY", ":0"),
            relay_url="ws" + origin.removeprefix("http") if origin.startswith("http") else origin,
            api_key=settings.api_key,
            allowed_ha_ids=tuple(
                h.strip()
                for h in os.environ.get("TETHER_OPENCTROL_HA_IDS", "home-assistant").split(",")
                if h.strip()
            ),
            max_sessions=int(os.environ.get("TETHER_OPENCTROL_MAX_SESSIONS", "4")),
            fps=float(os.environ.get("TETHER_DESKTOP_FPS", "30")),
            restart_command=_words("TETHER_DESKTOP_RESTART_COMMAND"),
            shutdown_command=_words("TETHER_DESKTOP_SHUTDOWN_COMMAND"),
            pulse_server=os.environ.get("PULSE_SERVER") or None,
        )


def failure(error: errors.TetherError) -> dict[str, Any]:
    """A refusal the caller should get as its own kind, carried as the command's result."""
    kind = next((k for cls, k in _KINDS if isinstance(error, cls)), "unavailable")
    return {"failure": {"kind": kind, "message": error.message, "field": error.field}}


class DesktopAgent:
    def __init__(self, agent_id: str, config: DesktopConfig) -> None:
        self.agent_id = agent_id
        self.config = config
        self.streamer = Streamer(config.display, agent_id, config.fps)
        self.audio = Audio(config.pulse_server)
        self.started_at = datetime.now(UTC)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.streamer.open()
        self._thread = threading.Thread(target=self._serve, name="desktop-tunnel", daemon=True)
        self._thread.start()
        self._ready.wait()

    def stop(self) -> None:
        loop, main = self._loop, self._main
        if loop is not None and main is not None:
            loop.call_soon_threadsafe(main.cancel)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.streamer.close()
        self.audio.close()

    def _serve(self) -> None:
        async def main() -> None:
            self._loop, self._main = asyncio.get_running_loop(), asyncio.current_task()
            self._ready.set()
            await self._dial()

        with contextlib.suppress(asyncio.CancelledError):  # stopped
            asyncio.run(main())

    async def _dial(self) -> None:
        """Keep the tunnel up: websockets' client reconnects with backoff after a network
        error or a 5xx; a refusal of the key (4xx) is retried every `REFUSED_RETRY` seconds,
        as the key may be fixed on the server."""
        url = self.config.relay_url + tunnel.PATH.format(agent_id=self.agent_id)
        headers = {"Authorization": f"Bearer {self.config.api_key}"}
        while True:
            try:
                async for ws in connect(url, additional_headers=headers, max_size=1 << 20):
                    log.info("desktop tunnel up: %s", url)
                    try:
                        await self.streamer.serve(ws, ws.send)
                    except Exception:  # the connection broke: dial again
                        log.info("desktop tunnel lost", exc_info=True)
            except InvalidStatus as refused:
                log.error("the relay refused the desktop tunnel: %s", refused)
            await asyncio.sleep(REFUSED_RETRY)

    def _on_loop(self, make: Callable[[], Any], timeout: float = 10.0) -> Any:
        if self._loop is None:
            raise errors.Unavailable("the desktop agent is not running")
        return asyncio.run_coroutine_threadsafe(make(), self._loop).result(timeout)

    # -- what the control plane sees and asks --------------------------------------------------

    def details(self) -> dict[str, Any]:
        monitors = self.streamer.monitors()
        return {
            "openctrol": {
                "version": VERSION,
                "started_at": self.started_at.isoformat(),
                "remote_desktop": self.streamer.status(),
                "monitors": [m.hello() for m in monitors],
                "current_monitor_id": self.streamer.capture.monitor.id,
                "allowed_ha_ids": list(self.config.allowed_ha_ids),
                "max_sessions": self.config.max_sessions,
            }
        }

    def run(self, data: dict[str, Any]) -> dict[str, Any]:
        """A `desktop` command; a refusal comes back as `{"failure": ...}` (see `failure`)."""
        try:
            return self._run(str(data.get("action")), data)
        except errors.TetherError as refused:
            return failure(refused)

    def _run(self, action: str, data: dict[str, Any]) -> dict[str, Any]:
        if action == "monitors":
            return {
                "monitors": [m.hello() for m in self.streamer.monitors()],
                "current_monitor_id": self.streamer.capture.monitor.id,
            }
        if action == "monitor_select":
            monitor_id = str(data.get("monitor_id"))
            if not self.streamer.select(monitor_id):
                raise errors.NotFound(f"Monitor ID '{monitor_id}' not found", field="monitor_id")
            return {"monitor_id": monitor_id}
        if action == "audio_state":
            return self.audio.state()
        if action == "audio_device":
            device_id = str(data.get("device_id"))
            self.audio.set_device(device_id, data.get("volume"), data.get("muted"))
            if data.get("set_default"):
                self.audio.set_default(device_id)
            return {}
        if action == "audio_default":
            self.audio.set_default(str(data.get("device_id")))
            return {}
        if action == "audio_session":
            self.audio.set_session(
                str(data.get("session_id")),
                data.get("volume"),
                data.get("muted"),
                data.get("output_device_id"),
            )
            return {}
        if action in ("power", "restart", "shutdown"):  # {"action": "power", "power": what} too
            return self._power(str(data.get("power", action)))
        if action == "end_session":
            session_id = str(data.get("session_id"))
            return {"closed": self._on_loop(lambda: self.streamer.end(session_id))}
        raise errors.Invalid(f"unknown desktop action {action!r}", field="action")

    def _power(self, what: str) -> dict[str, Any]:
        commands = {"restart": self.config.restart_command,
                    "shutdown": self.config.shutdown_command}  # fmt: skip
        if what not in commands:
            raise errors.Invalid(f"unknown power action {what!r}", field="action")
        argv = commands[what]
        if not argv:
            env = f"TETHER_DESKTOP_{what.upper()}_COMMAND"
            raise errors.Unsupported(
                f"power action '{what}' is not configured on this agent (set {env})"
            )
        try:
            done = subprocess.run(argv, capture_output=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise errors.Unavailable(f"power action '{what}' failed: {exc}") from exc
        if done.returncode != 0:
            said = done.stderr.decode(errors="replace").strip()[:200]
            raise errors.Unavailable(
                f"power action '{what}' failed (exit {done.returncode}): {said}"
            )
        return {"status": "ok", "action": what}
