"""Settings from the environment (see DESIGN.md, "Local stack")."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

from tether.core.durations import parse_duration


def _env(name: str, default: str) -> str:
    return os.environ.get(name, "") or default


# Requests a minute StreamSpace and Kubently take from one caller (a user, or an address
# before sign-in), per kind: sign-ins, session creates, anything else; and kubectl commands a
# minute one Kubently cluster takes, from everyone.
RATE_LIMITS = {"login": 5, "create": 10, "api": 100, "commands": 50}


def rate_limits(text: str) -> dict[str, int]:
    """`login=5,create=10,api=100` (any of them; the rest keep their defaults)."""
    limits = dict(RATE_LIMITS)
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, _, count = part.partition("=")
        if kind.strip() not in limits or not count.strip().isdigit():
            kinds = ", ".join(f"{k}=N" for k in RATE_LIMITS)
            raise ValueError(f"TETHER_RATE_LIMITS: {part!r} is not one of {kinds}")
        limits[kind.strip()] = int(count)
    return limits


def warm_pool(text: str) -> dict[str, int]:
    """`shell=2,desktop=1`: workspaces of each template a local agent keeps started ahead."""
    sizes = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, count = part.partition("=")
        if not name.strip() or not count.strip().isdigit():
            raise ValueError(f"TETHER_WARM_POOL: {part!r} is not template=N")
        sizes[name.strip()] = int(count)
    return sizes


def clusters(text: str) -> dict[str, str]:
    """`prod=/path/to/kubeconfig,dev`: Kubently clusters `tether up` runs a cluster agent for,
    each with its kubeconfig (none: kubectl's own default, $KUBECONFIG or ~/.kube/config)."""
    found = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, kubeconfig = part.partition("=")
        if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", name.strip()):
            raise ValueError(f"TETHER_CLUSTERS: {name.strip()!r} is not a cluster id")
        found[name.strip()] = kubeconfig.strip()
    return found


# OnMemOS providers a local agent may serve when no agent of theirs is online; `tether up`'s
# stack stands in for these unless TETHER_LOCAL_STANDS_IN says otherwise.
STANDS_IN = ("gke", "cloud_run")
PROVIDERS = ("gke", "cloud_run", "workstations")


def stands_in(text: str) -> tuple[str, ...] | None:
    """`gke,cloud_run` (any of the providers), or `none`; empty: None, the default of where
    it runs (`Settings.local_stack`)."""
    text = text.strip()
    if not text:
        return None
    if text == "none":
        return ()
    names = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    for name in names:
        if name not in PROVIDERS:
            raise ValueError(
                f"TETHER_LOCAL_STANDS_IN: {name!r} is not one of {', '.join(PROVIDERS)} (or none)"
            )
    return names


def machine_memory() -> int:
    """The machine's physical memory in bytes."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def default_capacity(memory: int | None = None) -> int:
    """Workspaces a local agent takes: one per whole GiB of `memory` (the machine's when None;
    a GiB is a workspace's default memory limit), at least one."""
    if memory is None:
        memory = machine_memory()
    return max(1, memory // (1 << 30))


@dataclass(frozen=True)
class Settings:
    port: int = 8080
    home: Path = Path(".tether")
    store: str = "sqlite"
    bus: str = "local"
    project: str = "tether-local"
    firestore_database: str = "(default)"
    admin_password: str | None = None
    api_key: str | None = None
    # Seconds an agent may go without a heartbeat before it counts as offline.
    agent_grace: float = 30.0
    heartbeat_interval: float = 10.0
    # A command not acked within this many seconds is published again by the sweeper.
    republish_after: float = 10.0
    public_url: str = ""
    max_connections: int = 1024  # HTTP/WebSocket connections held at once
    max_connections_per_client: int = 128  # of those, from one client address
    # Seconds a relayed WebSocket's client may send nothing before the relay pings it; one
    # that does not answer within half that again has the stream closed (both legs freed).
    ws_ping_interval: float = 30.0
    # Proxies (addresses or CIDR networks) whose X-Forwarded-For names the client: the cloud
    # load balancer's. Their connections count in the total only.
    trusted_proxies: tuple[str, ...] = ()
    rate_limits: dict[str, int] = field(default_factory=lambda: dict(RATE_LIMITS))
    jwt_secret: str | None = None  # None: generated once and kept in `home`
    agent_id: str = ""  # the local agent's id; empty: local-<hostname>
    # An agent's platform and where its workspaces go (`python -m tether.agent`).
    platform: str = "local"  # local | cloud_run | gke | cluster (Kubently's kubectl)
    region: str = "local"
    sessions_bucket: str = ""  # per-session storage in Cloud Storage; empty: none
    workspace_namespace: str = "tether-workspaces"  # gke
    # gke: the cluster's DNS domain. With Cloud DNS's VPC scope (terraform/modules/gke) the
    # relay resolves a workspace's Service name from outside the cluster too.
    gke_cluster_domain: str = "cluster.local"
    # What each session's runtime token is derived from (tether.runtime.auth): shared by the
    # relay and the agents whose workspaces are reached over a network (gke). None: the JWT
    # secret, so a local stack needs neither.
    runtime_key: str | None = None
    workspace_service_account: str = ""  # what workspaces run as; empty: the default
    workspace_image: str = ""  # the image with the runtime; empty: each template's own
    sandbox: str = "bubblewrap"  # local workspaces: bubblewrap | none (unconfined)
    agent_capacity: int = field(default_factory=default_capacity)  # workspaces at once
    # How long a terminated session stays readable before the store deletes it.
    session_retention: timedelta = timedelta(days=7)
    # How long the audit log keeps each record, and Kubently's audit trail each kubectl run.
    audit_retention: timedelta = timedelta(days=30)
    kubectl: str = "kubectl"  # the binary a cluster agent runs
    # Kubently clusters `tether up` runs a cluster agent for: id -> kubeconfig ("": default).
    clusters: dict[str, str] = field(default_factory=dict)
    # Workspaces of each template a local agent keeps started ahead (0, or none: no pool).
    warm_pool: dict[str, int] = field(default_factory=dict)
    # `tether up`'s serving processes (more than one: the bus is a SQLite file they share).
    workers: int = 1
    # Providers (gke, cloud_run) whose sessions a local agent serves when no agent of theirs
    # is online; None: `tether up`'s default (STANDS_IN), none elsewhere.
    local_stands_in: tuple[str, ...] | None = None
    # SentinelStacks' registry: where image artifacts are kept. file:///dir, gs://bucket/prefix
    # or s3://bucket/prefix (an S3-compatible store; its endpoint from AWS_ENDPOINT_URL).
    # Empty: <home>/registry.
    registry_url: str = ""
    registry_max_bytes: int = 8 << 20  # the largest image a push takes
    # Terminal recordings (tether.service.recordings): where their parts are kept, like
    # registry_url (empty: <home>/recordings), and for how long after they start.
    recordings_url: str = ""
    recording_retention: timedelta = timedelta(days=30)
    # The language model SentinelStacks' agents call: offline (not a language model: a fixed,
    # documented stand-in), openai (any OpenAI-compatible endpoint) or vertex (Gemini).
    model_provider: str = "offline"
    model_base_url: str = ""  # openai: the endpoint, e.g. http://127.0.0.1:11434/v1
    model_api_key: str | None = None  # openai: its key (a Secret Manager secret in the cloud)
    model_name: str = ""  # every agent's model; empty: each image's base model
    vertex_location: str = "us-central1"
    # Origins a browser may call the API from (CORS) and open WebSockets from: exact
    # origins, or "*" for any. Empty: the origin itself only.
    cors_origins: tuple[str, ...] = ()
    # How long before a session's TTL or idle timeout ends it the session is warned (its
    # events, its webhook), unless its create asked otherwise.
    expiry_warning: timedelta = timedelta(minutes=5)
    # Whether webhooks may go to private, loopback or link-local addresses (never the
    # metadata server): off, as the control plane's own network is no one's to reach.
    webhook_allow_private: bool = False
    # Spans (tether.tracing): cloud (to Cloud Trace), console (JSON on stderr) or off; empty:
    # cloud in the cloud, off elsewhere.
    tracing: str = ""
    # Serving on Google Cloud (Cloud Run and Cloud Functions set K_SERVICE): no generated
    # defaults for secrets there.
    in_cloud: bool = False

    def local_stack(self) -> Settings:
        """These settings as `tether up` runs them: its local agent stands in for gke and
        cloud_run unless TETHER_LOCAL_STANDS_IN says otherwise."""
        if self.local_stands_in is not None:
            return self
        return replace(self, local_stands_in=STANDS_IN)

    @classmethod
    def from_env(cls) -> Settings:
        port = int(_env("TETHER_PORT", "8080"))
        return cls(
            port=port,
            home=Path(_env("TETHER_HOME", ".tether")).resolve(),
            store=_env("TETHER_STORE", "sqlite"),
            bus=_env("TETHER_BUS", "local"),
            project=_env("GOOGLE_CLOUD_PROJECT", "tether-local"),
            firestore_database=_env("TETHER_FIRESTORE_DATABASE", "(default)"),
            admin_password=os.environ.get("TETHER_ADMIN_PASSWORD") or None,
            api_key=os.environ.get("TETHER_API_KEY") or None,
            agent_grace=float(_env("TETHER_AGENT_GRACE", "30")),
            heartbeat_interval=float(_env("TETHER_HEARTBEAT_INTERVAL", "10")),
            republish_after=float(_env("TETHER_REPUBLISH_AFTER", "10")),
            public_url=_env("TETHER_PUBLIC_URL", f"http://127.0.0.1:{port}"),
            max_connections=int(_env("TETHER_MAX_CONNECTIONS", "1024")),
            max_connections_per_client=int(_env("TETHER_MAX_CONNECTIONS_PER_CLIENT", "128")),
            ws_ping_interval=float(_env("TETHER_WS_PING_INTERVAL", "30")),
            trusted_proxies=tuple(
                p.strip() for p in _env("TETHER_TRUSTED_PROXIES", "").split(",") if p.strip()
            ),
            jwt_secret=os.environ.get("TETHER_JWT_SECRET") or None,
            agent_id=_env("TETHER_AGENT_ID", ""),
            platform=_env("TETHER_PLATFORM", "local"),
            region=_env("TETHER_REGION", "local"),
            sessions_bucket=_env("TETHER_SESSIONS_BUCKET", ""),
            workspace_namespace=_env("TETHER_WORKSPACE_NAMESPACE", "tether-workspaces"),
            gke_cluster_domain=_env("TETHER_GKE_CLUSTER_DOMAIN", "cluster.local"),
            runtime_key=os.environ.get("TETHER_RUNTIME_KEY") or None,
            workspace_service_account=_env("TETHER_WORKSPACE_SERVICE_ACCOUNT", ""),
            workspace_image=_env("TETHER_WORKSPACE_IMAGE", ""),
            sandbox=_env("TETHER_SANDBOX", "bubblewrap"),
            agent_capacity=int(_env("TETHER_AGENT_CAPACITY", str(default_capacity()))),
            rate_limits=rate_limits(_env("TETHER_RATE_LIMITS", "")),
            session_retention=parse_duration(_env("TETHER_SESSION_RETENTION", "7d")),
            audit_retention=parse_duration(_env("TETHER_AUDIT_RETENTION", "30d")),
            kubectl=_env("TETHER_KUBECTL", "kubectl"),
            clusters=clusters(_env("TETHER_CLUSTERS", "")),
            warm_pool=warm_pool(_env("TETHER_WARM_POOL", "")),
            workers=int(_env("TETHER_WORKERS", "1")),
            local_stands_in=stands_in(_env("TETHER_LOCAL_STANDS_IN", "")),
            registry_url=_env("TETHER_REGISTRY_URL", ""),
            registry_max_bytes=int(_env("TETHER_REGISTRY_MAX_BYTES", str(8 << 20))),
            recordings_url=_env("TETHER_RECORDINGS_URL", ""),
            recording_retention=parse_duration(_env("TETHER_RECORDING_RETENTION", "30d")),
            model_provider=_env("TETHER_MODEL_PROVIDER", "offline"),
            model_base_url=_env("TETHER_MODEL_BASE_URL", ""),
            model_api_key=os.environ.get("TETHER_MODEL_API_KEY") or None,
            model_name=_env("TETHER_MODEL", ""),
            vertex_location=_env("TETHER_VERTEX_LOCATION", "us-central1"),
            expiry_warning=(
                timedelta(0)
                if _env("TETHER_EXPIRY_WARNING", "5m") in ("0", "off")
                else parse_duration(_env("TETHER_EXPIRY_WARNING", "5m"))
            ),
            webhook_allow_private=_env("TETHER_WEBHOOK_ALLOW_PRIVATE", "false").lower()
            in ("1", "true", "yes", "on"),
            in_cloud=bool(os.environ.get("K_SERVICE")),
            tracing=_env("TETHER_TRACING", ""),
            cors_origins=tuple(
                o.strip().rstrip("/")
                for o in _env("TETHER_CORS_ORIGINS", "").split(",")
                if o.strip()
            ),
        )
