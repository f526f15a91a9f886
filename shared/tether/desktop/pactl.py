"""Audio of a desktop workspace, through `pactl` run inside it: the control plane reaches a
workspace by exec alone. Pure: the shell lines to run, and the audio state (the shape
`tether.desktop.audio.Audio.state` gives) read from pactl's JSON.

The workspace's sound server is its own (`tether.service.templates.desktop_command` starts
it, a null sink on a socket in the home). What the workspace prints is the workspace's:
it is read defensively, and a value it could not have given is left out, never trusted.
"""

from __future__ import annotations

import json
import math
import shlex
from typing import Any

from tether.core.layout import PULSE_SOCKET
from tether.errors import Invalid, NotFound, Unavailable

SERVER = f'PULSE_SERVER="unix:$HOME/{PULSE_SOCKET}"'
FULL = 65536  # pactl's 100 %
_SEPARATOR = "\x1e"


def _pactl(*args: str) -> str:
    return f"{SERVER} pactl " + " ".join(shlex.quote(a) for a in args)


STATE = f"; echo {_SEPARATOR}; ".join(
    _pactl("-f", "json", *what) for what in (("info",), ("list", "sinks"), ("list", "sink-inputs"))
)


def _volume(item: dict[str, Any]) -> float:
    channels = item.get("volume")
    values = [
        c["value"]
        for c in (channels.values() if isinstance(channels, dict) else ())
        if isinstance(c, dict) and isinstance(c.get("value"), int)
    ]
    return round(min(1.0, sum(values) / len(values) / FULL), 4) if values else 0.0


def _text(value: Any, most: int = 256) -> str:
    return value[:most] if isinstance(value, str) else ""


def state(stdout: str) -> dict[str, Any]:
    """The state from `STATE`'s output; Unavailable when it is not what pactl prints."""
    try:
        info, sinks, inputs = (json.loads(part) for part in stdout.split(_SEPARATOR))
        if not isinstance(info, dict) or not isinstance(sinks, list):
            raise ValueError("not pactl's")
    except ValueError:
        raise Unavailable("The workspace's sound server did not answer") from None
    default = _text(info.get("default_sink_name"))
    names = {s.get("index"): _text(s.get("name")) for s in sinks if isinstance(s, dict)}
    devices = [
        {
            "id": _text(s.get("name")),
            "name": _text(s.get("description")) or _text(s.get("name")),
            "volume": _volume(s),
            "muted": s.get("mute") is True,
            "is_default": s.get("name") == default,
        }
        for s in sinks
        if isinstance(s, dict) and _text(s.get("name"))
    ]
    sessions = []
    for i in inputs if isinstance(inputs, list) else []:
        if not isinstance(i, dict) or not isinstance(i.get("index"), int):
            continue
        found = i.get("properties")
        props: dict[str, Any] = found if isinstance(found, dict) else {}
        name = _text(props.get("application.name")) or _text(props.get("media.name"))
        sessions.append({
            "id": str(i["index"]),
            "name": name,
            "volume": _volume(i),
            "muted": i.get("mute") is True,
            "output_device_id": names.get(i.get("sink"), ""),
        })  # fmt: skip
    return {"default_output_device_id": default, "devices": devices, "sessions": sessions}


def _raw(volume: float) -> str:
    if isinstance(volume, bool) or not isinstance(volume, int | float) or math.isnan(volume):
        raise Invalid("volume must be between 0.0 and 1.0", field="volume")
    if not 0.0 <= volume <= 1.0:
        raise Invalid("volume must be between 0.0 and 1.0", field="volume")
    return str(round(volume * FULL))


def set_device(device_id: str, volume: float | None, muted: bool | None) -> str:
    lines = []
    if volume is not None:
        lines.append(_pactl("set-sink-volume", device_id, _raw(volume)))
    if muted is not None:
        lines.append(_pactl("set-sink-mute", device_id, "1" if muted else "0"))
    return " && ".join(lines) or _pactl("get-sink-mute", device_id)  # exists, at least


def set_default(device_id: str) -> str:
    # pactl accepts an unknown name here: look for it first.
    return f"{_pactl('get-sink-mute', device_id)} >/dev/null && " + _pactl(
        "set-default-sink", device_id
    )


def set_session(
    session_id: str, volume: float | None, muted: bool | None, output: str | None
) -> str:
    if not session_id.isdigit():
        raise NotFound(f"audio session '{session_id}' not found", field="session_id")
    lines = []
    if volume is not None:
        lines.append(_pactl("set-sink-input-volume", session_id, _raw(volume)))
    if muted is not None:
        lines.append(_pactl("set-sink-input-mute", session_id, "1" if muted else "0"))
    if output:
        lines.append(_pactl("move-sink-input", session_id, output))
    # Nothing to change: only whether it exists (pactl has no getter for one stream).
    exists = f"{_pactl('list', 'short', 'sink-inputs')} | cut -f1 | grep -qx {session_id}"
    return " && ".join(lines) or exists


def failed(stderr: str, what: str) -> Exception:
    """What a pactl line that failed means: no sound server, or an unknown `what`."""
    if "onnection" in stderr:  # "Connection failure: Connection refused", and the like
        return Unavailable("The workspace's sound server is not running")
    return NotFound(f"{what} not found")
