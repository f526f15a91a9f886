"""Workspaces as pods on GKE (any Kubernetes cluster, really), all in one namespace.

A session's workspace is a Pod running the workspace runtime on port 8080 (from Tether's
workspace image, or a template image that carries `tether.runtime`), a ClusterIP Service in
front of it, and, with a persistent home, a PersistentVolumeClaim mounted as the home.
Hibernate deletes only the pod. The Service outlives it and carries what wake needs: the spec,
and the last lines of the session log, so a hibernated workspace still has its log although
nothing runs to read its volume.

The agent runs in the cluster, creates the objects through the Kubernetes API (its service
account's Role is in infra/k8s/) and reaches each runtime at the Service's cluster DNS name.
What a pod may do (no capability, no credential, its template's network and sandbox) is in
`gke_manifests`; the namespace's NetworkPolicies are applied with infra/k8s, not by the agent.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from tether.core.models import ExecResult, WorkspaceActivity, WorkspaceInfo, WorkspaceSpec
from tether.errors import Conflict, Forbidden, Invalid, NotFound, TetherError, Timeout, Unavailable
from tether.provision.gke_manifests import (
    ANNOTATION_LOG,
    ANNOTATION_SPEC,
    DEFAULT_HOME_SIZE,
    DEFAULT_NAMESPACE,
    RUNTIME_PORT,
    names,
    pod_manifest,
    pvc_manifest,
    service_manifest,
)
from tether.provision.runtime_http import RuntimeHttp
from tether.runtime import auth

if TYPE_CHECKING:
    from kubernetes.client import ApiClient, CoreV1Api, V1Pod

    from tether.provision.storage import SessionStorage

log = logging.getLogger(__name__)

# What hibernate keeps of the session log: annotations share a 256 KiB budget per object.
LOG_KEEP_LINES = 200
LOG_KEEP_BYTES = 64 * 1024

# Waiting reasons after which the kubelet only retries with back-off: a start waiting on them
# would sit out its whole timeout for nothing.
FATAL_WAITING = {
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "CrashLoopBackOff",
}
_RECREATES = 3  # pods deleted under a start before it gives up


# -- errors --------------------------------------------------------------------------------


def _status_message(exc: Any) -> str:
    """The `message` of the API's Status body, else the HTTP reason."""
    try:
        message = json.loads(exc.body or "")["message"]
        if isinstance(message, str) and message:
            return message
    except (ValueError, TypeError, KeyError):
        pass
    return str(exc.reason or f"HTTP {exc.status}")


def _mapped(exc: Any, action: str) -> TetherError:
    status, message = exc.status or 0, _status_message(exc)
    text = f"Kubernetes refused {action}: {message}"
    if status == 404:
        return NotFound("Workspace not found", reason=message)
    if status == 403:
        return Forbidden(f"{text} (check the agent's Role in infra/k8s)")
    if status in (400, 422):
        return Invalid(text)
    if status == 409:
        return Conflict(text)
    # 401 (the agent's own credentials), 429, 5xx and status 0 (no HTTP answer at all).
    return Unavailable(f"Kubernetes API failed {action}: {message}")


@contextlib.contextmanager
def _api_errors(action: str) -> Iterator[None]:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        yield
    except ApiException as exc:
        raise _mapped(exc, action) from exc
    except (HTTPError, OSError) as exc:
        raise Unavailable(f"Kubernetes API unreachable while {action}: {exc}") from exc


def _pod_state(pod: V1Pod) -> tuple[bool, str]:
    """(ready, what it is doing); raises Unavailable when it cannot get ready by itself."""
    if pod.metadata is not None and pod.metadata.deletion_timestamp is not None:
        return False, "terminating"
    status = pod.status
    if status is None:
        return False, "Pending"
    phase = status.phase or "Pending"
    if phase in ("Failed", "Succeeded"):
        raise Unavailable(f"Workspace pod {phase.lower()}: {status.reason or status.message or ''}")
    for cs in status.container_statuses or []:
        waiting = cs.state.waiting if cs.state is not None else None
        if waiting is not None and waiting.reason in FATAL_WAITING:
            raise Unavailable(
                f"Workspace container cannot start: {waiting.reason}: {waiting.message or ''}"
            )
    conditions = {c.type: c for c in status.conditions or []}
    ready = conditions.get("Ready")
    if phase == "Running" and ready is not None and ready.status == "True":
        return True, "Running"
    note = phase
    for c in conditions.values():
        if c.status != "True" and (c.reason or c.message):
            note = f"{phase}: {c.reason or ''} {c.message or ''}".strip()
    return False, note


# -- the provisioner -----------------------------------------------------------------------


class GkeProvisioner:
    """Workspaces as pods in `namespace`.

    `api` is a `kubernetes.client.CoreV1Api` or `ApiClient` (None: the in-cluster service
    account, loaded on first use). `runtime_url` maps a session id to the base URL this agent
    calls its runtime at (None: the Service's DNS name under `cluster_domain`, the address
    reported to the relay too). `runtime_key` derives each runtime's token
    (`tether.runtime.auth`), which the agent and the relay send and the runtime checks: no
    front end checks callers before a pod, as Google's does before a Cloud Run service.
    `service_account` is the workspace pods' Kubernetes service account. `image` runs every
    workspace from Tether's workspace image (None: each template's own). `start_timeout`
    bounds start and wake.

    `storage` is accepted and not used: Cloud Storage FUSE in a pod authenticates through the
    metadata server, which workspace pods may not reach (any code in the pod could take the
    bucket's credentials), so the home is the session's volume alone.
    """

    platform = "gke"

    def __init__(
        self,
        namespace: str = DEFAULT_NAMESPACE,
        *,
        api: CoreV1Api | ApiClient | None = None,
        runtime_url: Callable[[str], str] | None = None,
        storage: SessionStorage | None = None,
        service_account: str | None = None,
        image: str | None = None,
        storage_class: str | None = None,
        home_size: str = DEFAULT_HOME_SIZE,
        start_timeout: float = 300.0,
        runtime_key: str | None = None,
        cluster_domain: str = "cluster.local",
    ) -> None:
        self.namespace = namespace
        self._api: Any = api
        self._core_api: CoreV1Api | None = None
        self._runtime_url = runtime_url or self.cluster_url
        self.runtime_key = runtime_key
        self.cluster_domain = cluster_domain
        if storage is not None:
            log.warning("GKE workspaces do not mount session storage (no metadata server)")
        self.service_account = _k8s_account(service_account)
        self.image = image
        self.storage_class = storage_class
        self.home_size = home_size
        self.start_timeout = start_timeout
        self._runtime = RuntimeHttp()
        self._owned: ApiClient | None = None  # the client built here, closed with us
        self._lock = threading.Lock()

    def cluster_url(self, session_id: str) -> str:
        host = f"{names(session_id).service}.{self.namespace}.svc.{self.cluster_domain}"
        return f"http://{host}:{RUNTIME_PORT}"

    # -- clients (built on first use) -----------------------------------------------------

    def _core(self) -> CoreV1Api:
        with self._lock:
            if self._core_api is None:
                from kubernetes import client, config

                api = self._api
                if api is None:
                    cfg = client.Configuration()
                    try:
                        config.load_incluster_config(client_configuration=cfg)  # type: ignore[attr-defined,no-untyped-call]
                    except config.ConfigException as exc:  # type: ignore[attr-defined]
                        raise Unavailable(f"No in-cluster Kubernetes credentials: {exc}") from exc
                    api = self._owned = client.ApiClient(cfg)
                self._core_api = client.CoreV1Api(api) if isinstance(api, client.ApiClient) else api
            return self._core_api

    def close(self) -> None:
        self._runtime.close()
        with self._lock:
            if self._owned is not None:
                self._owned.close()  # type: ignore[no-untyped-call]
                self._owned = self._core_api = None

    # -- Kubernetes objects ---------------------------------------------------------------

    def _create(self, kind: str, manifest: dict[str, Any]) -> None:
        """Creates the object; one that exists already is what we wanted (409 is success)."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        core, ns = self._core(), self.namespace
        try:
            with _api_errors(f"creating {kind} {manifest['metadata']['name']}"):
                try:
                    if kind == "pod":
                        core.create_namespaced_pod(ns, client.V1Pod.model_validate(manifest))
                    elif kind == "service":
                        body = client.V1Service.model_validate(manifest)
                        core.create_namespaced_service(ns, body)
                    else:
                        claim = client.V1PersistentVolumeClaim.model_validate(manifest)
                        core.create_namespaced_persistent_volume_claim(ns, claim)
                except ApiException as exc:
                    if exc.status != 409:
                        raise
        except NotFound as exc:  # on create, 404 is the namespace
            raise Unavailable(
                f"Cannot create workspaces in Kubernetes namespace {ns!r}: "
                f"{exc.details.get('reason', '')}"
            ) from exc

    def _delete(self, kind: str, name: str) -> None:
        """Deletes the object; a missing one is gone already (404 is success)."""
        core, ns = self._core(), self.namespace
        with contextlib.suppress(NotFound), _api_errors(f"deleting {kind} {name}"):
            if kind == "pod":
                core.delete_namespaced_pod(name, ns)
            elif kind == "service":
                core.delete_namespaced_service(name, ns)
            else:
                core.delete_namespaced_persistent_volume_claim(name, ns)

    def _service_annotations(self, session_id: str) -> dict[str, str]:
        """The workspace's Service annotations; NotFound when it has no Service (stopped)."""
        name = names(session_id).service
        with _api_errors(f"reading service {name}"):
            service = self._core().read_namespaced_service(name, self.namespace)
        return dict(service.metadata.annotations or {}) if service.metadata else {}

    def _pod_alive(self, session_id: str) -> bool:
        """Whether the workspace has a pod that is not on its way out (a hibernated one's
        pod terminates for a while after hibernate returns)."""
        name = names(session_id).pod
        try:
            with _api_errors(f"reading pod {name}"):
                pod = self._core().read_namespaced_pod(name, self.namespace)
        except NotFound:
            return False
        return pod.metadata is None or pod.metadata.deletion_timestamp is None

    def _pvc(self, spec: WorkspaceSpec) -> dict[str, Any]:
        return pvc_manifest(spec, self.namespace, self.storage_class, self.home_size)

    def _info(self, spec: WorkspaceSpec) -> WorkspaceInfo:
        sid, n = spec.session_id, names(spec.session_id)
        details: dict[str, Any] = {
            "pod_name": n.pod,
            "service_name": n.service,
            "k8s_namespace": self.namespace,
        }
        if spec.persistent_home:
            details["pvc_name"] = n.pvc
        return WorkspaceInfo(url=self.cluster_url(sid), details=details)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, spec: WorkspaceSpec) -> WorkspaceInfo:
        if spec.persistent_home:
            self._create("pvc", self._pvc(spec))
        self._create("service", service_manifest(spec, self.namespace))
        self._run_pod(spec)
        return self._info(spec)

    def stop(self, session_id: str) -> None:
        n = names(session_id)
        self._delete("pod", n.pod)
        self._delete("service", n.service)
        self._delete("pvc", n.pvc)

    def hibernate(self, session_id: str) -> None:
        self._service_annotations(session_id)  # NotFound when there is nothing to hibernate
        lines = self._fetch_log(session_id)
        if lines is not None:
            self._keep_log(session_id, lines)
        self._delete("pod", names(session_id).pod)

    def wake(self, session_id: str) -> WorkspaceInfo:
        raw = self._service_annotations(session_id).get(ANNOTATION_SPEC)
        try:
            spec = WorkspaceSpec.model_validate_json(raw or "")
        except ValueError as exc:
            # Not one of ours, or from a version that wrote no spec: start it afresh instead.
            raise NotFound("Workspace has no spec to wake from") from exc
        if spec.persistent_home:  # recreated empty if someone removed it
            self._create("pvc", self._pvc(spec))
        self._run_pod(spec)
        return self._info(spec)

    def _run_pod(self, spec: WorkspaceSpec) -> None:
        sid = spec.session_id
        manifest = pod_manifest(
            spec, self.namespace, self.service_account, self.image, self.home_size,
            self._token(sid),
        )  # fmt: skip
        n = names(sid)
        deadline = time.monotonic() + self.start_timeout
        for _ in range(_RECREATES):
            self._create("pod", manifest)  # 409: ours already, or an old one still terminating
            try:
                if self._wait_ready(n.pod, deadline):
                    return
            except (Unavailable, Timeout):
                # Left alone it would retry (a bad image, say) forever; the Service and the
                # home stay, so a later start or wake tries again.
                self._delete("pod", n.pod)
                raise
            # The pod watched was deleted: an old one finished terminating (wake right after
            # hibernate) and ours can be created now -- unless the workspace was stopped.
            self._service_annotations(spec.session_id)
        raise Unavailable(f"Workspace pod {n.pod} was deleted {_RECREATES} times while starting")

    def _wait_ready(self, name: str, deadline: float) -> bool:
        """True once the pod is Running and Ready; False when it is (or gets) deleted.
        Lists once, then watches from the list's resourceVersion: no change is missed."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        core, selector, note = self._core(), f"metadata.name={name}", "Pending"
        while True:  # once per list: again when the watch's resourceVersion expired (410)
            with _api_errors(f"listing pod {name}"):
                listing = core.list_namespaced_pod(self.namespace, field_selector=selector)
            if not listing.items:
                return False
            ready, note = _pod_state(listing.items[0])
            if ready:
                return True
            version = listing.metadata.resource_version if listing.metadata else None
            w = watch.Watch()  # type: ignore[attr-defined,no-untyped-call]
            try:
                while (remaining := deadline - time.monotonic()) > 0:
                    events = w.stream(  # type: ignore[no-untyped-call]
                        core.list_namespaced_pod,
                        self.namespace,
                        field_selector=selector,
                        resource_version=version,
                        timeout_seconds=max(1, math.ceil(remaining)),
                        _request_timeout=(10, remaining + 10),
                    )
                    try:
                        with _api_errors(f"watching pod {name}"):
                            for event in events:
                                if event["type"] == "DELETED":
                                    return False
                                if event["type"] in ("ADDED", "MODIFIED"):
                                    ready, note = _pod_state(event["object"])
                                    if ready:
                                        return True
                    finally:
                        events.close()
                    # The server ended the watch (its timeout): resume from what was seen.
                    version = w.resource_version or version
            except Unavailable as exc:
                cause = exc.__cause__
                if isinstance(cause, ApiException) and cause.status == 410:
                    continue  # history compacted past our resourceVersion: list again
                raise
            raise Timeout(
                f"Workspace pod {name} was not ready within {self.start_timeout:g}s ({note})"
            )

    # -- the runtime ----------------------------------------------------------------------

    def _base(self, session_id: str) -> str:
        return self._runtime_url(session_id).rstrip("/")

    def _token(self, session_id: str) -> str | None:
        return auth.token_for(self.runtime_key, session_id) if self.runtime_key else None

    def _auth(self, session_id: str) -> dict[str, str]:
        token = self._token(session_id)
        return {auth.HEADER: token} if token else {}

    def _missing(self, session_id: str) -> None:
        """Raises NotFound when the workspace has no pod (stopped, unknown or hibernated)."""
        if self._pod_alive(session_id):
            return
        self._service_annotations(session_id)
        raise NotFound("Workspace is hibernated")

    def exec(self, session_id: str, command: str, timeout: float) -> ExecResult:
        try:
            return self._runtime.exec(
                self._base(session_id), command, timeout, self._auth(session_id)
            )
        except Unavailable:
            self._missing(session_id)  # no pod to answer: NotFound
            raise

    def activity(self, session_id: str) -> WorkspaceActivity | None:
        try:
            base = self._base(session_id)
        except TetherError:
            return None
        return self._runtime.activity(base, self._auth(session_id))

    def logs(self, session_id: str, tail: int) -> list[str]:
        try:
            return self._runtime.logs(
                self._base(session_id), tail, self._auth(session_id), timeout=10
            )
        except Unavailable:
            if self._pod_alive(session_id):
                raise
        # No runtime to ask: hibernated (its log was kept on the Service) or gone.
        kept = self._service_annotations(session_id).get(ANNOTATION_LOG)
        try:
            lines = _lines(json.loads(kept or "[]"))
        except ValueError:
            lines = []
        return lines[-tail:] if tail > 0 else []

    def _fetch_log(self, session_id: str) -> list[str] | None:
        """The last lines of the session log, or None when the runtime cannot be asked."""
        try:
            lines = self._runtime.logs(
                self._base(session_id), LOG_KEEP_LINES, self._auth(session_id), timeout=10
            )
        except TetherError as exc:
            log.warning("session %s: log not kept at hibernate: %s", session_id, exc.message)
            return None
        # Oldest lines go first until the rest fits the annotation budget.
        size = sum(len(line.encode()) + 4 for line in lines)
        while lines and size > LOG_KEEP_BYTES:
            size -= len(lines.pop(0).encode()) + 4
        return lines

    def _keep_log(self, session_id: str, lines: list[str]) -> None:
        name = names(session_id).service
        patch = {"metadata": {"annotations": {ANNOTATION_LOG: json.dumps(lines)}}}
        with _api_errors(f"keeping the log on service {name}"):
            self._core().patch_namespaced_service(
                name, self.namespace, patch, _content_type="application/merge-patch+json"
            )


def _k8s_account(account: str | None) -> str | None:
    """A Kubernetes service account name from `name` or `namespace/name`. A Google service
    account's email (what Cloud Run workspaces run as, in the same setting) cannot name a
    pod's account: the pods then run as the namespace's default."""
    if not account:
        return None
    if "@" in account:
        log.warning("workspace service account %s is not a Kubernetes one: ignored", account)
        return None
    return account.rpartition("/")[2]


def _lines(value: object) -> list[str]:
    """The lines kept on the Service (a JSON list), whatever was found there."""
    return [str(x) for x in value] if isinstance(value, list) else []
