"""A GKE workspace's Kubernetes objects as plain manifests (no I/O): names that are valid and
unique for any session id, labels, the pod, service and volume claim `gke.py` creates, and the
namespace's NetworkPolicies (infra/k8s/30-network-policy.yaml is these, written out).
`kubernetes-validate` checks them in the tests."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from tether.core.models import WorkspaceSpec
from tether.runtime import auth

DEFAULT_NAMESPACE = "tether-workspaces"
RUNTIME_PORT = 8080
HOME = "/home/tether"
DEFAULT_HOME_SIZE = "10Gi"
# What the workspace writes outside its home (its writable root layer, /tmp, its logs) when the
# template names no "ephemeral-storage".
DEFAULT_SCRATCH_SIZE = "2Gi"
# The uid and gid workspace processes run as, whatever the image's USER says (Tether's image
# names this user), and the gid that owns the home volume.
WORKSPACE_UID = 1000
HOME_GID = 1000
# GKE Sandbox: the RuntimeClass GKE installs, and the label and taint of its node pools.
GVISOR_RUNTIME_CLASS = "gvisor"
SANDBOX_NODE_LABEL = "sandbox.gke.io/runtime"

# Where the agent runs (infra/k8s), the only source of traffic to a runtime.
AGENT_NAMESPACE = "tether"
AGENT_LABELS = {"app.kubernetes.io/name": "tether-agent"}
# Replaced at deploy time (like PROJECT_ID): the cluster's API server endpoint, whose public
# address no private range covers.
CONTROL_PLANE_CIDR = "CONTROL_PLANE_IP/32"
# Replaced at deploy time too: the subnet the relay sends from (Direct VPC egress), the one
# source outside the cluster that reaches runtimes (terraform output `gke.relay_cidr`).
RELAY_CIDR = "RELAY_CIDR"
# A workspace pod's network is its template's: the namespace's policies select on this label.
LABEL_NETWORK = "tether.dev/network"

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


def _quantity_sum(a: str, b: str) -> str:
    from kubernetes.utils.quantity import parse_quantity

    return str(int(parse_quantity(a) + parse_quantity(b)))  # type: ignore[no-untyped-call]


# The template resources a container may name; the API server rejects any other. "storage" is
# the home's claim; "pids" has no container or pod field: a pod's process limit is the kubelet's
# podPidsLimit, a node setting, so on GKE it is not the template's.
CONTAINER_RESOURCES = ("cpu", "memory", "ephemeral-storage")


def _resources(spec: WorkspaceSpec, size: str) -> dict[str, str]:
    """Requests and limits (equal: Guaranteed QoS, nothing borrowed from a neighbour) from the
    template, only those a container has (CONTAINER_RESOURCES). The container's own disk is
    capped by "ephemeral-storage", to which a scratch home's size is added, since the kubelet
    counts emptyDir volumes against the sum of the containers' limits."""
    given = spec.template.resources
    out = {k: v for k, v in given.items() if k in CONTAINER_RESOURCES}
    scratch = given.get("ephemeral-storage", DEFAULT_SCRATCH_SIZE)
    if not spec.persistent_home:
        scratch = _quantity_sum(scratch, given.get("storage", size))
    out["ephemeral-storage"] = scratch
    return out


def pod_manifest(
    spec: WorkspaceSpec,
    namespace: str = DEFAULT_NAMESPACE,
    service_account: str | None = None,
    image: str | None = None,
    home_size: str = DEFAULT_HOME_SIZE,
    token: str | None = None,
) -> dict[str, Any]:
    """The workspace pod: the runtime, the home on the session's PVC (a scratch volume without
    a persistent home, of the template's "storage" or `home_size`), no capability, no
    credential and no network but what its template's `network` label lets through (see
    `network_policies`). `service_account` is the pod's Kubernetes service account; it gets
    no token. `image` is Tether's workspace image (infra/docker/workspace.Dockerfile); None:
    the template's own, which must then carry `tether.runtime`. `token` is what the runtime
    asks of its callers (`tether.runtime.auth`; it opens this workspace's runtime only).

    No Google identity and no Cloud Storage mount: Cloud Storage FUSE's sidecar authenticates
    through the metadata server, which user code in the same pod would then reach too."""
    n, template = names(spec.session_id), spec.template
    env = {"HOME": HOME} | template.env | spec.env
    if template.command:
        env["TETHER_MAIN_COMMAND"] = template.command  # the runtime starts it as main process
    if token:
        env[auth.ENV] = token  # the runtime takes it out of what it starts
    runtime = ["python", "-m", "tether.runtime", "--port", str(RUNTIME_PORT), "--home", HOME]
    # Tether's image has tini as its entrypoint to reap orphans, so only its arguments are
    # replaced; a template's image may have any entrypoint, so its command is.
    run = {"args": runtime} if image else {"command": runtime}
    resources = _resources(spec, home_size)
    mounts: list[dict[str, Any]] = [{"name": "home", "mountPath": HOME}]
    home: dict[str, Any] = (
        {"name": "home", "persistentVolumeClaim": {"claimName": n.pvc}}
        if spec.persistent_home
        else {
            "name": "home",
            "emptyDir": {"sizeLimit": template.resources.get("storage", home_size)},
        }
    )
    meta = _meta(n.pod, spec, namespace)
    meta["labels"][LABEL_NETWORK] = template.network
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
            # What the namespace's "restricted" Pod Security level demands, set here so that
            # an image whose USER is root still runs unprivileged.
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": WORKSPACE_UID,
                "runAsGroup": HOME_GID,
                "fsGroup": HOME_GID,
                "fsGroupChangePolicy": "OnRootMismatch",
                "seccompProfile": {"type": "RuntimeDefault"},
            },
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
                    # The root filesystem stays writable: users install packages and tools
                    # write caches and /tmp all over it. It is this container's own layer,
                    # capped by its ephemeral-storage limit.
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "privileged": False,
                        "readOnlyRootFilesystem": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": mounts,
                }
            ],
            "volumes": [home],
        },
    }
    if template.sandbox == "gvisor":
        # GKE Sandbox: a user-space kernel between the workspace and the node's. Its node
        # pools carry this label and a NoSchedule taint; naming both keeps the pod Pending
        # (rather than unsandboxed) where a cluster has no such pool.
        pod["spec"]["runtimeClassName"] = GVISOR_RUNTIME_CLASS
        pod["spec"]["nodeSelector"] = {SANDBOX_NODE_LABEL: GVISOR_RUNTIME_CLASS}
        pod["spec"]["tolerations"] = [
            {
                "key": SANDBOX_NODE_LABEL,
                "operator": "Equal",
                "value": GVISOR_RUNTIME_CLASS,
                "effect": "NoSchedule",
            }
        ]
    if service_account:
        pod["spec"]["serviceAccountName"] = service_account
    return pod


def service_manifest(spec: WorkspaceSpec, namespace: str = DEFAULT_NAMESPACE) -> dict[str, Any]:
    """The stable name of the runtime, and the record a hibernated workspace keeps. Headless:
    its name resolves to the ready pod's own address, which a VPC-native cluster routes from
    the whole VPC (a cluster IP answers inside the cluster only), so the relay, outside,
    reaches the runtime at the same name as the agent (Cloud DNS's VPC scope publishes it)."""
    n = names(spec.session_id)
    meta = _meta(n.service, spec, namespace)
    meta["annotations"][ANNOTATION_SPEC] = spec.model_dump_json()
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "None",
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


# Ranges a workspace with egress never reaches: the VPC's and the cluster's own (nodes, pods,
# Services, a private control plane), carrier-grade NAT (GKE may take pod ranges from it) and
# link-local (the metadata server at .254, GKE's at .252, NodeLocal DNSCache).
PRIVATE_RANGES = (
    "10.0.0.0/8",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
)
# Cluster DNS, wherever the cluster serves it: kube-dns pods, Cloud DNS for GKE (answered at
# the metadata server's address, port 53 only) and NodeLocal DNSCache.
_DNS_PEERS: list[dict[str, Any]] = [
    {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    },
    {"ipBlock": {"cidr": "169.254.169.254/32"}},
    {"ipBlock": {"cidr": "169.254.20.10/32"}},
]


def network_policies(
    namespace: str = DEFAULT_NAMESPACE,
    control_plane: str = CONTROL_PLANE_CIDR,
    relay: str = RELAY_CIDR,
) -> list[dict[str, Any]]:
    """The workspace namespace's NetworkPolicies, one set for every pod in it (declared once,
    applied with infra/k8s, never written by the agent, which so cannot loosen them):

    - ingress only from the agent and the relay's subnet (`relay`), only to the runtime's
      port (the runtime then asks for the session's token);
    - no egress at all, for every pod: a template with `network: "none"` reaches nothing,
      not even DNS;
    - pods labelled `network: egress` reach DNS and the internet, never a private or
      link-local range (so neither the metadata servers nor the cluster, its Services, other
      workspaces or the VPC) nor the control plane's endpoint (`control_plane`), and no IPv6.

    GKE enforces them with Dataplane V2 (or network policy enforcement) on; kubelet probes
    are not affected."""

    def policy(name: str, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"app.kubernetes.io/part-of": "tether"},
            },
            "spec": body,
        }

    agent = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": AGENT_NAMESPACE}},
        "podSelector": {"matchLabels": dict(AGENT_LABELS)},
    }
    dns_ports = [{"protocol": p, "port": 53} for p in ("UDP", "TCP")]
    return [
        policy(
            "workspace-ingress-from-agent-and-relay",
            {
                "podSelector": {},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [agent, {"ipBlock": {"cidr": relay}}],
                        "ports": [{"protocol": "TCP", "port": RUNTIME_PORT}],
                    }
                ],
            },
        ),
        policy("workspace-deny-egress", {"podSelector": {}, "policyTypes": ["Egress"]}),
        policy(
            "workspace-egress-internet",
            {
                "podSelector": {"matchLabels": {LABEL_NETWORK: "egress"}},
                "policyTypes": ["Egress"],
                "egress": [
                    {"to": [dict(peer) for peer in _DNS_PEERS], "ports": dns_ports},
                    {
                        "to": [
                            {
                                "ipBlock": {
                                    "cidr": "0.0.0.0/0",
                                    "except": [*PRIVATE_RANGES, control_plane],
                                }
                            }
                        ]
                    },
                ],
            },
        ),
    ]
