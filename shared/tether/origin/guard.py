"""The limits every connection to the origin gets, whatever it asks for.

aiohttp parses, frames and keeps connections alive; it bounds each header line and the number
of headers, but not a request head as a whole, not how long a head may take to arrive, and not
how many connections one address holds. `Guard` sits between the transport and aiohttp's
protocol and adds those:

- a request head is at most `MAX_HEAD` bytes and `MAX_HEADERS` header lines (else 431);
- a head must be whole within `HEAD_DEADLINE` of its first byte (else 408, and the connection
  is cut: a slowloris client holds nothing for long);
- a connection that sends nothing for `KEEP_ALIVE` is closed;
- at most `per_client` connections per client address and `total` in all (else 503), so one
  client cannot take every connection from the others. Addresses of trusted proxies (a load
  balancer in front) are counted in the total only.

The guard only watches bytes between requests: from the end of one answer to the blank line
that ends the next head (where aiohttp takes over). While a request is served
(`Connections.serving`), its body and any WebSocket traffic pass untouched.

When the server stops (`Connections.drain`), no connection is taken any more, idle ones are
closed, and each connection diverted to a relayed stream (a `Splice`) is told to end.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from tether.settings import Settings
from tether.surfaces.http import closing_json_response, proxy_matcher

MAX_HEAD = 64 << 10  # bytes of request line and headers
MAX_HEADERS = 100
MAX_BODY = 32 << 20  # as Cloud Functions allows
HEAD_DEADLINE = 10.0  # seconds from a head's first byte to its end
KEEP_ALIVE = 75.0  # seconds an idle connection stays open (aiohttp's default)
WS_PING = 30.0  # seconds a relayed WebSocket's client may be silent before the relay pings it
_END = b"\r\n\r\n"
CONNECTIONS: web.AppKey[Connections] = web.AppKey("connections")
# Set on a request whose WebSocket is relayed as bytes (its connection diverted to a `Splice`):
# the server stopping ends it through the splice, never with aiohttp's frames.
RELAYED: web.RequestKey[bool] = web.RequestKey("relayed", bool)


@dataclass
class Limits:
    total: int = 1024
    per_client: int = 128
    trusted_proxies: tuple[str, ...] = ()  # addresses or networks (CIDR)
    head_deadline: float = HEAD_DEADLINE
    keep_alive: float = KEEP_ALIVE
    ws_ping: float = WS_PING  # one silent half as long again after a ping is let go; 0: never

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            settings.max_connections,
            settings.max_connections_per_client,
            settings.trusted_proxies,
            ws_ping=settings.ws_ping_interval,
        )

    def trusted(self, address: str) -> bool:
        return proxy_matcher(self.trusted_proxies)(address)


class Connections:
    """The connections the origin holds: counted per client address, and found by transport
    when a request starts and ends."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.per_address: Counter[str] = Counter()
        self.open: dict[asyncio.BaseTransport, Guard] = {}
        self.stopping = asyncio.Event()  # set by `drain`

    def factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], Guard]:
        return lambda: Guard(self, inner())

    def guard(self, transport: asyncio.BaseTransport | None) -> Guard | None:
        return self.open.get(transport) if transport is not None else None

    def serving(self, transport: asyncio.BaseTransport | None) -> Guarding:
        """`with connections.serving(request.transport):` around a request's handling."""
        return Guarding(self.guard(transport))

    def admit(self, guard: Guard) -> str | None:
        """Why the connection is refused, or None."""
        if self.stopping.is_set():
            return "The server is stopping; try again"
        if len(self.open) >= self.limits.total:
            return "Too many connections; try again shortly"
        address = guard.address
        if not self.limits.trusted(address) and self.per_address[address] >= self.limits.per_client:
            return "Too many connections from your address; close some and try again"
        return None

    def drain(self) -> None:
        """The server stops: no connection is taken any more, idle ones are closed (a request
        whose head has begun is served, and its connection closed after its answer), and each
        relayed stream is told to end (`Splice.going_away`; again on each call, which it
        ignores)."""
        self.stopping.set()
        for guard in list(self.open.values()):
            if guard.diverted is not None:
                guard.diverted.going_away()
            elif not guard.busy and not guard.head and not guard.head_seen:
                guard.transport.close()

    def added(self, guard: Guard) -> None:
        self.open[guard.transport] = guard
        self.per_address[guard.address] += 1

    def removed(self, guard: Guard) -> None:
        if self.open.pop(guard.transport, None) is not None:
            self.per_address[guard.address] -= 1
            if not self.per_address[guard.address]:
                del self.per_address[guard.address]


class Guarding:
    """A request being served on a connection; `ending` once its answer ends the connection
    (what follows is the rest of a refused body, not a head)."""

    def __init__(self, guard: Guard | None) -> None:
        self.guard = guard
        self.ending = False
        self.answered = False

    def __enter__(self) -> Guarding:
        if self.guard is not None:
            self.guard.busy += 1
        return self

    def answer_sent(self) -> None:
        """The answer is out while the handler still works (deferred work): the client may
        send its next request now, whose head is to be watched from here, not from the end of
        that work (by then its body would be taken for a head)."""
        if not self.answered:
            self.answered = True
            self._done()

    def __exit__(self, *_: object) -> None:
        if not self.answered:
            self._done()

    def _done(self) -> None:
        if self.guard is not None:
            self.guard.busy -= 1
            if not self.guard.busy and not self.ending:
                self.guard.between_requests()
            elif self.ending:
                self.guard.head_seen = True  # nothing more is watched: aiohttp drops the rest


class Splice(asyncio.Protocol):
    """What a diverted connection's bytes go to instead of aiohttp (a relayed stream)."""

    def going_away(self) -> None:
        """The server is stopping: end the connection soon, as its protocol ends one (a
        WebSocket: a close frame, 1001). Called again until the connection is gone."""
        raise NotImplementedError


# A request's `Guarding`, for a handler that answers before it ends.
SERVING: web.RequestKey[Guarding] = web.RequestKey("serving", Guarding)


class Guard(asyncio.Protocol):
    """One connection's limits, in front of aiohttp's protocol (`inner`)."""

    def __init__(self, connections: Connections, inner: asyncio.Protocol) -> None:
        self.connections = connections
        self.limits = connections.limits
        self.inner = inner
        self.transport: asyncio.Transport
        self.address = ""
        self.busy = 0  # requests being served
        self.head = bytearray()  # of the next request, until its end is seen
        self.head_seen = False  # its end seen: aiohttp has it, a handler will start
        self.timer: asyncio.TimerHandle | None = None
        self.diverted: Splice | None = None  # takes the bytes from aiohttp

    def divert(self, protocol: Splice) -> None:
        """From now on the connection's bytes and events go to `protocol`, not aiohttp (whose
        handler still runs, and learns when the connection is lost)."""
        self.diverted = protocol

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.address = peer[0] if isinstance(peer, tuple) else str(peer or "")
        refused = self.connections.admit(self)
        if refused is not None:
            self._refuse(503, refused)
            return
        self.connections.added(self)
        self.inner.connection_made(transport)
        self._arm(self.limits.keep_alive)

    def data_received(self, data: bytes) -> None:
        if self.diverted is not None:
            self.diverted.data_received(data)
            return
        if self.transport.is_closing():
            return
        if not self.busy and not self.head_seen and not self._watch_head(data):
            return
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return (self.diverted or self.inner).eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.connections.open.get(self.transport) is self:
            self.connections.removed(self)
            if self.diverted is not None:
                self.diverted.connection_lost(exc)
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        (self.diverted or self.inner).pause_writing()

    def resume_writing(self) -> None:
        (self.diverted or self.inner).resume_writing()

    # -- the head between requests ------------------------------------------------------------

    def _watch_head(self, data: bytes) -> bool:
        """Whether `data` may go on to aiohttp (False: the connection was refused)."""
        if not self.head:
            self.head_seen = False
            if not data.lstrip(b"\r\n"):  # blank lines before a request are allowed
                return True
            self._arm(self.limits.head_deadline)  # a head has begun
        start = max(0, len(self.head) - 3)
        self.head += data
        end = self.head.find(_END, start)
        head = self.head if end < 0 else self.head[:end]
        if len(head) > MAX_HEAD or head.count(b"\r\n") > MAX_HEADERS:
            self._refuse(431, "Request head too large: at most 64 KiB and 100 headers")
            return False
        if end >= 0:  # whole: aiohttp reads it, and a handler serves it (or aiohttp answers)
            self.head = bytearray()
            self.head_seen = True
            self._arm(self.limits.keep_alive)
        return True

    def between_requests(self) -> None:
        """A request's answer is done: the next head is watched from here."""
        self.head = bytearray()
        self.head_seen = False
        if not self.transport.is_closing():
            self._arm(self.limits.keep_alive)

    # -- timers and refusals ------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self.timer = asyncio.get_running_loop().call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expired(self) -> None:
        self.timer = None
        if self.busy:  # served: the timer starts again when the answer is done
            return
        if self.head:
            self._refuse(408, "Request head not received in time")
        else:
            self.transport.close()  # idle: nothing to answer

    def _refuse(self, status: int, detail: str) -> None:
        self.transport.write(closing_json_response(status, {"detail": detail}))
        self.transport.close()
