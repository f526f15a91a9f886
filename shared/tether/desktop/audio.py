"""Audio of a Linux desktop through its PulseAudio (or PipeWire-pulse) server, via `pulsectl`.

The Openctrol agent exposes Windows' audio endpoints and per-application sessions. On Linux the
sound server has the same two things: sinks are the devices (id = the sink's name, which stays
the same across server restarts, unlike its index) and sink inputs, the streams clients play, are
the sessions (id = the stream's index: a stream has no stable name). Volumes are 0.0-1.0, the
average of the channels; setting one sets every channel. A volume boosted above 100% on the
server is reported as 1.0, so readers always see the documented range.

One `Audio` holds one connection, opened on first use and dropped on any connection failure so
the next call reconnects (the server may have restarted). `pulsectl.Pulse` is not thread-safe:
every call holds the object's lock. pulsectl waits for replies without limit, so each call runs
under our own deadline, enforced in the poll function we give libpulse's main loop.

Errors are `tether.errors`: `Invalid` for a bad volume, `NotFound` for an unknown id (or an
object that vanished mid-call), `Unavailable` when no sound server answers; no pulsectl
exception escapes.
"""

from __future__ import annotations

import contextlib
import logging
import math
import select
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from tether.errors import Invalid, NotFound, Unavailable

T = TypeVar("T")
log = logging.getLogger(__name__)

CLIENT_NAME = "tether-desktop-agent"
TIMEOUT = 10.0
"""Seconds one call may take by default, connecting included."""
_POLL_ALWAYS = select.POLLERR | select.POLLHUP | select.POLLNVAL  # reported even if not asked


def _poll_failed(kind: type[BaseException], err: BaseException, tb: TracebackType) -> None:
    """pulsectl's hook for an exception in our poll (a bug): logged; libpulse then sees a failed
    poll, which pulsectl raises and the call reports as Unavailable."""
    log.error("audio: poll failed", exc_info=(kind, err, tb))


def _pulsectl() -> Any:
    """The pulsectl module. Imported on first use: importing it loads libpulse, which a host may
    lack; that is "no sound server" for the caller, not an import error for the whole agent."""
    try:
        import pulsectl
    except Exception as e:  # OSError from ctypes when libpulse is missing
        raise Unavailable(f"no sound server: libpulse is not usable ({e})") from e
    return pulsectl


def _volume(v: float | None) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= v <= 1.0:
        # NaN fails the range check too.
        raise Invalid("volume must be between 0.0 and 1.0", field="volume")
    return float(v)


def _flat(volume: Any) -> float:
    return round(min(1.0, float(volume.value_flat)), 4)


def _session_name(stream: Any) -> str:
    props = stream.proplist or {}
    return str(props.get("application.name") or props.get("media.name") or stream.name or "")


class Audio:
    """Devices (sinks) and sessions (client streams) of one sound server; safe across threads.

    `timeout` bounds each call, connecting included: a server that accepts but does not answer
    (stopped, wedged) is `Unavailable` after it rather than a caller stuck for good. Keep it under
    libpulse's own 30 s reply timeout: past that, pulsectl can wait for ever."""

    def __init__(self, server: str | None = None, *, timeout: float = TIMEOUT) -> None:
        self._server = server  # None: libpulse's own lookup (PULSE_SERVER, then the defaults)
        self._timeout = timeout
        self._pulse: Any = None
        self._lock = threading.Lock()
        self._deadline = 0.0
        self._timed_out = False

    # The connection

    def _connect(self) -> Any:
        if self._pulse is not None and self._pulse.connected:
            return self._pulse
        self._drop()
        pulse = _pulsectl().Pulse(CLIENT_NAME, server=self._server, connect=False)
        pulse.set_poll_func(lambda fds, wait: self._poll(pulse, fds, wait), _poll_failed)
        try:
            # No `timeout=`: pulsectl 24.12 then waits it out even once connected; _poll bounds it.
            pulse.connect(autospawn=False)
        except Exception as e:
            pulse.close()
            where = self._server or "the default server"
            raise self._unavailable(f"cannot connect to {where}", e) from e
        self._pulse = pulse
        return pulse

    def _poll(self, pulse: Any, fds: list[Any], wait: float) -> int:
        """libpulse's poll(), with our deadline. pulsectl waits for a reply as long as the
        connection is up, and libpulse's own 30 s reply timeout does not take it down (a timed
        out server_info() even hangs pulsectl for good): past the deadline the connection is
        marked down, which ends pulsectl's wait, and the caller reopens it."""
        left = self._deadline - time.monotonic()
        if left <= 0:
            self._timed_out = True
            pulse.connected = False
            return 0
        wait = left if wait < 0 else min(wait, left)  # wait < 0: libpulse has no timer due
        poller = select.poll()
        events: dict[int, int] = {}
        for f in fds:
            events[f.fd] = events.get(f.fd, 0) | f.events
        for fd, mask in events.items():
            poller.register(fd, mask)
        ready = dict(poller.poll(math.ceil(wait * 1000)))
        for f in fds:
            f.revents = ready.get(f.fd, 0) & (f.events | _POLL_ALWAYS)
        return sum(1 for f in fds if f.revents)

    def _unavailable(self, what: str, cause: BaseException) -> Unavailable:
        if self._timed_out:
            where = self._server or "the default server"
            what = f"{where} did not answer within {self._timeout:g} s"
        return Unavailable(f"no sound server: {what} ({cause})")

    def _drop(self) -> None:
        pulse, self._pulse = self._pulse, None
        if pulse is not None:
            # Closing a dead connection: nothing left to free or report.
            with contextlib.suppress(Exception):
                pulse.close()

    def _run(self, work: Callable[[Any], T], gone: str) -> T:
        """`work(pulse)` under the lock, within the timeout. A pulsectl failure with the
        connection still up means the object vanished mid-call (`gone` names it). A connection
        found dead is reopened and `work` retried once (every operation here is idempotent), so
        a server restart between calls goes unnoticed; if that fails too, the server is gone."""
        pulsectl = _pulsectl()
        with self._lock:
            self._deadline = time.monotonic() + self._timeout
            self._timed_out = False
            for attempt in (1, 2):
                pulse = self._connect()
                try:
                    return work(pulse)
                except (
                    pulsectl.PulseError,
                    pulsectl.PulseDisconnected,
                    pulsectl._pulsectl.pa.CallError,
                ) as e:
                    if pulse.connected and isinstance(e, pulsectl.PulseError):
                        raise NotFound(f"{gone} not found") from e
                    self._drop()
                    if attempt == 2 or self._timed_out:
                        raise self._unavailable("the connection was lost", e) from e
            raise AssertionError("unreachable")

    @staticmethod
    def _sink(pulse: Any, device_id: str) -> Any:
        for sink in pulse.sink_list():
            if sink.name == device_id:
                return sink
        raise NotFound(f"audio device {device_id!r} not found")

    @staticmethod
    def _stream(pulse: Any, session_id: str) -> Any:
        for stream in pulse.sink_input_list():
            if str(stream.index) == session_id:
                return stream
        raise NotFound(f"audio session {session_id!r} not found")

    # The interface

    def state(self) -> dict[str, Any]:
        def work(pulse: Any) -> dict[str, Any]:
            default = str(pulse.server_info().default_sink_name or "")
            sinks = pulse.sink_list()
            by_index = {s.index: s.name for s in sinks}
            return {
                "default_output_device_id": default,
                "devices": [
                    {
                        "id": s.name,
                        "name": s.description or s.name,
                        "volume": _flat(s.volume),
                        "muted": bool(s.mute),
                        "is_default": s.name == default,
                    }
                    for s in sinks
                ],
                "sessions": [
                    {
                        "id": str(i.index),
                        "name": _session_name(i),
                        "volume": _flat(i.volume),
                        "muted": bool(i.mute),
                        "output_device_id": by_index.get(i.sink, ""),
                    }
                    for i in pulse.sink_input_list()
                ],
            }

        return self._run(work, "audio state")

    def set_device(
        self, device_id: str, volume: float | None = None, muted: bool | None = None
    ) -> None:
        level = _volume(volume)

        def work(pulse: Any) -> None:
            sink = self._sink(pulse, device_id)
            if level is not None:
                pulse.volume_set_all_chans(sink, level)
            if muted is not None:
                pulse.mute(sink, bool(muted))

        self._run(work, f"audio device {device_id!r}")

    def set_default(self, device_id: str) -> None:
        def work(pulse: Any) -> None:
            pulse.sink_default_set(self._sink(pulse, device_id).name)

        self._run(work, f"audio device {device_id!r}")

    def set_session(
        self,
        session_id: str,
        volume: float | None = None,
        muted: bool | None = None,
        output_device_id: str | None = None,
    ) -> None:
        level = _volume(volume)

        def work(pulse: Any) -> None:
            stream = self._stream(pulse, session_id)
            target = None if output_device_id is None else self._sink(pulse, output_device_id)
            if level is not None:
                pulse.volume_set_all_chans(stream, level)
            if muted is not None:
                pulse.mute(stream, bool(muted))
            if target is not None and target.index != stream.sink:
                pulse.sink_input_move(stream.index, target.index)

        gone = f"audio session {session_id!r}"
        if output_device_id is not None:
            gone += f" or device {output_device_id!r}"
        self._run(work, gone)

    def close(self) -> None:
        with self._lock:
            self._drop()
