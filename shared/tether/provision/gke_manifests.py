"""A GKE workspace's Kubernetes objects as plain manifests (no I/O): names that are valid and
unique for any session id, labels, and the pod, service and volume claim `gke.py` creates.
`kubernetes-validate` checks them in the tests."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from tether.core.models import WorkspaceSpec

DEFAULT_NAMESPACE = "tether-workspaces"
RUNTIME_PORT = 8080
HOME = "/home/tether"
DEFAULT_HOME_SIZE = "10Gi"
# The gid that owns the home volume, so an image whose user is not root can write to it.
HOME_GID = 1000

LABEL_SESSION = "tether-session"
LABEL_NAMESPACE = "tether-namespace"
LABEL_USER = "tether-user"
MANAGED = {"app.kubernetes.io/managed-by": "tether", "app.kubernetes.io/component": "workspace"}
# Labels are lossy (63 safe characters); annotations keep the exact values.
ANNOTATION_SESSION = "tether.dev/session-id"
ANNOTATION_SPEC = "tether.dev/spec"
ANNOTATION_LOG = "tether.dev/log-tail"

_DNS_UNSAFE = re.compile(r"[^a-z0-9-]+")
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe(value: str, cleaned: str, limit: int) -> str:
    """`cleaned` when it is `value` unchanged and fits, else a prefix of it plus a hash of
    `value`: two ids that clean to the same text still get different names."""
    if cleaned == value and 0 < len(cleaned) <= limit:
        return cleaned
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    head = cleaned[: limit - len(digest) - 1].rstrip("-_.")
    return f"{head}-{digest}" if head else digest


def label_value(value: str) -> str:
    """A valid label value (at most 63 of [A-Za-z0-9._-], alphanumeric at both ends)."""
    return _safe(value, _LABEL_UNSAFE.sub("-", value).strip("-_."), 63)


@dataclass(frozen=True)
class Names:
    pod: str
    service: str
    pvc: str


def names(session_id: str) -> Names:
    # A Service name is a DNS-1035 label (63 characters, starting with a letter): the prefix
    # supplies the letter, the rest is the session id made safe.
    prefix = "tether-"
    slug = _DNS_UNSAFE.sub("-", session_id.lower()).strip("-")
    base = prefix + _safe(session_id, slug, 63 - len(prefix))
    return Names(pod=base, service=base, pvc=f"{base}-home")


def labels(spec: WorkspaceSpec) -> dict[str, str]:
    return {
        **MANAGED,
        LABEL_SESSION: label_value(spec.session_id),
        LABEL_NAMESPACE: label_value(spec.namespace),
        LABEL_USER: label_value(spec.user),
    }


def _meta(name: str, spec: WorkspaceSpec, namespace: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "labels": labels(spec),
        "annotations": {ANNOTATION_SESSION: spec.session_id},
    }


def pod_manifest(
    spec: WorkspaceSpec,
    namespace: str = DEFAULT_NAMESPACE,
    bucket: tuple[str, str] | None = None,
    service_account: str | None = None,
    image: str | None = None,
) -> dict[str, Any]:
    """The workspace pod: the runtime, the home on the session's PVC (a scratch volume without
    a persistent home), and with `bucket` (a Cloud Storage bucket and the session's prefix in
    it) that prefix at ~/bucket. `service_account` is the pod's Kubernetes service account
    (the one Cloud Storage FUSE authenticates as through Workload Identity). `image` is
    Tether's workspace image (infra/docker/workspace.Dockerfile); None: the template's own,
    which must then carry `tether.runtime`."""
    n, template = names(spec.session_id), spec.template
    env = {"HOME": HOME} | template.env | spec.env
    if template.command:
        env["TETHER_MAIN_COMMAND"] = template.command  # the runtime starts it as main process
    runtime = ["python", "-m", "tether.runtime", "--port", str(RUNTIME_PORT), "--home", HOME]
    # Tether's image has tini as its entrypoint to reap orphans, so only its arguments are
    # replaced; a template's image may have any entrypoint, so its command is.
    run = {"args": runtime} if image else {"command": runtime}
    resources = {k: v for k, v in template.resources.items() if k != "storage"}
    mounts: list[dict[str, Any]] = [{"name": "home", "mountPath": HOME}]
    home: dict[str, Any] = (
        {"name": "home", "persistentVolumeClaim": {"claimName": n.pvc}}
        if spec.persistent_home
        else {"name": "home", "emptyDir": {}}
    )
    volumes = [home]
    meta = _meta(n.pod, spec, namespace)
    if bucket is not None:
        # Cloud Storage through GKE's Cloud Storage FUSE CSI driver (the annotation injects its
        # sidecar), showing only the session's prefix.
        name, prefix = bucket
        meta["annotations"]["gke-gcsfuse/volumes"] = "true"
        mounts.append({"name": "bucket", "mountPath": f"{HOME}/bucket"})
        attributes = {"bucketName": name, "mountOptions": f"only-dir={prefix.strip('/')}"}
        volumes.append(
            {
                "name": "bucket",
                "csi": {"driver": "gcsfuse.csi.storage.gke.io", "volumeAttributes": attributes},
            }
        )
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {
            # User code runs here: no credentials for the cluster's API.
            "automountServiceAccountToken": False,
            # Every workspace has a Service; as env vars they would grow every new pod's env.
            "enableServiceLinks": False,
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 15,
            "securityContext": {"fsGroup": HOME_GID, "fsGroupChangePolicy": "OnRootMismatch"},
            "containers": [
                {
                    "name": "workspace",
                    "image": image or template.image,
                    **run,
                    "workingDir": HOME,
                    "env": [{"name": k, "value": v} for k, v in env.items()],
                    "ports": [{"name": "runtime", "containerPort": RUNTIME_PORT}],
                    "readinessProbe": {
                        "httpGet": {"path": "/health", "port": "runtime"},
                        "periodSeconds": 2,
                        "timeoutSeconds": 2,
                        "failureThreshold": 3,
                    },
                    "resources": {"requests": resources, "limits": dict(resources)},
                    "volumeMounts": mounts,
                }
            ],
            "volumes": volumes,
        },
    }
    if service_account:
        pod["spec"]["serviceAccountName"] = service_account
    return pod


def service_manifest(spec: WorkspaceSpec, namespace: str = DEFAULT_NAMESPACE) -> dict[str, Any]:
    """The stable address of the runtime, and the record a hibernated workspace keeps."""
    n = names(spec.session_id)
    meta = _meta(n.service, spec, namespace)
    meta["annotations"][ANNOTATION_SPEC] = spec.model_dump_json()
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": "ClusterIP",
            "selector": {LABEL_SESSION: label_value(spec.session_id)},
            "ports": [
                {
                    "name": "runtime",
                    "port": RUNTIME_PORT,
                    "targetPort": "runtime",
                    "protocol": "TCP",
                }
            ],
        },
    }


def pvc_manifest(
    spec: WorkspaceSpec,
    namespace: str = DEFAULT_NAMESPACE,
    storage_class: str | None = None,
    size: str = DEFAULT_HOME_SIZE,
) -> dict[str, Any]:
    """The home volume; a template's `resources["storage"]` overrides `size`."""
    pvc_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": spec.template.resources.get("storage", size)}},
    }
    if storage_class:
        pvc_spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(names(spec.session_id).pvc, spec, namespace),
        "spec": pvc_spec,
    }
