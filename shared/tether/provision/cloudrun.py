"""Workspaces as Cloud Run services: one service per session, from the template's image.

The image's entrypoint is the workspace runtime (`python -m tether.runtime`), which listens on
$PORT; exec and logs are HTTP calls to it at the service URL, with a Google ID token for that
URL (the agent's service account needs run.invoker on the services). A session's storage
prefix (`tether.provision.storage`) is mounted as the home with Cloud Storage FUSE, so the
home and the session log outlive the instance.

Each workspace runs as a service account of its own, made on start and deleted on stop, whose
only grant is its session's storage prefix: code in a workspace can take its identity's token
from the metadata server (nothing on Cloud Run stops that), so that token must open nothing
else. The service takes internal traffic only, from callers that hold run.invoker.

google.cloud and httpx are imported on first use: importing this module loads neither gRPC
nor an HTTP client.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import timedelta
from typing import TYPE_CHECKING, cast

from tether.core.models import ExecResult, WorkspaceActivity, WorkspaceInfo, WorkspaceSpec
from tether.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    TetherError,
    Timeout,
    Unavailable,
)
from tether.provision.runtime_http import GoogleIdTokens, IdToken, RuntimeHttp
from tether.provision.storage import SessionStorage
from tether.runtime.session_log import SESSION_LOG

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from google.api_core.operation import Operation
    from google.api_core.retry import Retry
    from google.cloud.iam_admin_v1 import IAMClient
    from google.cloud.run_v2 import Service, ServicesClient

HOME = "/home/tether"
PORT = 8080
MAX_NAME = 49  # Cloud Run's limit on a service name
# A workspace identity's account id: 6-30 of [a-z0-9-], so a hash of the session id (ids are
# longer and freer); terraform's grants to the agent name this prefix.
IDENTITY_PREFIX = "tether-ws-"
# Set by Cloud Run itself: a service that sets them is rejected.
_RESERVED_ENV = frozenset({"PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"})
_UNSAFE_NAME = re.compile(r"[^a-z0-9-]+")
_UNSAFE_LABEL = re.compile(r"[^a-z0-9_-]+")
# Requests (exec, shell) may last this long; Cloud Run's default would cut them at 5 minutes.
_REQUEST_TIMEOUT = timedelta(hours=1)
# Bytes of the stored log read per line asked for; lines are usually far shorter, and a longer
# average only returns fewer lines, never wrong ones.
_LOG_BYTES_PER_LINE = 1024
_LOG_MAX_BYTES = 8 << 20


def service_id(session_id: str) -> str:
    """A valid Cloud Run service name for a session: lowercase, at most 49 characters,
    starting with a letter. An id that needs changing to fit gets a hash of the original, so
    two sessions never share a service."""
    slug = _UNSAFE_NAME.sub("-", session_id.lower()).strip("-")
    name = f"tether-{slug}"
    if slug == session_id and len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(session_id.encode()).hexdigest()[:8]
    head = slug[: MAX_NAME - len("tether--") - len(digest)].rstrip("-")
    return "-".join(part for part in ("tether", head, digest) if part)


def account_id(session_id: str) -> str:
    """The account id of a session's workspace identity: the same for the same session, so
    creating it again finds it."""
    return IDENTITY_PREFIX + hashlib.sha256(session_id.encode()).hexdigest()[:20]


def _label(value: str) -> str:
    return _UNSAFE_LABEL.sub("-", value.lower())[:63]


def _cpu(value: str) -> str:
    """Whole CPUs as Cloud Run writes them ("1000m" -> "1"); fractions stay in millicores."""
    if value.endswith("m") and value[:-1].isdigit() and int(value[:-1]) % 1000 == 0:
        return str(int(value[:-1]) // 1000)
    return value


@contextmanager
def _errors(what: str, api: str = "Cloud Run") -> Iterator[None]:
    """Translate Cloud Run (or IAM) API failures into the one error tree."""
    from google.api_core import exceptions as gexc
    from google.auth.exceptions import GoogleAuthError

    try:
        yield
    except gexc.NotFound as exc:
        raise NotFound("Workspace not found") from exc
    except (gexc.Forbidden, gexc.Unauthorized) as exc:  # PermissionDenied, Unauthenticated
        raise Forbidden(f"{api} refused {what}: {exc.message}") from exc
    except (gexc.AlreadyExists, gexc.Aborted, gexc.FailedPrecondition) as exc:
        raise Conflict(f"{api} conflict during {what}: {exc.message}") from exc
    except gexc.InvalidArgument as exc:
        raise Invalid(f"{api} rejected {what}: {exc.message}") from exc
    except (gexc.GoogleAPIError, GoogleAuthError) as exc:  # ServiceUnavailable, RetryError...
        raise Unavailable(f"{api} unavailable during {what}: {exc}") from exc


def _hibernated(svc: Service) -> bool:
    from google.cloud.run_v2 import ServiceScaling

    scaling = svc.scaling
    return bool(
        scaling.scaling_mode == ServiceScaling.ScalingMode.MANUAL
        and not scaling.manual_instance_count
    )


class CloudRunProvisioner:
    """Every call is idempotent on the session id (see `tether.core.ports.Provisioner`).

    Workspace identities are made in `identity_project` (None: `project`) through `iam`
    (None: an IAM client built on first use). `service_account` is accepted and not used:
    no workspace shares an identity with another."""

    platform = "cloud_run"

    def __init__(
        self,
        project: str,
        region: str,
        *,
        client: ServicesClient | None = None,
        storage: SessionStorage | None = None,
        service_account: str | None = None,
        image: str | None = None,
        id_token: IdToken | None = None,
        iam: IAMClient | None = None,
        identity_project: str | None = None,
        operation_timeout: float = 600.0,
        call_timeout: float = 30.0,
        poll_interval: float = 1.0,
    ) -> None:
        self.project = project
        self.region = region
        self.storage = storage
        if service_account:
            log.warning(
                "workspace service account %s ignored: each runs as its own", service_account
            )
        self.identity_project = identity_project or project
        self._iam = iam
        self._owns_iam = iam is None
        # Every workspace from this image (one with the runtime, TETHER_WORKSPACE_IMAGE);
        # None: each template's own image, which must then carry the runtime.
        self.image = image
        self.operation_timeout = operation_timeout
        self.call_timeout = call_timeout
        self.poll_interval = poll_interval
        self._id_token: IdToken = id_token or GoogleIdTokens()
        self._lock = threading.Lock()
        self._client = client
        self._owns_client = client is None
        self._runtime = RuntimeHttp()

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"

    def name(self, session_id: str) -> str:
        return f"{self.parent}/services/{service_id(session_id)}"

    def identity(self, session_id: str) -> str:
        """The email of the session's workspace identity."""
        return f"{account_id(session_id)}@{self.identity_project}.iam.gserviceaccount.com"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, spec: WorkspaceSpec) -> WorkspaceInfo:
        from google.api_core.exceptions import AlreadyExists

        sid = spec.session_id
        if self._sandboxed(spec) and self.storage is not None and spec.persistent_home:
            raise Invalid(
                "A gvisor template on Cloud Run runs in the first generation, which cannot "
                "mount the session's storage: its home would not persist. Start it with "
                "persistent_home false, or use a default-sandbox template.",
                field="template",
            )
        if self.storage is not None:
            self.storage.ensure(sid)
        # Its identity, then its grant, then the service that runs as it.
        self._make_identity(spec)
        if self.storage is not None:
            self.storage.grant(sid, f"serviceAccount:{self.identity(sid)}")
        svc: Service | None = None
        with _errors("creating the workspace"):
            try:
                op = self._services().create_service(
                    parent=self.parent,
                    service=self._service(spec),
                    service_id=service_id(sid),
                    timeout=self.call_timeout,
                )
                svc = self._wait(op)
            except AlreadyExists:
                pass  # started before (a duplicate command): return what is there
        if svc is None:
            svc = self._get(sid)
            if _hibernated(svc):
                svc = self._scale(svc, hibernate=False)
            svc = self._await_uri(sid, svc)
        return self._info(sid, svc)

    def stop(self, session_id: str) -> None:
        from google.api_core.exceptions import NotFound as Missing

        with _errors("deleting the workspace"):
            try:
                op = self._services().delete_service(
                    name=self.name(session_id), timeout=self.call_timeout
                )
                self._wait(op)
            except Missing:
                pass  # already gone: stopping is idempotent
        # The identity goes with its workspace; its grant goes with the managed folder below.
        name = f"projects/{self.identity_project}/serviceAccounts/{self.identity(session_id)}"
        with _errors("deleting the workspace identity", "IAM"), suppress(Missing):
            self._identities().delete_service_account(name=name, timeout=self.call_timeout)
        if self.storage is not None:
            self.storage.delete(session_id)
            self.storage.revoke(session_id)

    def hibernate(self, session_id: str) -> None:
        # Scaled to zero with manual scaling rather than deleted: the service keeps its URL,
        # its spec (wake needs nothing but the session id) and its IAM bindings, and costs
        # nothing at zero instances. Revision-level max_instance_count=0 would not do: proto3
        # cannot tell 0 from unset, which Cloud Run reads as its default of 100.
        svc = self._get(session_id)
        if not _hibernated(svc):
            self._scale(svc, hibernate=True)

    def wake(self, session_id: str) -> WorkspaceInfo:
        svc = self._get(session_id)
        if _hibernated(svc):
            svc = self._scale(svc, hibernate=False)
        return self._info(session_id, svc)

    def exec(self, session_id: str, command: str, timeout: float) -> ExecResult:
        url = self._serving_url(session_id)
        return self._runtime.exec(url, command, timeout, self._auth(url))

    def activity(self, session_id: str) -> WorkspaceActivity | None:
        try:
            url = self._serving_url(session_id)
            headers = self._auth(url)
        except TetherError:  # hibernated, gone, not there yet, or no identity to ask with
            return None
        return self._runtime.activity(url, headers)

    def logs(self, session_id: str, tail: int) -> list[str]:
        svc = self._get(session_id)
        if _hibernated(svc) or not svc.uri:
            return self._stored_log(session_id, tail)
        url = str(svc.uri)
        return self._runtime.logs(url, tail, self._auth(url))

    def close(self) -> None:
        self._runtime.close()
        with self._lock:
            if self._client is not None and self._owns_client:
                self._client.transport.close()  # type: ignore[no-untyped-call]
                self._client = None
            if self._iam is not None and self._owns_iam:
                self._iam.transport.close()  # type: ignore[no-untyped-call]
                self._iam = None

    # -- the workspace's identity ------------------------------------------------------------

    def _identities(self) -> IAMClient:
        with self._lock:
            if self._iam is None:
                from google.cloud import iam_admin_v1

                self._iam = iam_admin_v1.IAMClient()
            return self._iam

    def _make_identity(self, spec: WorkspaceSpec) -> None:
        """Creates the session's service account; one that exists is what we wanted. It gets
        no role here: its storage prefix is granted on the prefix itself."""
        from google.api_core.exceptions import AlreadyExists
        from google.cloud import iam_admin_v1

        sid = spec.session_id
        account = iam_admin_v1.ServiceAccount(
            display_name=f"Tether workspace {service_id(sid)}"[:100],
            description=f"Tether session {sid}"[:256],
        )
        with _errors("creating the workspace identity", "IAM"), suppress(AlreadyExists):
            self._identities().create_service_account(
                name=f"projects/{self.identity_project}",
                account_id=account_id(sid),
                service_account=account,
                timeout=self.call_timeout,
            )

    @staticmethod
    def _sandboxed(spec: WorkspaceSpec) -> bool:
        return spec.template.sandbox == "gvisor"

    # -- Cloud Run ---------------------------------------------------------------------------

    def _services(self) -> ServicesClient:
        with self._lock:
            if self._client is None:
                from google.cloud import run_v2

                self._client = run_v2.ServicesClient()
            return self._client

    def _get_retry(self) -> Retry:
        from google.api_core import exceptions as gexc
        from google.api_core.retry import Retry, if_exception_type

        return Retry(
            predicate=if_exception_type(gexc.ServiceUnavailable),
            initial=0.25,
            maximum=2.0,
            timeout=self.call_timeout,
        )

    def _get(self, session_id: str) -> Service:
        with _errors("reading the workspace"):
            return self._services().get_service(
                name=self.name(session_id), retry=self._get_retry(), timeout=self.call_timeout
            )

    def _wait(self, op: Operation) -> Service:
        """The operation's result, polling until it is done (Cloud Run takes tens of seconds
        to roll out a revision)."""
        from google.api_core.future.polling import DEFAULT_POLLING

        polling = DEFAULT_POLLING.with_delay(
            initial=self.poll_interval, maximum=self.poll_interval * 10, multiplier=1.5
        ).with_timeout(self.operation_timeout)
        try:
            return cast("Service", op.result(polling=polling))  # type: ignore[no-untyped-call]
        except TimeoutError as exc:  # concurrent.futures.TimeoutError
            raise Timeout(f"Cloud Run did not finish within {self.operation_timeout:g}s") from exc

    def _scale(self, svc: Service, *, hibernate: bool) -> Service:
        from google.cloud.run_v2 import ServiceScaling

        mode = ServiceScaling.ScalingMode
        if hibernate:
            svc.scaling = ServiceScaling(scaling_mode=mode.MANUAL, manual_instance_count=0)
        else:  # back to the revision's own scaling (one instance, see _service)
            svc.scaling = ServiceScaling(scaling_mode=mode.AUTOMATIC)
        # Sent whole with the etag we read: a concurrent change fails instead of being undone.
        with _errors("hibernating the workspace" if hibernate else "waking the workspace"):
            op = self._services().update_service(service=svc, timeout=self.call_timeout)
            return self._wait(op)

    def _await_uri(self, session_id: str, svc: Service) -> Service:
        """A service another caller is still creating has no URL yet: wait for it."""
        deadline = time.monotonic() + self.operation_timeout
        while not svc.uri:
            if time.monotonic() >= deadline:
                raise Timeout("Workspace service has no URL yet")
            time.sleep(self.poll_interval)
            svc = self._get(session_id)
        return svc

    def _service(self, spec: WorkspaceSpec) -> Service:
        from google.cloud import run_v2

        sid, template = spec.session_id, spec.template
        runtime = {"HOME": HOME, "TETHER_SESSION_ID": sid}
        if template.command:
            runtime["TETHER_MAIN_COMMAND"] = template.command
        if self.storage is not None:
            runtime["TETHER_BUCKET"] = self.storage.name(sid)
        env = {**template.env, **spec.env, **runtime}
        limits = {k: v for k, v in template.resources.items() if k in ("cpu", "memory")}
        if "cpu" in limits:
            limits["cpu"] = _cpu(limits["cpu"])
        container = run_v2.Container(
            name="workspace",
            image=self.image or template.image,
            ports=[run_v2.ContainerPort(name="http1", container_port=PORT)],
            env=[run_v2.EnvVar(name=k, value=v) for k, v in env.items() if k not in _RESERVED_ENV],
            # CPU stays allocated between requests: a workspace's main process and a shell's
            # background jobs run when no request is open.
            resources=run_v2.ResourceRequirements(limits=limits, cpu_idle=False),
        )
        volumes = []
        # The first generation is gVisor, what a "gvisor" template asks for; the second (the
        # default) is a microVM. Cloud Storage volumes need the second generation.
        gen = run_v2.ExecutionEnvironment
        environment = gen.EXECUTION_ENVIRONMENT_GEN1 if self._sandboxed(spec) else None
        if self.storage is not None and environment is None:
            prefix = self.storage.prefix(sid).rstrip("/")
            volumes.append(
                run_v2.Volume(
                    name="home",
                    gcs=run_v2.GCSVolumeSource(
                        bucket=self.storage.bucket_name, mount_options=[f"only-dir={prefix}"]
                    ),
                )
            )
            container.volume_mounts = [run_v2.VolumeMount(name="home", mount_path=HOME)]
        labels = {
            "tether-session": _label(sid),
            "tether-namespace": _label(spec.namespace),
            "tether-user": _label(spec.user),
            "managed-by": "tether",
        }
        return run_v2.Service(
            labels=labels,
            # Reached only from the project's VPC (the agents and the relay send through it),
            # and only by a caller holding run.invoker: never unauthenticated.
            ingress=run_v2.IngressTraffic.INGRESS_TRAFFIC_INTERNAL_ONLY,
            invoker_iam_disabled=False,
            template=run_v2.RevisionTemplate(
                labels=labels,
                containers=[container],
                volumes=volumes,
                # One workspace is one machine: never two instances, and one kept up while it
                # runs (a scale-down would kill its processes). Hibernate is how it stops.
                scaling=run_v2.RevisionScaling(min_instance_count=1, max_instance_count=1),
                session_affinity=True,
                timeout=_REQUEST_TIMEOUT,
                execution_environment=environment or gen.EXECUTION_ENVIRONMENT_GEN2,
                service_account=self.identity(sid),
            ),
        )

    def _info(self, session_id: str, svc: Service) -> WorkspaceInfo:
        return WorkspaceInfo(
            url=str(svc.uri) or None,
            details={
                "service_name": service_id(session_id),
                "bucket_name": self.storage.name(session_id) if self.storage else None,
                "region": self.region,
            },
        )

    # -- the workspace runtime ---------------------------------------------------------------

    def _serving_url(self, session_id: str) -> str:
        # Asked of Cloud Run every time rather than cached: another agent instance may have
        # hibernated or stopped the workspace since.
        svc = self._get(session_id)
        if _hibernated(svc):
            raise NotFound("Workspace is hibernated")
        if not svc.uri:
            raise Unavailable("Workspace is still being created")
        return str(svc.uri)

    def _auth(self, url: str) -> dict[str, str]:
        token = self._id_token(url)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _stored_log(self, session_id: str, tail: int) -> list[str]:
        """The session log as the runtime left it in the home, for a workspace with no
        instance to ask."""
        if self.storage is None or tail <= 0:
            return []
        max_bytes = min(max(tail, 64) * _LOG_BYTES_PER_LINE, _LOG_MAX_BYTES)
        try:
            data = self.storage.read_tail(session_id, SESSION_LOG, max_bytes)
        except NotFound:
            return []  # the main process never wrote anything
        return data.decode("utf-8", errors="replace").splitlines()[-tail:]
