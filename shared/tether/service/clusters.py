"""Kubently clusters: the cluster agents that run kubectl, and the tokens third-party
executors of a cluster authenticate with (stored as hashes, found by the prefix they carry)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from tether.core.models import Agent, ClusterToken, utcnow
from tether.core.ports import Store
from tether.errors import Conflict, Invalid, NotFound, Unauthenticated
from tether.service.agents import Agents
from tether.service.repo import Repo

PLATFORM = "cluster"
TOKEN_KIND = "cluster_tokens"
# A token an operator brings (from a vault, say), as Kubently takes it.
CUSTOM_TOKEN = re.compile(r"[A-Za-z0-9_-]{32,128}")
# Kubently's cluster id: lowercase alphanumerics and hyphens, not at either end.
CLUSTER_ID = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# How recently a token's use is written down (more often would cost a write per poll), and how
# recently an executor must have been heard from to count as connected.
_USE_NOTED_EVERY = 30.0
SEEN_WITHIN = 90.0


def check_cluster_id(cluster_id: str, field: str = "cluster_id") -> str:
    if not CLUSTER_ID.fullmatch(cluster_id):
        raise Invalid("Must be lowercase alphanumeric with hyphens", field=field, value=cluster_id)
    return cluster_id


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()  # 190+ random bits: a fast hash is right


@dataclass
class Cluster:
    """A cluster as Kubently shows it: its agent (if one ever registered) and its tokens."""

    id: str
    agent: Agent | None  # a Tether cluster agent's record
    online: bool  # that agent's heartbeats are coming
    token: ClusterToken | None  # for third-party executors

    def connected(self, now: datetime) -> bool:
        """Its agent is online, or an executor of it was heard from lately."""
        used = self.token.last_used if self.token else None
        return self.online or (used is not None and (now - used).total_seconds() < SEEN_WITHIN)

    @property
    def last_seen(self) -> datetime | None:
        seen = [t for t in (self.agent and self.agent.last_heartbeat,
                            self.token and self.token.last_used) if t]  # fmt: skip
        return max(seen) if seen else None


@dataclass
class Clusters:
    store: Store
    agents: Agents

    def __post_init__(self) -> None:
        self.tokens = Repo(self.store, TOKEN_KIND, ClusterToken)

    def _agents(self) -> list[Agent]:
        return self.agents.repo.query([("platform", "==", PLATFORM)], limit=1000)

    def list(self) -> list[Cluster]:
        """Every cluster with an agent or a token, by id."""
        agents = {a.id: a for a in self._agents()}
        tokens = {t.cluster_id: t for t in self.tokens.query(limit=1000)}
        return [self._cluster(cid, agents.get(cid), tokens.get(cid))
                for cid in sorted({*agents, *tokens})]  # fmt: skip

    def _cluster(self, cluster_id: str, agent: Agent | None, token: ClusterToken | None) -> Cluster:
        online = agent is not None and self.agents.is_online(agent)
        return Cluster(cluster_id, agent, online, token)

    def get(self, cluster_id: str) -> Cluster:
        """A cluster commands can be sent to: a cluster agent registered under its id, or a
        token for a third-party executor of it. NotFound otherwise."""
        agent = self.agents.repo.find(cluster_id)
        if agent is not None and agent.platform != PLATFORM:
            agent = None  # a workspace agent of that name is not a cluster
        token = self.tokens.find(cluster_id) if CLUSTER_ID.fullmatch(cluster_id) else None
        if agent is None and token is None:
            raise NotFound(
                f"Cluster '{cluster_id}' not found", field="cluster_id", code="NOT_FOUND"
            )
        return self._cluster(cluster_id, agent, token)

    # -- executor tokens ---------------------------------------------------------------------
    # One per cluster, as Kubently keeps it (stored under the cluster's id, as a hash).

    def new_token(
        self, cluster_id: str, created_by: str, token: str | None = None
    ) -> tuple[ClusterToken, str]:
        """A token for `cluster_id`'s executors (`token`, or a random one); shown this once.
        Conflict while the cluster has one (revoke it first)."""
        check_cluster_id(cluster_id)
        if token is not None and not CUSTOM_TOKEN.fullmatch(token):
            raise Invalid("A token is 32-128 letters, digits, '-' or '_'", field="token")
        token = token or secrets.token_hex(32)
        record = ClusterToken(id=cluster_id, cluster_id=cluster_id, token_hash=_hash(token),
                              created_by=created_by)  # fmt: skip
        try:
            return self.tokens.create(cluster_id, record), token
        except Conflict:
            raise Conflict(
                f"Token already exists for cluster '{cluster_id}'. Delete it first to create a "
                "new one.",
                code="TOKEN_EXISTS",
            ) from None

    def revoke(self, cluster_id: str) -> None:
        """Revoke the cluster's token: an executor holding it is refused from its next
        request. NotFound when it has none."""
        if not self.tokens.delete(cluster_id):
            raise NotFound(f"No token found for cluster '{cluster_id}'", code="NOT_FOUND")

    def executor(self, authorization: str | None, cluster_id: str | None) -> str:
        """The cluster an executor's `Authorization: Bearer <token>` and `X-Cluster-ID` name,
        when the token is that cluster's."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("Authorization must be 'Bearer <agent token>'")
        if not cluster_id:
            raise Unauthenticated("X-Cluster-ID header missing", field="X-Cluster-ID")
        record = self.tokens.find(cluster_id) if CLUSTER_ID.fullmatch(cluster_id) else None
        if record is None or not hmac.compare_digest(record.token_hash, _hash(token)):
            raise Unauthenticated("Invalid agent token or cluster ID")
        self._note_use(record)
        return cluster_id

    def _note_use(self, record: ClusterToken) -> None:
        now = utcnow()
        if record.last_used and (now - record.last_used).total_seconds() < _USE_NOTED_EVERY:
            return

        def note(t: ClusterToken) -> ClusterToken:
            t.last_used = now
            return t

        # Revoked meanwhile (refused next time), or noted by a parallel request: either is fine.
        with contextlib.suppress(NotFound, Conflict):
            self.tokens.mutate(record.id, note, start=record)
