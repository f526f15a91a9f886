"""A Kubernetes API server, in memory, at the wire, for two clients: the GKE provisioner (the
real `kubernetes` client: pods, services and persistentvolumeclaims in a namespace — create,
get, list, watch, patch, delete) and Kubently's cluster agent (the real `kubectl` with its read
verbs: get, describe, logs, top, events, version, api-resources, api-versions, explain).

It answers like the real one: `Status` bodies with the real reasons and codes; legacy discovery
(`/api`, `/apis`, ...), `/version` and OpenAPI v3 for `kubectl explain`; lists, gets and
watches as JSON or, when asked (`Accept: ...;as=Table`), as the server-side `Table` kubectl
prints; `fieldSelector`/`labelSelector`; watches as chunked newline-delimited JSON events
resuming from a `resourceVersion`; pods/log with tailLines, previous, timestamps and follow;
metrics.k8s.io for `kubectl top`. Bearer tokens are checked when any is configured (401), each
with its own forbidden resources (403), and with `rules` (a Role's rules) every request is
authorised. A created pod goes Pending, then after `ready_delay` Running and Ready; a deleted
one terminates for `termination_delay` first (MODIFIED with a deletionTimestamp, then DELETED).

`FakeKube.cluster()` serves the sample cluster in kube_data/ (namespaces default and
kube-system, two nodes, pods incl. a crash-looping one with a previous log, a deployment,
events, a secret, metrics). With a token it serves https, as kubectl sends credentials over
https only:

    with FakeKube.cluster(token="admin") as kube:
        kube.add_token("agent", forbid={"secrets"})        # 403 for secrets to this one
        config = kube.write_kubeconfig(tmp_path, token="agent")
        # kubectl --kubeconfig <config>, with HOME=tmp_path (its discovery cache)
        kube.calls("/api/v1/namespaces/default/pods")      # what it asked: .method .path .query
        kube.append_log("default", "nginx", "a line")      # reaches `kubectl logs -f`
        kube.put(changed_pod)                              # reaches `kubectl get -w`
"""

from __future__ import annotations

import atexit
import base64
import builtins
import copy
import functools
import hashlib
import json
import re
import select
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

import yaml

DATA = Path(__file__).with_name("kube_data")
# The moment the seed data is written as seen at: shifted to now on load.
SEEN_AT = datetime(2025, 1, 1, 12, tzinfo=UTC)
VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.4",
    "gitCommit": "59526cd4867447956156ae3a602fcbac10a2c335",
    "gitTreeState": "clean",
    "buildDate": "2025-04-22T16:02:27Z",
    "goVersion": "go1.23.6",
    "compiler": "gc",
    "platform": "linux/amd64",
}

# What can be created (the provisioner's objects); every other resource is read-only here.
KINDS = {"pods": "Pod", "services": "Service", "persistentvolumeclaims": "PersistentVolumeClaim"}
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$")
_RESOURCE_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<res>[^/]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?/?$"
)
_NOT_FOUND = "the server could not find the requested resource"

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
_POD_FIELDS = {
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
}
_EVENT_FIELDS = {
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
}


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    name: str  # plural, as in the path
    kind: str
    namespaced: bool = True
    short: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    categories: tuple[str, ...] = ()
    fields: frozenset[str] = frozenset()  # field selectors besides metadata.name/namespace
    subresources: tuple[str, ...] = ()
    stored_in: str = ""  # a view of another resource's objects (events.k8s.io events)

    @property
    def key(self) -> str:
        """Where its objects are kept: `pods`, `deployments.apps`, `pods.metrics.k8s.io`."""
        return self.stored_in or (f"{self.name}.{self.group}" if self.group else self.name)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def prefix(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else "/api/v1"


def _r(*args: Any, **kw: Any) -> Resource:
    if "fields" in kw:
        kw["fields"] = frozenset(kw["fields"])
    return Resource(*args, **kw)


# fmt: off
RESOURCES = (
    _r("", "v1", "namespaces", "Namespace", namespaced=False, short=("ns",),
       fields={"status.phase"}, subresources=("status",)),
    _r("", "v1", "nodes", "Node", namespaced=False, short=("no",),
       fields={"spec.unschedulable"}, subresources=("status",)),
    _r("", "v1", "pods", "Pod", short=("po",), categories=("all",), fields=_POD_FIELDS,
       subresources=("log", "status")),
    _r("", "v1", "services", "Service", short=("svc",), categories=("all",)),
    _r("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", short=("pvc",)),
    _r("", "v1", "configmaps", "ConfigMap", short=("cm",)),
    _r("", "v1", "secrets", "Secret", fields={"type"}),
    _r("", "v1", "events", "Event", short=("ev",), fields=_EVENT_FIELDS),
    _r("apps", "v1", "deployments", "Deployment", short=("deploy",), categories=("all",)),
    _r("apps", "v1", "replicasets", "ReplicaSet", short=("rs",), categories=("all",)),
    _r("events.k8s.io", "v1", "events", "Event", short=("ev",), stored_in="events"),
    _r("coordination.k8s.io", "v1", "leases", "Lease"),
    _r("metrics.k8s.io", "v1beta1", "pods", "PodMetrics", verbs=("get", "list")),
    _r("metrics.k8s.io", "v1beta1", "nodes", "NodeMetrics", namespaced=False,
       verbs=("get", "list")),
)
# fmt: on
_BY_PATH = {(r.group, r.version, r.name): r for r in RESOURCES}
_BY_KIND = {(r.api_version, r.kind): r for r in RESOURCES if not r.stored_in}
_BY_KEY = {r.key: r for r in RESOURCES if not r.stored_in}


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def status(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


class ApiError(Exception):
    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body["message"])
        self.body = body


class Request(NamedTuple):
    """One request as it arrived; unpacks as (method, path with query, verb)."""

    method: str
    path: str
    verb: str

    @property
    def route(self) -> str:
        return urlsplit(self.path).path

    @property
    def query(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}


@dataclass(frozen=True)
class Account:
    user: str
    forbid: frozenset[str] = field(default_factory=frozenset)  # "secrets", "pods/log", ...


def _field(obj: dict[str, Any], path: str) -> str:
    value: Any = obj
    for part in {"source": "source.component"}.get(path, path).split("."):
        value = value.get(part, {}) if isinstance(value, dict) else {}
    if isinstance(value, bool):
        return str(value).lower()
    return value if isinstance(value, str) else ""


def _selector(raw: str | None, fields: Iterable[str] | None) -> Callable[[dict[str, Any]], bool]:
    """A matcher for a fieldSelector (`a=b`, `a==b`, `a!=b`; `fields` the keys it may use) or,
    with `fields` None, a labelSelector (those, plus `key`, `!key`, `key in (a,b)`,
    `key notin (a,b)`): comma-separated terms all of which must hold."""
    allowed = None if fields is None else {"metadata.name", "metadata.namespace", *fields}
    terms: list[tuple[str, str, set[str]]] = []
    for term in re.split(r",(?![^()]*\))", raw or ""):
        term = term.strip()
        if not term:
            continue
        equality = re.fullmatch(r"([^=!\s]+?)\s*(==|!=|=)\s*(.*)", term)
        sets = re.fullmatch(r"(\S+)\s+(in|notin)\s+\(([^)]*)\)", term)
        if equality:
            key, op, value = equality.groups()
            terms.append((key.strip(), "!=" if op == "!=" else "=", {value.strip()}))
        elif allowed is None and sets:
            key, op, values = sets.groups()
            terms.append((key, op, {v.strip() for v in values.split(",")}))
        elif allowed is None and re.fullmatch(r"!?[A-Za-z0-9][-A-Za-z0-9_./]*", term):
            terms.append((term.lstrip("!"), "absent" if term[0] == "!" else "present", set()))
        else:
            raise ApiError(status(400, "BadRequest", f"invalid selector: {raw!r}"))
        if allowed is not None and terms[-1][0] not in allowed:
            raise ApiError(
                status(400, "BadRequest", f'field label not supported: "{terms[-1][0]}"')
            )

    def match(obj: dict[str, Any]) -> bool:
        got_labels = obj.get("metadata", {}).get("labels") or {}
        for key, op, values in terms:
            got = _field(obj, key) if allowed is not None else got_labels.get(key)
            if op == "present":
                held = got is not None
            elif op == "absent":
                held = got is None
            else:
                held = (got in values) == (op in ("=", "in"))
            if not held:
                return False
        return True

    return match


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """JSON merge patch (RFC 7386): what a strategic merge patch does to maps as well."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


def _route(path: str) -> tuple[Resource | None, str | None, str | None, str | None]:
    """(resource, namespace, name, subresource) of a resource path; all None if not one."""
    match = _RESOURCE_PATH.match(path)
    if not match:
        return None, None, None, None
    res = _BY_PATH.get((match["group"] or "", match["core"] or match["version"], match["res"]))
    return res, match["ns"], match["name"], match["sub"]


def _verb(method: str, name: str | None, query: dict[str, str]) -> str:
    if method == "GET":
        if name:
            return "get"
        return "watch" if query.get("watch") in ("true", "1") else "list"
    return {"POST": "create", "DELETE": "delete", "PATCH": "patch", "PUT": "update"}[method]


def _shift(value: Any, delta: timedelta) -> Any:
    """The seed data with every timestamp moved by `delta`."""
    if isinstance(value, dict):
        return {k: _shift(v, delta) for k, v in value.items()}
    if isinstance(value, list):
        return [_shift(v, delta) for v in value]
    if isinstance(value, str) and (match := _TIMESTAMP.match(value)):
        micro = ".%f" if match[1] else ""  # a MicroTime keeps its microseconds
        return (_parse_time(value) + delta).strftime(f"%Y-%m-%dT%H:%M:%S{micro}Z")
    return value


def _as_events_v1(event: dict[str, Any]) -> dict[str, Any]:
    """A core/v1 Event as events.k8s.io/v1 shows it."""
    source = event.get("source") or {}
    out = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": copy.deepcopy(event["metadata"]),
        "eventTime": event.get("eventTime"),
        "reportingController": event.get("reportingComponent") or source.get("component", ""),
        "reportingInstance": event.get("reportingInstance") or source.get("host", ""),
        "action": event.get("action", ""),
        "reason": event.get("reason", ""),
        "regarding": copy.deepcopy(event.get("involvedObject") or {}),
        "note": event.get("message", ""),
        "type": event.get("type", ""),
        "deprecatedSource": copy.deepcopy(source),
        "deprecatedFirstTimestamp": event.get("firstTimestamp"),
        "deprecatedLastTimestamp": event.get("lastTimestamp"),
        "deprecatedCount": event.get("count", 0),
    }
    return {k: v for k, v in out.items() if v is not None}


# -- Tables: what the real server's printers put in the columns kubectl shows ------------------


def _age(ts: str | None) -> str:
    """k8s.io/apimachinery's duration.HumanDuration of the time since `ts`."""
    if not ts:
        return "<unknown>"
    seconds = int((datetime.now(UTC) - _parse_time(ts)).total_seconds())
    if seconds < -1:
        return "<invalid>"
    if seconds < 120:
        return f"{max(seconds, 0)}s"
    minutes, hours = seconds // 60, seconds // 3600
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    return f"{hours // 24 // 365}y"


def _created(obj: dict[str, Any]) -> str:
    return _age(obj["metadata"].get("creationTimestamp"))


def _labels(selector: dict[str, Any] | None) -> str:
    labels = (selector or {}).get("matchLabels", selector) or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "<none>"


def _pod_row(pod: dict[str, Any]) -> list[Any]:
    spec, st = pod.get("spec") or {}, pod.get("status") or {}
    statuses = st.get("containerStatuses") or []
    reason = st.get("reason") or st.get("phase") or "Unknown"
    restarts, last_restart = 0, ""
    for c in statuses:
        restarts += c.get("restartCount", 0)
        state = c.get("state") or {}
        ended = state.get("terminated")
        if (state.get("waiting") or {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif ended:
            reason = ended.get("reason") or f"ExitCode:{ended.get('exitCode', 0)}"
        finished = ((c.get("lastState") or {}).get("terminated") or {}).get("finishedAt", "")
        last_restart = max(last_restart, finished)
    if "deletionTimestamp" in pod["metadata"]:
        reason = "Terminating"
    ready = sum(1 for c in statuses if c.get("ready"))
    gates = spec.get("readinessGates") or []
    return [
        pod["metadata"]["name"],
        f"{ready}/{len(spec.get('containers') or [])}",
        reason,
        f"{restarts} ({_age(last_restart)} ago)" if restarts and last_restart else str(restarts),
        _created(pod),
        st.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
        st.get("nominatedNodeName") or "<none>",
        f"0/{len(gates)}" if gates else "<none>",
    ]


def _workload_row(obj: dict[str, Any], deployment: bool) -> list[Any]:
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    containers = spec.get("template", {}).get("spec", {}).get("containers") or []
    counts = (
        [
            f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
            st.get("updatedReplicas", 0),
            st.get("availableReplicas", 0),
        ]
        if deployment
        else [spec.get("replicas", 1), st.get("replicas", 0), st.get("readyReplicas", 0)]
    )
    return [
        obj["metadata"]["name"],
        *counts,
        _created(obj),
        ",".join(c["name"] for c in containers),
        ",".join(c.get("image", "") for c in containers),
        _labels(spec.get("selector")),
    ]


def _node_row(node: dict[str, Any]) -> list[Any]:
    st, labels = node.get("status") or {}, node["metadata"].get("labels") or {}
    ready: dict[str, Any] = next(
        (c for c in st.get("conditions") or [] if c["type"] == "Ready"), {}
    )
    state = {"True": "Ready", "False": "NotReady"}.get(ready.get("status", ""), "Unknown")
    if (node.get("spec") or {}).get("unschedulable"):
        state += ",SchedulingDisabled"
    roles = sorted(
        k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/")
    ) or ["<none>"]
    addresses = {a["type"]: a["address"] for a in st.get("addresses") or []}
    info = st.get("nodeInfo") or {}
    return [
        node["metadata"]["name"],
        state,
        ",".join(roles),
        _created(node),
        info.get("kubeletVersion", ""),
        addresses.get("InternalIP", "<none>"),
        addresses.get("ExternalIP", "<none>"),
        info.get("osImage", "<unknown>"),
        info.get("kernelVersion", "<unknown>"),
        info.get("containerRuntimeVersion", "<unknown>"),
    ]


def _event_row(ev: dict[str, Any]) -> list[Any]:
    regarding = ev.get("involvedObject") or ev.get("regarding") or {}
    source = ev.get("source") or ev.get("deprecatedSource") or {}
    last = ev.get("lastTimestamp") or ev.get("deprecatedLastTimestamp") or ev.get("eventTime")
    first = ev.get("firstTimestamp") or ev.get("deprecatedFirstTimestamp") or last
    return [
        _age(last),
        ev.get("type", ""),
        ev.get("reason", ""),
        f"{regarding.get('kind', '').lower()}/{regarding.get('name', '')}",
        regarding.get("fieldPath", ""),
        ", ".join(v for v in (source.get("component"), source.get("host")) if v),
        ev.get("message", ev.get("note", "")),
        _age(first),
        ev.get("count", ev.get("deprecatedCount", 1)),
        ev["metadata"]["name"],
    ]


def _service_row(svc: dict[str, Any]) -> list[Any]:
    spec = svc.get("spec") or {}
    ports = [
        f"{p['port']}{':' + str(p['nodePort']) if p.get('nodePort') else ''}/"
        f"{p.get('protocol', 'TCP')}"
        for p in spec.get("ports") or []
    ]
    return [
        svc["metadata"]["name"],
        spec.get("type", "ClusterIP"),
        spec.get("clusterIP") or "<none>",
        ",".join(spec.get("externalIPs") or []) or "<none>",
        ",".join(ports) or "<none>",
        _created(svc),
        _labels(spec.get("selector")),
    ]


def _pvc_row(pvc: dict[str, Any]) -> list[Any]:
    spec, st = pvc.get("spec") or {}, pvc.get("status") or {}
    modes = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX"}
    return [
        pvc["metadata"]["name"],
        st.get("phase", "Pending"),
        spec.get("volumeName", ""),
        (st.get("capacity") or {}).get("storage", ""),
        ",".join(modes.get(m, m) for m in st.get("accessModes") or []),
        spec.get("storageClassName") or "<unset>",
        _created(pvc),
    ]


_S, _I = "string", "integer"
# resource key -> ((column, type, priority), ...), row; priority 1 columns show with -o wide.
# fmt: off
PRINTERS: dict[str, tuple[tuple[tuple[str, str, int], ...], Callable[[Any], list[Any]]]] = {
    "pods": (
        (("Name", _S, 0), ("Ready", _S, 0), ("Status", _S, 0), ("Restarts", _S, 0),
         ("Age", _S, 0), ("IP", _S, 1), ("Node", _S, 1), ("Nominated Node", _S, 1),
         ("Readiness Gates", _S, 1)),
        _pod_row,
    ),
    "deployments.apps": (
        (("Name", _S, 0), ("Ready", _S, 0), ("Up-to-date", _I, 0), ("Available", _I, 0),
         ("Age", _S, 0), ("Containers", _S, 1), ("Images", _S, 1), ("Selector", _S, 1)),
        lambda d: _workload_row(d, deployment=True),
    ),
    "replicasets.apps": (
        (("Name", _S, 0), ("Desired", _I, 0), ("Current", _I, 0), ("Ready", _I, 0),
         ("Age", _S, 0), ("Containers", _S, 1), ("Images", _S, 1), ("Selector", _S, 1)),
        lambda r: _workload_row(r, deployment=False),
    ),
    "nodes": (
        (("Name", _S, 0), ("Status", _S, 0), ("Roles", _S, 0), ("Age", _S, 0),
         ("Version", _S, 0), ("Internal-IP", _S, 1), ("External-IP", _S, 1),
         ("OS-Image", _S, 1), ("Kernel-Version", _S, 1), ("Container-Runtime", _S, 1)),
        _node_row,
    ),
    "events": (
        (("Last Seen", _S, 0), ("Type", _S, 0), ("Reason", _S, 0), ("Object", _S, 0),
         ("Subobject", _S, 1), ("Source", _S, 1), ("Message", _S, 0), ("First Seen", _S, 1),
         ("Count", _I, 1), ("Name", _S, 1)),
        _event_row,
    ),
    "namespaces": (
        (("Name", _S, 0), ("Status", _S, 0), ("Age", _S, 0)),
        lambda n: [n["metadata"]["name"], n.get("status", {}).get("phase", "Active"), _created(n)],
    ),
    "services": (
        (("Name", _S, 0), ("Type", _S, 0), ("Cluster-IP", _S, 0), ("External-IP", _S, 0),
         ("Port(s)", _S, 0), ("Age", _S, 0), ("Selector", _S, 1)),
        _service_row,
    ),
    "persistentvolumeclaims": (
        (("Name", _S, 0), ("Status", _S, 0), ("Volume", _S, 0), ("Capacity", _S, 0),
         ("Access Modes", _S, 0), ("StorageClass", _S, 0), ("Age", _S, 0)),
        _pvc_row,
    ),
    "secrets": (
        (("Name", _S, 0), ("Type", _S, 0), ("Data", _I, 0), ("Age", _S, 0)),
        lambda s: [s["metadata"]["name"], s.get("type", "Opaque"), len(s.get("data") or {}),
                   _created(s)],
    ),
    "configmaps": (
        (("Name", _S, 0), ("Data", _I, 0), ("Age", _S, 0)),
        lambda c: [c["metadata"]["name"], len(c.get("data") or {}), _created(c)],
    ),
    "leases.coordination.k8s.io": (
        (("Name", _S, 0), ("Holder", _S, 0), ("Age", _S, 0)),
        lambda lease: [lease["metadata"]["name"],
                       lease.get("spec", {}).get("holderIdentity", ""), _created(lease)],
    ),
}
# fmt: on
_DEFAULT_PRINTER: tuple[tuple[tuple[str, str, int], ...], Callable[[Any], list[Any]]] = (
    (("Name", _S, 0), ("Created At", "date", 0)),
    lambda o: [o["metadata"]["name"], o["metadata"].get("creationTimestamp", "")],
)


def table(
    res: Resource, objects: list[dict[str, Any]], rv: str, include: str = "Metadata"
) -> dict[str, Any]:
    """A meta.k8s.io/v1 Table of `objects`, each row carrying its object as `include` says
    (None, Metadata: a PartialObjectMetadata, Object)."""
    columns, row = PRINTERS.get(res.key, _DEFAULT_PRINTER)

    def carried(obj: dict[str, Any]) -> dict[str, Any] | None:
        if include == "None":
            return None
        if include == "Object":
            return obj
        return {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj["metadata"],
        }

    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv},
        "columnDefinitions": [
            {
                "name": name,
                "type": kind,
                "format": "name" if name == "Name" else "",
                "description": "",
                "priority": priority,
            }
            for name, kind, priority in columns
        ],
        "rows": [{"cells": row(obj), "object": carried(obj)} for obj in objects],
    }


# -- discovery and OpenAPI ----------------------------------------------------------------------


def _group_versions() -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for r in RESOURCES:
        if r.group and r.version not in groups.setdefault(r.group, []):
            groups[r.group].append(r.version)
    return groups


def _api_group(name: str, versions: list[str]) -> dict[str, Any]:
    listed = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": listed, "preferredVersion": listed[0]}


def _resource_list(group: str, version: str) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for r in RESOURCES:
        if (r.group, r.version) != (group, version):
            continue
        entry: dict[str, Any] = {
            "name": r.name,
            "singularName": r.kind.lower(),
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": list(r.verbs),
        }
        if r.short:
            entry["shortNames"] = list(r.short)
        if r.categories:
            entry["categories"] = list(r.categories)
        resources.append(entry)
        for sub in r.subresources:
            verbs = ["get"] if sub == "log" else ["get", "patch", "update"]
            resources.append(
                {
                    "name": f"{r.name}/{sub}",
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": verbs,
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


def _openapi_documents() -> dict[str, dict[str, Any]]:
    """`/openapi/v3/<path>` -> the document `kubectl explain` reads for that group version: the
    schemas, and the paths it finds a resource's kind by."""
    schemas = yaml.safe_load((DATA / "openapi.yaml").read_text())
    kinds = {
        (gvk["group"], gvk["version"], gvk["kind"])
        for schema in schemas.values()
        for gvk in schema.get("x-kubernetes-group-version-kind", [])
    }
    docs: dict[str, dict[str, Any]] = {}
    for r in RESOURCES:
        if (r.group, r.version, r.kind) not in kinds or r.stored_in:
            continue
        scope = "/namespaces/{namespace}" if r.namespaced else ""
        gvk = {"group": r.group, "kind": r.kind, "version": r.version}
        doc = docs.setdefault(
            r.prefix.lstrip("/"),
            {
                "openapi": "3.0.0",
                "info": {"title": "Kubernetes", "version": VERSION["gitVersion"]},
                "paths": {},
                "components": {"schemas": schemas},
            },
        )
        doc["paths"][f"{r.prefix}{scope}/{r.name}/{{name}}"] = {
            "get": {"description": f"read the specified {r.kind}",
                    "x-kubernetes-action": "get", "x-kubernetes-group-version-kind": gvk}
        }  # fmt: skip
    return docs


# -- the server -------------------------------------------------------------------------------


class FakeKube:
    def __init__(
        self,
        namespaces: tuple[str, ...] = ("default",),
        *,
        ready_delay: float = 0.1,
        termination_delay: float = 0.1,
        rules: list[dict[str, Any]] | None = None,
        rules_namespace: str | None = None,
        user: str = "system:serviceaccount:tether-system:tether-agent",
        token: str | None = None,
        forbid: Iterable[str] = (),
        tls: bool | None = None,
    ) -> None:
        """Without `token` anyone may call; with it, that bearer token is required (more with
        `add_token`), and `forbid` lists the resources it gets 403 for ("secrets"). `tls`
        (default: when there is a token, as kubectl sends credentials over https only) serves
        https with a certificate for 127.0.0.1 that `ca_file` holds."""
        self.ready_delay = ready_delay
        self.termination_delay = termination_delay
        self.rules = rules
        self.rules_namespace = rules_namespace
        self.user = user
        self.schedulable = True  # False: pods stay Pending, Unschedulable
        self.broken_images: set[str] = set()  # pods with these images go to ImagePullBackOff
        # Watches from a resourceVersion this many times get "410 Gone" (history compacted).
        self.expire_watches = 0
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # key, ns ("": cluster)
        self.history: list[tuple[int, str, str, str, dict[str, Any]]] = []  # rv, key, ns, type
        self.logs: dict[tuple[str, str, str, bool], list[tuple[datetime, str]]] = {}
        self.requests: list[Request] = []
        self.used: set[tuple[str, str]] = set()  # (verb, resource) that were authorised
        self.tokens: dict[str, Account] = {}
        self._failures: dict[tuple[str, str], tuple[int, int]] = {}  # -> (code, times)
        self._forbidden: set[tuple[str, str]] = set()
        self._rv = 100
        self._cond = threading.Condition()
        self._timers: list[threading.Timer] = []
        self._closed = False
        self._openapi = _openapi_documents()
        self._server = _Server(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.ca_file: Path | None = None
        if tls or (tls is None and token is not None):
            self.ca_file, key = _certificate()
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.ca_file, key)
            # The handshake runs on the handler's thread (Handler.setup), not the acceptor's.
            self._server.socket = context.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._thread: threading.Thread | None = None
        if token is not None:
            self.add_token(token, user=user, forbid=forbid)
        for ns in namespaces:
            self.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})

    @classmethod
    def cluster(cls, **kw: Any) -> FakeKube:
        """The sample cluster of kube_data/ (not yet started)."""
        kube = cls((), **kw)
        kube.load(DATA / "cluster.yaml", DATA / "logs.yaml")
        return kube

    # -- running -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{'https' if self.ca_file else 'http'}://{host!s}:{port}"

    def start(self) -> FakeKube:
        # A short poll interval: shutdown() waits for one, at every test's teardown.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            for timer in self._timers:
                timer.cancel()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeKube:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def client(self, token: str | None = None) -> Any:
        """The real `kubernetes` client, configured for this server."""
        from kubernetes import client

        config = client.Configuration(host=self.url)
        if self.ca_file:
            config.ssl_ca_cert = str(self.ca_file)
        if token is not None:
            config.api_key = {"authorization": f"Bearer {token}"}
        return client.ApiClient(config)

    def write_kubeconfig(
        self, path: Path, *, token: str | None = None, namespace: str = "default"
    ) -> Path:
        """A kubeconfig whose current context is this server, trusting its certificate, with
        `token` as its bearer token; `path` may be a directory."""
        path = path / "kubeconfig" if path.is_dir() else path
        user: dict[str, Any] = {"token": token} if token is not None else {}
        cluster: dict[str, Any] = {"server": self.url}
        if self.ca_file:
            cluster["certificate-authority-data"] = base64.b64encode(
                self.ca_file.read_bytes()
            ).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": cluster}],
            "users": [{"name": "fake", "user": user}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "fake", "namespace": namespace},
                }
            ],
            "current-context": "fake",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # -- what tests arrange and look at ------------------------------------------------------

    def add_token(self, token: str, *, user: str | None = None, forbid: Iterable[str] = ()) -> None:
        """Accept `token` as `user`, answering 403 to any request for a resource in `forbid`
        ("secrets", "pods/log", "deployments.apps"), as RBAC would."""
        self.tokens[token] = Account(user or self.user, frozenset(forbid))

    def forbid(self, verb: str, resource: str) -> None:
        """Answer 403 Forbidden to `verb` on `resource`, as RBAC does."""
        self._forbidden.add((verb, resource))

    def fail(self, verb: str, resource: str, code: int, times: int = 1) -> None:
        """Answer the next `times` such requests with `code` (500, 503, ...)."""
        self._failures[(verb, resource)] = (code, times)

    def calls(self, route: str = "") -> list[Request]:
        """The requests so far whose path (without the query) starts with `route`."""
        with self._cond:
            return [r for r in self.requests if r.route.startswith(route)]

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._cond:
            obj = self.objects.get((resource, namespace, name))
            return copy.deepcopy(obj) if obj else None

    def names(self, resource: str, namespace: str) -> list[str]:
        with self._cond:
            return sorted(n for (r, ns, n) in self.objects if r == resource and ns == namespace)

    def ready_endpoint(self, namespace: str, service: str) -> bool:
        """Whether the Service would route somewhere: a Ready, not terminating pod that its
        selector picks (what kube-proxy and cluster DNS give a client in the cluster)."""
        with self._cond:
            svc = self.objects.get(("services", namespace, service))
            if svc is None:
                return False
            selector = svc["spec"].get("selector") or {}
            for (res, ns, _), pod in self.objects.items():
                labels = pod["metadata"].get("labels") or {}
                if res != "pods" or ns != namespace or "deletionTimestamp" in pod["metadata"]:
                    continue
                if all(labels.get(k) == v for k, v in selector.items()) and _ready(pod):
                    return True
            return False

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Add or replace any object (by its apiVersion and kind), as a controller would:
        watches see it ADDED or MODIFIED."""
        res = _BY_KIND[(obj["apiVersion"], obj["kind"])]
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        ns = meta.setdefault("namespace", "default") if res.namespaced else ""
        with self._cond:
            old = self.objects.get((res.key, ns, meta["name"]))
            meta.setdefault("uid", old["metadata"]["uid"] if old else str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", now())
            involved = obj.get("involvedObject")
            if res.key == "events" and involved and "uid" not in involved:
                found = self._find(
                    involved.get("kind", ""),
                    involved.get("namespace", ""),
                    involved.get("name", ""),
                )
                if found:
                    involved["uid"] = found["metadata"]["uid"]
            self.objects[(res.key, ns, meta["name"])] = obj
            self._bump(res.key, ns, "MODIFIED" if old else "ADDED", obj)
            return copy.deepcopy(obj)

    def remove(self, resource: str, namespace: str, name: str) -> None:
        """Delete at once (no grace period): watches see it DELETED."""
        with self._cond:
            obj = self.objects.get((resource, namespace, name))
            if obj is not None:
                self._remove(resource, namespace, name, obj["metadata"]["uid"])

    def append_log(
        self,
        namespace: str,
        pod: str,
        line: str,
        *,
        container: str | None = None,
        previous: bool = False,
    ) -> None:
        """Add a line to a container's log (the pod's first container by default): followers
        (`kubectl logs -f`) get it at once."""
        with self._cond:
            if container is None:
                found = self.objects.get(("pods", namespace, pod))
                container = found["spec"]["containers"][0]["name"] if found else pod
            lines = self.logs.setdefault((namespace, pod, container, previous), [])
            lines.append((datetime.now(UTC), line))
            self._cond.notify_all()

    def load(self, objects: Path, logs: Path | None = None) -> None:
        """Objects from a multi-document YAML file and logs from a YAML map of
        `namespace/pod/container[/previous]` to text, all timestamps shifted so that
        SEEN_AT is now (events last: they take the uid of the object they name)."""
        delta = datetime.now(UTC).replace(microsecond=0) - SEEN_AT
        docs = [_shift(d, delta) for d in yaml.safe_load_all(objects.read_text()) if d]
        for doc in sorted(docs, key=lambda d: d["kind"] == "Event"):
            self.put(doc)
        for key, text in (yaml.safe_load(logs.read_text()) if logs else {}).items():
            ns, pod, container, *previous = key.split("/")
            lines = text.splitlines()
            with self._cond:
                start = datetime.now(UTC) - timedelta(seconds=len(lines))
                self.logs[(ns, pod, container, bool(previous))] = [
                    (start + timedelta(seconds=i), line) for i, line in enumerate(lines)
                ]

    # -- state changes (under the lock) ------------------------------------------------------

    def _find(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        for (_, n, nm), obj in self.objects.items():
            if obj.get("kind") == kind and nm == name and n in (ns, ""):
                return obj
        return None

    def _bump(self, resource: str, ns: str, kind: str, obj: dict[str, Any]) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self.history.append((self._rv, resource, ns, kind, copy.deepcopy(obj)))
        self._cond.notify_all()

    def _later(self, delay: float, action: Callable[[], None]) -> None:
        def run() -> None:
            with self._cond:
                if not self._closed:
                    action()

        timer = threading.Timer(delay, run)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _progress_pod(self, ns: str, name: str, uid: str) -> None:
        pod = self.objects.get(("pods", ns, name))
        if pod is None or pod["metadata"]["uid"] != uid or "deletionTimestamp" in pod["metadata"]:
            return
        container = pod["spec"]["containers"][0]
        if not self.schedulable:
            pod["status"]["conditions"] = [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient cpu.",
                    "lastTransitionTime": now(),
                }
            ]
        elif container["image"] in self.broken_images:
            pod["status"]["containerStatuses"] = [
                {
                    "name": container["name"],
                    "image": container["image"],
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {
                        "waiting": {
                            "reason": "ImagePullBackOff",
                            "message": f'Back-off pulling image "{container["image"]}"',
                        }
                    },
                }
            ]
        else:
            t = now()
            pod["status"].update(
                phase="Running",
                podIP=f"10.8.0.{len(self.objects) % 250 + 2}",
                startTime=t,
                conditions=[
                    {"type": c, "status": "True", "lastTransitionTime": t}
                    for c in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
                ],
                containerStatuses=[
                    {
                        "name": container["name"],
                        "image": container["image"],
                        "imageID": f"{container['image']}@sha256:{'0' * 64}",
                        "ready": True,
                        "started": True,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": t}},
                    }
                ],
            )
        self._bump("pods", ns, "MODIFIED", pod)

    def _remove(self, resource: str, ns: str, name: str, uid: str) -> None:
        obj = self.objects.get((resource, ns, name))
        if obj is not None and obj["metadata"]["uid"] == uid:
            del self.objects[(resource, ns, name)]
            self._bump(resource, ns, "DELETED", obj)

    # -- the API -----------------------------------------------------------------------------

    def authenticate(self, header: str | None) -> Account:
        if not self.tokens:
            return Account(self.user)
        scheme, _, token = (header or "").partition(" ")
        account = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if account is None:
            raise ApiError(status(401, "Unauthorized", "Unauthorized"))
        return account

    def authorise(
        self,
        verb: str,
        res: Resource,
        ns: str,
        name: str | None,
        account: Account | None = None,
        sub: str = "",
    ) -> None:
        resource = f"{res.name}/{sub}" if sub else res.name
        account = account or Account(self.user)
        denied = {resource, f"{resource}.{res.group}"} & account.forbid
        allowed = (verb, resource) not in self._forbidden and not denied
        if allowed and self.rules is not None:
            allowed = ns == self.rules_namespace and any(
                res.group in rule.get("apiGroups", [])
                and resource in rule.get("resources", [])
                and (verb in rule.get("verbs", []) or "*" in rule.get("verbs", []))
                and (not rule.get("resourceNames") or name in rule["resourceNames"])
                for rule in self.rules
            )
        if not allowed:
            what = f'{res.name} "{name}"' if name else res.name
            where = f'in the namespace "{ns}"' if ns else "at the cluster scope"
            raise ApiError(
                status(
                    403,
                    "Forbidden",
                    f'{what} is forbidden: User "{account.user}" cannot {verb} resource '
                    f'"{resource}" in API group "{res.group}" {where}',
                    kind=res.name,
                    **({"name": name} if name else {}),
                )
            )
        self.used.add((verb, resource))
        failure = self._failures.get((verb, resource))
        if failure:
            code, times = failure
            if times <= 1:
                del self._failures[(verb, resource)]
            else:
                self._failures[(verb, resource)] = (code, times - 1)
            reason = {500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}
            raise ApiError(status(code, reason.get(code, "InternalError"), "injected failure"))

    def create(self, resource: str, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        kind = KINDS[resource]
        if body.get("kind") != kind or body.get("apiVersion") != "v1":
            raise ApiError(
                status(400, "BadRequest", f"the body is not a v1 {kind}: {body.get('kind')!r}")
            )
        meta = body.setdefault("metadata", {})
        if meta.get("namespace", ns) != ns:
            raise ApiError(
                status(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request",
                )
            )
        name = meta.get("name") or ""
        self._validate(kind, resource, name, body)
        with self._cond:
            if (resource, ns, name) in self.objects:
                raise ApiError(
                    status(
                        409,
                        "AlreadyExists",
                        f'{resource} "{name}" already exists',
                        name=name,
                        kind=resource,
                    )
                )
            uid = str(uuid.uuid4())
            meta.update(namespace=ns, uid=uid, creationTimestamp=now())
            if resource == "pods":
                body["status"] = {
                    "phase": "Pending",
                    "qosClass": "Guaranteed",
                    "conditions": [
                        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now()}
                    ],
                }
                self._later(self.ready_delay, lambda: self._progress_pod(ns, name, uid))
            elif resource == "services":
                if body["spec"].get("clusterIP") != "None":  # headless: none allocated
                    ip = f"10.12.{len(self.objects) % 250}.{self._rv % 250}"
                    body["spec"]["clusterIP"] = ip
                body["spec"]["clusterIPs"] = [body["spec"]["clusterIP"]]
                body["status"] = {"loadBalancer": {}}
            else:
                body["spec"]["volumeName"] = f"pvc-{uid}"
                body["status"] = {
                    "phase": "Bound",
                    "accessModes": body["spec"].get("accessModes", []),
                    "capacity": dict(body["spec"]["resources"]["requests"]),
                }
            self.objects[(resource, ns, name)] = body
            self._bump(resource, ns, "ADDED", body)
            return copy.deepcopy(body)

    def _validate(self, kind: str, resource: str, name: str, body: dict[str, Any]) -> None:
        problems: list[str] = []
        pattern = _DNS_1035 if resource == "services" else _DNS_SUBDOMAIN
        limit = 63 if resource == "services" else 253
        if not name or not pattern.match(name) or len(name) > limit:
            problems.append(f"metadata.name: Invalid value: {name!r}: must be a DNS name")
        for key, value in (body["metadata"].get("labels") or {}).items():
            if not _LABEL_NAME.match(key.rpartition("/")[2]) or len(key.rpartition("/")[2]) > 63:
                problems.append(f"metadata.labels: Invalid value: {key!r}: not a label key")
            if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
                problems.append(f"metadata.labels: Invalid value: {value!r}: not a label value")
        spec = body.get("spec") or {}
        if resource == "pods" and not all(
            c.get("name") and c.get("image") for c in spec.get("containers") or [{}]
        ):
            problems.append("spec.containers: Required value")
        if resource == "persistentvolumeclaims" and not spec.get("resources", {}).get(
            "requests", {}
        ).get("storage"):
            problems.append("spec.resources[storage]: Required value")
        if problems:
            raise ApiError(
                status(
                    422,
                    "Invalid",
                    f'{kind} "{name}" is invalid: {"; ".join(problems)}',
                    name=name,
                    kind=resource,
                )
            )

    @staticmethod
    def _present(res: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        return _as_events_v1(obj) if res.stored_in == "events" and res.group else obj

    def read(self, resource: str | Resource, ns: str, name: str) -> dict[str, Any]:
        res = resource if isinstance(resource, Resource) else _BY_KEY[resource]
        with self._cond:
            obj = self.objects.get((res.key, ns, name))
            if obj is None:
                raise self._missing(res.name, name)
            return self._present(res, obj)

    def list(
        self, resource: str | Resource, ns: str | None, query: dict[str, str]
    ) -> dict[str, Any]:
        """A `<Kind>List` of what matches the query's selectors; `ns` None: all namespaces."""
        res = resource if isinstance(resource, Resource) else _BY_KEY[resource]
        fields = _selector(query.get("fieldSelector"), res.fields)
        labels = _selector(query.get("labelSelector"), None)
        with self._cond:
            items = [
                self._present(res, obj)
                for (key, n, _), obj in sorted(self.objects.items())
                if key == res.key and ns in (None, n) and fields(obj) and labels(obj)
            ]
            return {
                "kind": f"{res.kind}List",
                "apiVersion": res.api_version,
                "metadata": {"resourceVersion": str(self._rv)},
                "items": items,
            }

    def delete(self, resource: str, ns: str, name: str) -> dict[str, Any]:
        with self._cond:
            obj = self.objects.get((resource, ns, name))
            if obj is None:
                raise self._missing(resource, name)
            uid = obj["metadata"]["uid"]
            if resource == "pods" and self.termination_delay > 0:
                if "deletionTimestamp" not in obj["metadata"]:
                    grace = obj["spec"].get("terminationGracePeriodSeconds", 30)
                    obj["metadata"]["deletionTimestamp"] = now()
                    obj["metadata"]["deletionGracePeriodSeconds"] = grace
                    self._bump(resource, ns, "MODIFIED", obj)
                    self._later(
                        self.termination_delay, lambda: self._remove(resource, ns, name, uid)
                    )
                return copy.deepcopy(obj)
            self._remove(resource, ns, name, uid)
            return copy.deepcopy(obj)

    def patch(
        self, resource: str, ns: str, name: str, content_type: str, patch: Any
    ) -> dict[str, Any]:
        if content_type not in (
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
        ) or not isinstance(patch, dict):
            raise ApiError(
                status(415, "UnsupportedMediaType", f"unsupported patch type {content_type}")
            )
        with self._cond:
            obj = self.objects.get((resource, ns, name))
            if obj is None:
                raise self._missing(resource, name)
            meta = patch.get("metadata") or {}
            if meta.get("name", name) != name:
                raise ApiError(status(422, "Invalid", "metadata.name: field is immutable"))
            _merge(obj, patch)
            self._bump(resource, ns, "MODIFIED", obj)
            return copy.deepcopy(obj)

    @staticmethod
    def _missing(resource: str, name: str) -> ApiError:
        return ApiError(
            status(404, "NotFound", f'{resource} "{name}" not found', name=name, kind=resource)
        )

    def watch(
        self,
        resource: str | Resource,
        ns: str | None,
        query: dict[str, str],
        write: Callable[[str, dict[str, Any]], None],
        alive: Callable[[], bool] = lambda: True,
    ) -> None:
        """Streams events as `write(type, object)` until `timeoutSeconds` pass, the server
        closes or the client goes (`alive`): without a resourceVersion (or "0") the current
        objects as ADDED first, then every change after it. `ns` None: all namespaces."""
        res = resource if isinstance(resource, Resource) else _BY_KEY[resource]
        fields = _selector(query.get("fieldSelector"), res.fields)
        labels = _selector(query.get("labelSelector"), None)
        timeout = min(float(query.get("timeoutSeconds") or 1800), 1800)
        deadline = time.monotonic() + timeout
        since_raw = query.get("resourceVersion") or "0"

        def matches(key: str, n: str, obj: dict[str, Any]) -> bool:
            return key == res.key and ns in (None, n) and fields(obj) and labels(obj)

        with self._cond:
            if since_raw == "0":
                since = self._rv
                pending = [
                    ("ADDED", self._present(res, obj))
                    for (key, n, _), obj in sorted(self.objects.items())
                    if matches(key, n, obj)
                ]
            else:
                since = int(since_raw)
                pending = []
                if self.expire_watches > 0:
                    self.expire_watches -= 1
                    gone = status(410, "Expired", f"too old resource version: {since_raw}")
                    write("ERROR", gone)
                    return
        while True:
            for kind, obj in pending:
                write(kind, obj)
            with self._cond:
                while True:
                    fresh = [e for e in self.history if e[0] > since]
                    remaining = deadline - time.monotonic()
                    if fresh or remaining <= 0 or self._closed or not alive():
                        break
                    self._cond.wait(min(remaining, 0.5))
                if not fresh:
                    return
                since = fresh[-1][0]
                pending = [
                    (kind, self._present(res, obj))
                    for _, key, n, kind, obj in fresh
                    if matches(key, n, obj)
                ]

    def log_source(self, ns: str, name: str, query: dict[str, str]) -> tuple[str, str, str, bool]:
        """Which log a pods/log request reads, or the error the real server gives."""
        with self._cond:
            pod = self.objects.get(("pods", ns, name))
            if pod is None:
                raise self._missing("pods", name)
            containers = [c["name"] for c in pod["spec"].get("containers") or []]
        container = query.get("container") or ""
        if not container and len(containers) != 1:
            raise ApiError(
                status(
                    400,
                    "BadRequest",
                    f"a container name must be specified for pod {name}, choose one of: "
                    f"[{' '.join(containers)}]",
                )
            )
        container = container or containers[0]
        if container not in containers:
            raise ApiError(
                status(400, "BadRequest", f"container {container} is not valid for pod {name}")
            )
        previous = query.get("previous") in ("true", "1")
        if previous and (ns, name, container, True) not in self.logs:
            raise ApiError(
                status(
                    400,
                    "BadRequest",
                    f'previous terminated container "{container}" in pod "{name}" not found',
                )
            )
        return ns, name, container, previous

    def log_lines(
        self, source: tuple[str, str, str, bool], query: dict[str, str], start: int = 0
    ) -> tuple[builtins.list[bytes], int]:
        """The log's lines from index `start`, as the query asks (tailLines and sinceSeconds
        on the first read only), and the index to read on from."""
        with self._cond:
            entries = list(self.logs.get(source, []))
        chosen = entries[start:]
        if start == 0:
            if query.get("sinceSeconds"):
                since = datetime.now(UTC) - timedelta(seconds=int(query["sinceSeconds"]))
                chosen = [e for e in chosen if e[0] >= since]
            if query.get("tailLines"):
                tail = int(query["tailLines"])
                chosen = chosen[len(chosen) - tail :] if tail > 0 else []
        stamped = query.get("timestamps") in ("true", "1")
        return [
            (
                f"{t.strftime('%Y-%m-%dT%H:%M:%S.%f')}000Z {line}\n" if stamped else line + "\n"
            ).encode()
            for t, line in chosen
        ], len(entries)

    def wait_for_log(self, source: tuple[str, str, str, bool], after: int, wait: float) -> None:
        with self._cond:
            if len(self.logs.get(source, [])) <= after and not self._closed:
                self._cond.wait(wait)

    # -- discovery ---------------------------------------------------------------------------

    def discovery(self, path: str) -> dict[str, Any] | None:
        """The legacy discovery documents, /version and OpenAPI v3 (None: not such a path)."""
        groups = _group_versions()
        if path == "/version":
            return VERSION
        if path == "/api":
            host = self.url.removeprefix("http://")
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
            }
        if path == "/api/v1":
            return _resource_list("", "v1")
        if path == "/apis":
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [_api_group(g, v) for g, v in groups.items()],
            }
        parts = path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "apis" and parts[1] in groups:
            return {
                "kind": "APIGroup",
                "apiVersion": "v1",
                **_api_group(parts[1], groups[parts[1]]),
            }
        if len(parts) == 3 and parts[0] == "apis" and parts[2] in groups.get(parts[1], []):
            return _resource_list(parts[1], parts[2])
        if path == "/openapi/v3":
            return {
                "paths": {
                    gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash={self._hash(gv)}"}
                    for gv in self._openapi
                }
            }
        if path.startswith("/openapi/v3/"):
            return self._openapi.get(path.removeprefix("/openapi/v3/"))
        return None

    def _hash(self, gv: str) -> str:
        raw = json.dumps(self._openapi[gv], sort_keys=True).encode()
        return hashlib.sha512(raw).hexdigest().upper()[:128]


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet about clients that go away (a killed kubectl), loud about anything else."""
        if not isinstance(sys.exc_info()[1], ssl.SSLError | ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


@functools.cache
def _certificate() -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made once per process."""
    folder = Path(tempfile.mkdtemp(prefix="fake-kube-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=fake-kube", "-keyout", key, "-out", cert,
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return pod.get("status", {}).get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in conditions
    )


def _handler(kube: FakeKube) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def setup(self) -> None:
            if isinstance(self.request, ssl.SSLSocket):
                self.request.settimeout(10)
                self.request.do_handshake()
                self.request.settimeout(None)
            super().setup()

        def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                return json.loads(raw or b"null")
            except ValueError:
                raise ApiError(status(400, "BadRequest", "the body is not JSON")) from None

        def _start_stream(self, content_type: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def _alive(self) -> bool:
            """False once the client has closed its end (kubectl stopped): a client waiting
            for a streamed answer sends nothing, so anything to read is its EOF (or TLS's)."""
            try:
                return not select.select([self.connection], [], [], 0)[0]
            except (OSError, ValueError):
                return False

        def _serve(self, method: str) -> None:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            res, ns, name, sub = _route(parts.path)
            verb = _verb(method, name, query) if res else method.lower()
            with kube._cond:
                kube.requests.append(Request(method, self.path, verb))
            try:
                # Read whatever happens next: the connection is kept alive for the next request.
                body = self._body() if method != "GET" else None
                account = kube.authenticate(self.headers.get("Authorization"))
                document = kube.discovery(parts.path) if method == "GET" else None
                if document is not None:
                    self._send(200, document)
                    return
                if parts.path in ("/healthz", "/livez", "/readyz"):
                    self._send(200, b"ok", "text/plain")
                    return
                if res is None or (bool(ns) != res.namespaced and not (ns is None and not name)):
                    raise ApiError(status(404, "NotFound", _NOT_FOUND))
                if sub and not (sub == "log" and sub in res.subresources and method == "GET"):
                    raise ApiError(status(404, "NotFound", _NOT_FOUND))
                if method != "GET" and not isinstance(body, dict | None):
                    raise ApiError(status(400, "BadRequest", "the body is not a JSON object"))
                with kube._cond:
                    kube.authorise(verb, res, ns or "", name, account, sub or "")
                if verb not in res.verbs or (method != "GET" and res.key not in KINDS):
                    raise ApiError(
                        status(405, "MethodNotAllowed", f"{method} is not supported here")
                    )
                self._dispatch(method, verb, res, ns, name, sub, query, body)
            except ApiError as exc:
                self._send(exc.body["code"], exc.body)

        def _dispatch(
            self,
            method: str,
            verb: str,
            res: Resource,
            ns: str | None,
            name: str | None,
            sub: str | None,
            query: dict[str, str],
            body: Any,
        ) -> None:
            accept = self.headers.get("Accept") or ""
            as_table = "as=Table" in accept and method == "GET" and not sub
            include = query.get("includeObject") or "Metadata"
            if verb == "create" and not name:
                if ns and kube.get("namespaces", "", ns) is None:
                    raise ApiError(
                        status(
                            404,
                            "NotFound",
                            f'namespaces "{ns}" not found',
                            name=ns,
                            kind="namespaces",
                        )
                    )
                self._send(201, kube.create(res.key, ns or "", body))
            elif sub == "log" and name:
                self._log(kube.log_source(ns or "", name, query), query)
            elif verb == "watch":
                self._watch(res, ns, query, as_table, include)
            elif verb == "get" and name:
                obj = kube.read(res, ns or "", name)
                rv = obj["metadata"].get("resourceVersion", "")
                self._send(200, table(res, [obj], rv, include) if as_table else obj)
            elif verb == "list":
                listing = kube.list(res, ns if res.namespaced else "", query)
                rv = listing["metadata"]["resourceVersion"]
                self._send(200, table(res, listing["items"], rv, include) if as_table else listing)
            elif verb == "delete" and name:
                self._send(200, kube.delete(res.key, ns or "", name))
            elif verb == "patch" and name:
                content_type = (self.headers.get("Content-Type") or "").split(";")[0]
                self._send(200, kube.patch(res.key, ns or "", name, content_type, body))
            else:
                raise ApiError(status(405, "MethodNotAllowed", f"{method} is not supported here"))

        def _watch(
            self, res: Resource, ns: str | None, query: dict[str, str], as_table: bool, include: str
        ) -> None:
            # Selectors are checked before the 200 goes out, so a bad one is a plain 400.
            _selector(query.get("fieldSelector"), res.fields)
            _selector(query.get("labelSelector"), None)
            self._start_stream("application/json")

            def write(kind: str, obj: dict[str, Any]) -> None:
                if as_table and kind != "ERROR":
                    obj = table(res, [obj], obj["metadata"].get("resourceVersion", ""), include)
                self._chunk(json.dumps({"type": kind, "object": obj}).encode() + b"\n")

            try:
                kube.watch(res, ns if res.namespaced else "", query, write, self._alive)
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client stopped watching

        def _log(self, source: tuple[str, str, str, bool], query: dict[str, str]) -> None:
            lines, seen = kube.log_lines(source, query)
            if query.get("follow") not in ("true", "1"):
                data = b"".join(lines)
                if query.get("limitBytes"):
                    data = data[: int(query["limitBytes"])]
                self._send(200, data, "text/plain")
                return
            # Followed: what there is, then each line as it is appended, until the client goes.
            self._start_stream("text/plain")
            try:
                if lines:
                    self._chunk(b"".join(lines))
                while self._alive() and not kube._closed:
                    kube.wait_for_log(source, seen, 0.5)
                    lines, seen = kube.log_lines(source, query, seen)
                    if lines:
                        self._chunk(b"".join(lines))
                self.close_connection = True
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def do_PATCH(self) -> None:
            self._serve("PATCH")

        def do_PUT(self) -> None:
            self._serve("PUT")

    return Handler
