"""Webhooks: signed POSTs to a URL a user gave, from an outbox the sweeper works through.

A delivery is a stored record (`KIND`) made in the same pass as the event it carries; the
sweeper sends the ones due, each claimed first (a compare-and-set that pushes its next attempt
a lease ahead, so two sweeps at once never both send it). A 2xx answer marks it delivered and
it is never sent again; anything else (an error, a timeout, a 5xx or any other status) is
tried again after `BACKOFF`'s next delay, and after the last one it is marked failed. A crash
between a 2xx and its mark sends it again once the lease passes: the `X-Tether-Delivery`
header is the same on every attempt, so a receiver drops what it has seen.

The body is signed: `X-Tether-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
with the session's webhook secret (`sign`, and `verify` as a receiver would).

The control plane reaches only public addresses: the URL's host is resolved, every address
checked (`refused`), and the request made to the address checked, the name kept in the Host
header and TLS's SNI (and certificate check), so a second DNS answer cannot send it elsewhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import httpx
from pydantic import Field

from tether.core.models import Record, utcnow
from tether.core.ports import Store
from tether.errors import Conflict, Invalid, NotFound
from tether.service.repo import Repo

log = logging.getLogger(__name__)

KIND = "webhook_deliveries"
MAX_URL = 2048
# Delays between attempts: 7 in all, over about 2.7 hours, then the delivery has failed.
BACKOFF = (
    timedelta(seconds=5),
    timedelta(seconds=30),
    timedelta(minutes=2),
    timedelta(minutes=10),
    timedelta(minutes=30),
    timedelta(hours=2),
)
LEASE = timedelta(minutes=1)  # a claimed delivery's next attempt, should its sender die
TIMEOUT = 5.0  # seconds an attempt may take, connect to answer
BATCH = 20  # deliveries a sweep sends at most (a backlog drains over the next sweeps)
SENDERS = 4  # of those, sent at once
# Never a webhook's target, whatever TETHER_WEBHOOK_ALLOW_PRIVATE says: the cloud's metadata
# server hands out the control plane's credentials.
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "metadata.goog"})
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
USER_AGENT = "Tether-Webhooks/1"


class Delivery(Record):
    id: str  # X-Tether-Delivery: the same on every attempt
    session_id: str
    event_id: str
    event: str  # X-Tether-Event
    url: str
    state: Literal["pending", "delivered", "failed"] = "pending"
    attempts: int = 0
    # When the sweeper next sends it; None once it is delivered or has failed (so the query
    # for those due never reads a finished one).
    next_attempt_at: datetime | None = Field(default_factory=utcnow)
    last_status: int | None = None  # the receiver's last answer's status
    last_error: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    delivered_at: datetime | None = None
    purge_at: datetime  # then the store deletes it (the sweeper, Firestore's TTL)


# -- the signature (sans I/O) -------------------------------------------------------------


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The `X-Tether-Signature` value of `body` sent at `timestamp` (unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, now: float, tolerance: float = 300) -> bool:
    """Whether `header` signs `body` with `secret`, made within `tolerance` seconds of `now`
    (what a receiver checks; the README shows the same in a few lines)."""
    parts = dict(p.partition("=")[::2] for p in header.split(","))
    try:
        timestamp = int(parts.get("t", ""))
    except ValueError:
        return False
    expected = sign(secret, body, timestamp).partition("v1=")[2]
    fresh = abs(now - timestamp) <= tolerance
    return fresh and hmac.compare_digest(expected, parts.get("v1", ""))


# -- where it may go ------------------------------------------------------------------------


def check_url(url: str, allow_private: bool | None = None) -> str:
    """`url` if it may be a webhook's (http or https, a host, no credentials in it, at most
    MAX_URL long); Invalid otherwise, naming webhook_url. With `allow_private` given, a host
    that is an address (or the metadata server's name) is checked too; names are resolved and
    checked when sent."""
    checked = _well_formed(url)
    if allow_private is not None:
        host = checked.host.lower().rstrip(".")
        why = "the metadata server" if host in METADATA_HOSTS else None
        with contextlib.suppress(ValueError):
            why = why or refused(host, allow_private)
        if why:
            raise Invalid(f"webhook_url: not an address Tether posts to ({why})",
                          field="webhook_url")  # fmt: skip
    return url


def _well_formed(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise Invalid("webhook_url: not a URL", field="webhook_url") from None
    if len(url) > MAX_URL or parsed.scheme not in ("http", "https") or not parsed.host:
        raise Invalid(
            f"webhook_url: an http(s) URL with a host, at most {MAX_URL} characters",
            field="webhook_url",
        )
    if parsed.userinfo:
        raise Invalid("webhook_url: no user or password in it", field="webhook_url")
    if parsed.fragment:
        raise Invalid("webhook_url: no #fragment", field="webhook_url")
    return parsed


def refused(address: str, allow_private: bool) -> str | None:
    """Why the control plane may not connect to `address` (an IP), or None when it may."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return "the metadata server"
    if ip.is_multicast or ip.is_unspecified:
        return "not a unicast address"
    if ip.is_global or (allow_private and (ip.is_private or ip.is_loopback or ip.is_link_local)):
        return None
    return "a private, loopback or link-local address"


class Refused(Exception):
    """The URL's host is not one the control plane may reach: never tried again."""


def resolve(host: str, port: int, allow_private: bool) -> str:
    """The address to connect to for `host`: every address it resolves to must be allowed
    (one that is not could be the one an attacker's DNS answers next)."""
    if host.lower().rstrip(".") in METADATA_HOSTS:
        raise Refused(f"{host} is the metadata server")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise OSError(f"cannot resolve {host}: {exc}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        why = refused(address, allow_private)
        if why is not None:
            raise Refused(f"{host} resolves to {why}")
    if not addresses:
        raise OSError(f"cannot resolve {host}")
    return addresses[0]


def post(
    url: str, body: bytes, headers: dict[str, str], allow_private: bool, timeout: float = TIMEOUT
) -> int:
    """POST `body` to `url` at the address `resolve` checked; the answer's status. Raises
    Refused, or OSError/httpx.HTTPError when it could not be sent."""
    parsed = httpx.URL(url)
    host = parsed.host
    address = resolve(host, parsed.port or (443 if parsed.scheme == "https" else 80), allow_private)
    extensions = {}
    try:
        ipaddress.ip_address(host)
    except ValueError:
        extensions = {"sni_hostname": host}  # the name TLS asks for and checks the certificate of
    pinned = parsed.copy_with(host=address)
    sent = {**headers, "Host": parsed.netloc.decode("ascii")}
    # No proxies from the environment (it would connect, not us) and no redirects (a 3xx
    # could name any address).
    with httpx.Client(timeout=timeout, trust_env=False, follow_redirects=False) as client:
        response = client.post(pinned, content=body, headers=sent, extensions=extensions)
        return response.status_code


def delivery_id(event_id: str) -> str:
    """One delivery per event and URL: made again for the same event, it is the same one."""
    return "dlv_" + hashlib.sha256(event_id.encode()).hexdigest()[:32]


# What the sender asks for a delivery: its body and the secret to sign it with, or None when
# there is nothing to send any more (its session is gone).
Render = Callable[[Delivery], tuple[bytes, str] | None]


@dataclass
class Webhooks:
    store: Store
    allow_private: bool = False
    timeout: float = TIMEOUT

    def __post_init__(self) -> None:
        self.repo = Repo(self.store, KIND, Delivery)

    def enqueue(self, delivery: Delivery) -> bool:
        """Put `delivery` in the outbox; False if it is there already (made by an earlier
        pass that died before it was done)."""
        try:
            self.repo.create(delivery.id, delivery)
            return True
        except Conflict:
            return False

    def send_due(self, render: Render, batch: int = BATCH) -> int:
        """Send the deliveries due (at most `batch`); returns how many were acknowledged."""
        due = self.repo.query([("next_attempt_at", "<=", utcnow())], limit=batch)
        if not due:
            return 0
        with ThreadPoolExecutor(min(SENDERS, len(due)), thread_name_prefix="webhook") as pool:
            return sum(pool.map(lambda d: self._attempt(d, render), due))

    def _claim(self, delivery: Delivery) -> Delivery | None:
        """`delivery` with one more attempt counted and its next one a lease ahead; None when
        another sweep took it first (or it is done)."""
        if delivery.state != "pending":
            return None
        claimed = delivery.model_copy()
        claimed.attempts += 1
        claimed.next_attempt_at = utcnow() + LEASE
        try:
            return self.repo.save(delivery.id, claimed)
        except (Conflict, NotFound):
            return None

    def _attempt(self, delivery: Delivery, render: Render) -> bool:
        claimed = self._claim(delivery)
        if claimed is None:
            return False
        rendered = render(claimed)
        if rendered is None:
            self._finish(claimed, "failed", None, "its session is gone")
            return False
        body, secret = rendered
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Tether-Event": claimed.event,
            "X-Tether-Delivery": claimed.id,
            "X-Tether-Signature": sign(secret, body, int(time.time())),
        }
        try:
            status = post(claimed.url, body, headers, self.allow_private, self.timeout)
        except Refused as exc:
            self._finish(claimed, "failed", None, f"refused: {exc}")
            return False
        except (OSError, httpx.HTTPError) as exc:
            self._finish(claimed, "pending", None, type(exc).__name__)
            return False
        ok = 200 <= status < 300
        self._finish(claimed, "delivered" if ok else "pending", status, "" if ok else "status")
        return ok

    def _finish(
        self,
        delivery: Delivery,
        state: Literal["pending", "delivered", "failed"],
        status: int | None,
        error: str,
    ) -> None:
        """Record an attempt's outcome: delivered, failed, or (pending) tried again after the
        next delay, unless that was the last attempt."""
        now = utcnow()
        if state == "pending" and delivery.attempts > len(BACKOFF):
            state = "failed"
        if state != "delivered":  # the receiver's URL and answer stay out of the logs
            log.info("webhook %s attempt %d: %s", delivery.id, delivery.attempts, state)

        def done(d: Delivery) -> Delivery:
            d.state, d.last_status, d.last_error = state, status, error
            if state == "pending":
                d.next_attempt_at = now + BACKOFF[d.attempts - 1]
            else:
                d.next_attempt_at = None
            if state == "delivered":
                d.delivered_at = now
            return d

        try:
            self.repo.mutate(delivery.id, done, start=delivery)
        except (Conflict, NotFound):
            log.warning("webhook %s: its outcome could not be recorded", delivery.id)
