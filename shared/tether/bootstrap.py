"""The composition root: the one place that picks adapters from settings.

Nothing here runs at import. `services()` builds everything on first use, once per process
(per function instance), so cold starts pay for cloud clients only when a request needs them.
"""

from __future__ import annotations

import functools
import os
import secrets
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

from tether.core.models import Principal, Role
from tether.core.ports import ArtifactStore, Bus, ModelProvider, Provisioner, Store
from tether.errors import Invalid
from tether.service.agentchat import Chats
from tether.service.agents import Agents
from tether.service.aiagents import AiAgents
from tether.service.audit import Audit
from tether.service.auth import Auth
from tether.service.clusters import Clusters
from tether.service.commands import Commands
from tether.service.debug import Debug
from tether.service.desktops import Desktops
from tether.service.events import Events
from tether.service.executors import Executors
from tether.service.files import Files
from tether.service.health import Health
from tether.service.idempotency import Idempotency
from tether.service.images import Images
from tether.service.previews import Previews
from tether.service.ratelimit import RateLimits
from tether.service.recordings import Recordings
from tether.service.sessions import Sessions
from tether.service.sweeper import Sweeper
from tether.service.templates import Templates
from tether.service.tickets import Tickets
from tether.service.tokens import Tokens
from tether.service.usage import Usages
from tether.service.users import Users
from tether.service.warnings import Warnings
from tether.service.webhooks import Webhooks
from tether.service.workspaces import Workspaces
from tether.settings import Settings


@dataclass
class Services:
    settings: Settings
    store: Store
    bus: Bus
    auth: Auth
    tokens: Tokens
    runtime_key: str  # what workspace runtimes' tokens are derived from (`runtime_key`)
    users: Users
    limits: RateLimits
    tickets: Tickets
    previews: Previews
    templates: Templates
    agents: Agents
    commands: Commands
    sessions: Sessions
    events: Events
    sweeper: Sweeper
    health: Health
    idempotency: Idempotency
    workspaces: Workspaces  # OnMemOS's workspace records
    files: Files  # files in a session's storage
    usages: Usages  # what a session uses, measured in it
    clusters: Clusters  # Kubently's clusters and their executors' tokens
    debug: Debug  # Kubently's debug sessions, kubectl runs and audit trail
    executors: Executors  # Kubently's third-party executors (long poll, SSE)
    desktops: Desktops  # Openctrol's desktop agents, their sessions and commands
    images: Images  # SentinelStacks' image registry and each user's images
    aiagents: AiAgents  # SentinelStacks' AI agents, their conversations and events
    chats: Chats  # a chat turn with an AI agent (its model, its tools)
    audit: Audit  # who changed what: every surface's mutating calls, relayed connections
    warnings: Warnings  # warnings before a session's expiry: its events, webhooks, extend link
    recordings: Recordings  # sessions' terminal recordings (the relay writes them)

    def close(self) -> None:
        self.bus.close()
        self.store.close()


def make_store(settings: Settings) -> Store:
    if settings.store == "sqlite":
        from tether.store.sqlite import SqliteStore

        return SqliteStore(settings.home / "tether.db")
    if settings.store == "firestore":
        from tether.store.firestore import FirestoreStore

        return FirestoreStore(project=settings.project, database=settings.firestore_database)
    raise Invalid(f"TETHER_STORE must be sqlite or firestore, not {settings.store!r}")


def make_bus(settings: Settings) -> Bus:
    if settings.bus == "local":
        from tether.bus.local import LocalBus

        return LocalBus()
    if settings.bus == "sqlite":  # several processes of one machine (`tether up --workers`)
        from tether.bus.sqlite import SqliteBus

        return SqliteBus(settings.home / "bus.db")
    if settings.bus == "pubsub":
        from tether.bus.pubsub import PubSubBus

        return PubSubBus(project=settings.project)
    raise Invalid(f"TETHER_BUS must be local, sqlite or pubsub, not {settings.bus!r}")


def make_provisioner(settings: Settings) -> Provisioner:
    """Where an agent's workspaces run: TETHER_PLATFORM."""
    if settings.platform == "local":
        from tether.provision.local import LocalProvisioner

        return LocalProvisioner(
            settings.home, settings.sandbox, runtime_key(settings), settings.warm_pool
        )
    if settings.platform == "cloud_run":
        from tether.provision.cloudrun import CloudRunProvisioner
        from tether.provision.storage import SessionStorage

        # Each workspace runs as a service account of its own, granted its own storage only.
        storage = None
        if settings.sessions_bucket:
            storage = SessionStorage(settings.sessions_bucket, project=settings.project)
        return CloudRunProvisioner(
            settings.project,
            settings.region,
            storage=storage,
            image=settings.workspace_image or None,
        )
    if settings.platform == "gke":
        from tether.provision.gke import GkeProvisioner

        # No session storage: its FUSE driver would need the metadata server, which GKE
        # workspaces are fenced from. The home is the session's own volume.
        # Its runtimes are reached over the network, by the relay too: both derive each
        # session's token from one key, which must be given (nothing here to generate it in).
        key = settings.runtime_key or settings.jwt_secret
        if not key:
            raise Invalid("TETHER_RUNTIME_KEY is required for gke workspaces (the relay's too)")
        return GkeProvisioner(
            settings.workspace_namespace,
            service_account=settings.workspace_service_account or None,
            image=settings.workspace_image or None,
            runtime_key=key,
            cluster_domain=settings.gke_cluster_domain,
        )
    if settings.platform in ("cluster", "desktop"):
        from tether.provision.cluster import NoWorkspaces

        return NoWorkspaces(settings.platform)
    raise Invalid(
        "TETHER_PLATFORM must be local, cloud_run, gke, cluster or desktop,"
        f" not {settings.platform!r}"
    )


def make_artifacts(
    settings: Settings, given: str | None = None, under: str = "registry"
) -> ArtifactStore:
    """Where the registry keeps images: TETHER_REGISTRY_URL (or another store of blobs at
    `given`, default `<home>/<under>`: TETHER_RECORDINGS_URL's)."""
    given = settings.registry_url if given is None else given
    url = given or (settings.home / under).resolve().as_uri()
    parts = urlsplit(url)
    prefix = parts.path.strip("/")
    if parts.scheme == "file":
        from pathlib import Path

        from tether.registry.local import DirectoryArtifacts

        return DirectoryArtifacts(Path(parts.path))
    if parts.scheme == "gs" and parts.netloc:
        from tether.registry.gcs import GcsArtifacts

        return GcsArtifacts(parts.netloc, prefix, project=settings.project)
    if parts.scheme == "s3" and parts.netloc:
        from tether.registry.s3 import S3Artifacts

        # The endpoint of an S3-compatible store other than AWS: boto3's own AWS_ENDPOINT_URL.
        return S3Artifacts(parts.netloc, prefix, endpoint_url=os.environ.get("AWS_ENDPOINT_URL"))
    raise Invalid(
        f"TETHER_REGISTRY_URL must be file:///dir, gs://bucket[/prefix] or s3://bucket[/prefix],"
        f" not {url!r}"
    )


def make_model_provider(settings: Settings) -> ModelProvider:
    """The language model AI agents call: TETHER_MODEL_PROVIDER."""
    if settings.model_provider == "offline":
        from tether.llm.offline import OfflineModel

        return OfflineModel()
    if settings.model_provider == "openai":
        from tether.llm.openai_compat import OpenAICompatible

        if not settings.model_base_url:
            raise Invalid("TETHER_MODEL_PROVIDER=openai needs TETHER_MODEL_BASE_URL")
        return OpenAICompatible(settings.model_base_url, settings.model_api_key)
    if settings.model_provider == "vertex":
        from tether.llm.vertex import VertexGemini

        return VertexGemini(settings.project, settings.vertex_location)
    raise Invalid(
        f"TETHER_MODEL_PROVIDER must be offline, openai or vertex, not {settings.model_provider!r}"
    )


def runtime_key(settings: Settings) -> str:
    """TETHER_RUNTIME_KEY, else the JWT secret: one secret for a stack that holds both."""
    return settings.runtime_key or jwt_secret(settings)


def jwt_secret(settings: Settings) -> str:
    """TETHER_JWT_SECRET, or (off the cloud only) a random secret generated once and kept
    (0600) in TETHER_HOME. In the cloud there is no default: every instance must sign with the
    same secret, and a made-up one would be a secret nobody set."""
    if settings.jwt_secret:
        return settings.jwt_secret
    if settings.in_cloud:
        raise Invalid("TETHER_JWT_SECRET is required in the cloud; refusing to start without it")
    path = settings.home / "jwt-secret"
    if not path.exists():
        settings.home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip()


def build(settings: Settings, store: Store | None = None, bus: Bus | None = None) -> Services:
    store = store or make_store(settings)
    bus = bus or make_bus(settings)
    templates = Templates(store)
    agents = Agents(store, grace=settings.agent_grace, stand_in=settings.local_stands_in or ())
    commands = Commands(store, bus)
    sessions = Sessions(
        store, commands, agents, templates, settings.session_retention, settings.expiry_warning
    )
    tokens = Tokens(store, jwt_secret(settings))
    auth = Auth(store, tokens)
    warnings = Warnings(
        store,
        sessions,
        auth,
        Webhooks(store, settings.webhook_allow_private),
        tokens.secret,
        settings.public_url,
        settings.session_retention,
    )
    limits = RateLimits(store)
    tickets = Tickets(store)
    clusters = Clusters(store, agents)
    debug = Debug(store, commands, clusters, settings.audit_retention, settings.session_retention)
    aiagents = AiAgents(store, sessions, settings.session_retention)
    model = functools.cache(lambda: make_model_provider(settings))  # its client, on first chat
    return Services(
        settings=settings,
        store=store,
        bus=bus,
        auth=auth,
        tokens=tokens,
        runtime_key=runtime_key(settings),
        users=Users(store),
        limits=limits,
        tickets=tickets,
        previews=Previews(tokens.secret),
        templates=templates,
        agents=agents,
        commands=commands,
        sessions=sessions,
        events=Events(
            bus, agents, commands, sessions, settings.heartbeat_interval, debug, warnings
        ),
        sweeper=Sweeper(sessions, commands, agents, store, settings.republish_after, warnings),
        warnings=warnings,
        idempotency=Idempotency(store),
        health=Health(store, bus, settings.store, settings.bus, debug_sessions=debug.live_sessions),
        workspaces=Workspaces(store),
        files=Files(sessions),
        usages=Usages(sessions),
        clusters=clusters,
        debug=debug,
        executors=Executors(bus, commands),
        desktops=Desktops(
            store, agents, commands, limits, settings.session_retention, workspaces=sessions
        ),
        images=Images(store, make_artifacts(settings), settings.registry_max_bytes),
        aiagents=aiagents,
        chats=Chats(aiagents, sessions, model, settings.model_name),
        audit=Audit(store, settings.audit_retention),
        recordings=Recordings(
            store,
            sessions,
            make_artifacts(settings, settings.recordings_url, "recordings"),
            settings.recording_retention,
        ),
    )


@dataclass
class Generated:
    """Credentials made on first start: shown once, stored only as hashes."""

    api_key: str | None = None
    admin_password: str | None = None


def seed(services: Services) -> Generated:
    """First-start data: templates and the `admin` user with a password and a key. What the
    settings do not give is generated once (and returned, to print); later starts return none."""
    services.templates.seed()
    services.sessions.store_idle_times()
    settings = services.settings
    made = Generated()
    password = settings.admin_password
    admin = services.users.repo.find("admin")
    if password is None and (admin is None or admin.password_hash is None):
        password = made.admin_password = secrets.token_urlsafe(12)
    services.auth.ensure_user("admin", Role.ADMIN, password)
    if settings.api_key:
        services.auth.add_key("admin", settings.api_key, name="bootstrap")
    elif not services.auth.has_key("admin"):
        made.api_key = services.auth.add_key("admin", name="bootstrap")
    return made


def reset_admin(services: Services) -> Generated:
    """For an operator who lost what the first start printed: `admin` gets a new password and
    a new key; its earlier keys are revoked and its JWTs end (the password moved)."""
    admin = services.auth.ensure_user("admin", Role.ADMIN)
    made = Generated(admin_password=secrets.token_urlsafe(12))
    services.users.update(Principal.of(admin), "admin", active=True, password=made.admin_password)
    for record in services.auth.keys_of("admin"):
        services.auth.keys.delete(record.id)
    made.api_key = services.auth.add_key("admin", name="reset")
    return made


_lock = threading.Lock()
_services: Services | None = None


def services() -> Services:
    """This process's services, built on first use."""
    global _services
    with _lock:
        if _services is None:
            _services = build(Settings.from_env())
        return _services


def install(built: Services | None) -> None:
    """Use `built` as this process's services (the local origin builds its own); None resets."""
    global _services
    with _lock:
        _services = built
