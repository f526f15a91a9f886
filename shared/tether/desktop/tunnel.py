"""The desktop tunnel's wire format: one WebSocket from a desktop agent to the relay carries
every viewer of that agent's desktop, each a numbered channel. Pure; both ends use it.

The agent dials out (a PC behind NAT opens no port), so the relay is the WebSocket server and
the agent its client. Two kinds of message travel on it:

- Binary, a viewer's traffic: a 4-byte big-endian channel number, one kind byte, the payload.
  `TEXT` carries a text message of the viewer (its input, relay to agent) or to it (hello,
  errors, agent to relay); `FRAME` a binary message to it (an ``OFRA`` frame).
- Text, JSON control: the relay `open`s a channel for a viewer it admitted (with the session
  it belongs to and when that ends), says it `close`d (the viewer left), and that a frame was
  `sent` (written to the viewer: the agent sends the channel its next frame only then, so a
  slow viewer gets fewer frames and nothing queues). The agent `close`s a channel with a code
  and a reason (its session ended or expired).
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

PATH = "/openctrol/{agent_id}/tunnel"

TEXT = 0
FRAME = 1
_HEAD = struct.Struct(">IB")
MAX_CHANNEL = 2**32 - 1

OPEN = "open"  # relay -> agent: {"op", "ch", "session_id", "expires_at"}
CLOSE = "close"  # either way: {"op", "ch"} (+ "code", "reason" from the agent)
SENT = "sent"  # relay -> agent: {"op", "ch"}: the last frame reached the viewer's socket


class Message(NamedTuple):
    channel: int
    kind: int
    payload: bytes


def pack(channel: int, kind: int, payload: bytes) -> bytes:
    return _HEAD.pack(channel, kind) + payload


def unpack(data: bytes) -> Message:
    """`ValueError` for a message too short to carry its head, or of an unknown kind."""
    if len(data) < _HEAD.size:
        raise ValueError(f"tunnel message shorter than its {_HEAD.size}-byte head")
    channel, kind = _HEAD.unpack_from(data)
    if kind not in (TEXT, FRAME):
        raise ValueError(f"unknown tunnel message kind {kind}")
    return Message(channel, kind, data[_HEAD.size :])


def control(op: str, channel: int, **fields: Any) -> dict[str, Any]:
    return {"op": op, "ch": channel, **fields}
