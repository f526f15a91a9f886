"""Openctrol's request and answer models: its OpenAPI schema.

Bodies are read in every casing a real client sends (the document's snake_case, the HA
integration's PascalCase, camelCase); answers carry the document's snake_case keys, which the
clients read, and the real agent's camelCase twins (/work/notes/openctrol-clients.md §0).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from tether.surfaces.http import REQUEST_ID_FIELD


def _names(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


Percent = Annotated[float, Field(ge=0, le=100)]
Fraction = Annotated[float, Field(ge=0, le=1)]


class CreateSession(Body):
    ha_id: str = Field(min_length=1, validation_alias=_names("ha_id", "HaId", "haId"))
    # A number (HA may send 900.0); clamped to 60-3600, 900 when not given.
    ttl_seconds: float | None = Field(
        None, validation_alias=_names("ttl_seconds", "TtlSeconds", "ttlSeconds")
    )


class Power(Body):
    action: str = Field(validation_alias=_names("action", "Action"),
                        description="restart or shutdown (wol is refused)")  # fmt: skip
    force: bool = Field(False, validation_alias=_names("force", "Force"))


class Master(Body):
    """The default output device: volume 0-100; a missing field is kept."""

    volume: Percent | None = Field(None, validation_alias=_names("volume", "Volume"))
    muted: bool | None = Field(None, validation_alias=_names("muted", "Muted"))


class Device(Body):
    """The HA integration's `{DeviceId, Volume 0-100, Muted}` or the document's `{device_id,
    volume 0.0-1.0, muted, set_default}`: the id's key says which scale `volume` is on."""

    device_id: str = Field(
        min_length=1, validation_alias=_names("device_id", "DeviceId", "deviceId")
    )
    volume: float | None = Field(None, ge=0, validation_alias=_names("volume", "Volume"))
    muted: bool | None = Field(None, validation_alias=_names("muted", "Muted"))
    set_default: bool = Field(
        False, validation_alias=_names("set_default", "SetDefault", "setDefault")
    )


class Default(Body):
    device_id: str = Field(
        min_length=1, validation_alias=_names("device_id", "DeviceId", "deviceId")
    )


class AudioSession(Body):
    session_id: str = Field(
        min_length=1, validation_alias=_names("session_id", "SessionId", "sessionId")
    )
    volume: Fraction | None = Field(None, validation_alias=_names("volume", "Volume"))
    muted: bool | None = Field(None, validation_alias=_names("muted", "Muted"))
    output_device_id: str | None = Field(
        None, validation_alias=_names("output_device_id", "OutputDeviceId", "outputDeviceId")
    )


class SelectMonitor(Body):
    monitor_id: str = Field(
        min_length=1, validation_alias=_names("monitor_id", "MonitorId", "monitorId")
    )


# -- answers ----------------------------------------------------------------------------------


class Error(BaseModel):
    error: str = Field(description="A code word: unauthorized, not_found, invalid_request, ...")
    details: str
    request_id: str = Field(description=REQUEST_ID_FIELD)


class Ok(BaseModel):
    status: str = "ok"


class RemoteDesktop(BaseModel):
    is_running: bool
    last_frame_at: str | None
    state: str
    desktop_state: str
    degraded: bool


class Health(BaseModel):
    agent_id: str
    version: str
    uptime_seconds: int
    remote_desktop: RemoteDesktop
    active_sessions: int


class SessionOut(BaseModel):
    session_id: str
    websocket_url: str = Field(description="Absolute ws:// or wss:// URL with sess and token")
    expires_at: str
    sessionId: str
    webSocketUrl: str
    expiresAt: str


class PowerDone(BaseModel):
    status: str = "ok"
    action: str


class DeviceState(BaseModel):
    id: str
    name: str
    volume: float = Field(description="0.0-1.0")
    muted: bool
    is_default: bool
    isDefault: bool


class SessionState(BaseModel):
    id: str
    name: str
    volume: float = Field(description="0.0-1.0")
    muted: bool
    output_device_id: str
    outputDeviceId: str


class AudioState(BaseModel):
    default_output_device_id: str
    defaultOutputDeviceId: str
    devices: list[DeviceState]
    sessions: list[SessionState]


class MasterStatus(BaseModel):
    volume: float = Field(description="0-100")
    muted: bool


class DeviceStatus(BaseModel):
    id: str
    name: str
    volume: float = Field(description="0-100")
    muted: bool
    is_default: bool
    isDefault: bool


class AudioStatus(BaseModel):
    master: MasterStatus
    devices: list[DeviceStatus]


class Monitor(BaseModel):
    id: str
    name: str
    resolution: str = Field(description="WIDTHxHEIGHT")
    width: int
    height: int
    is_primary: bool
    isPrimary: bool


class Monitors(BaseModel):
    monitors: list[Monitor]
    current_monitor_id: str | None
    currentMonitorId: str | None


class MonitorSelected(BaseModel):
    status: str = "ok"
    monitor_id: str
    monitorId: str
