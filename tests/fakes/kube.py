"""A Kubernetes API server, in memory, for the core/v1 paths the GKE provisioner uses: pods,
services and persistentvolumeclaims in a namespace (create, get, list, watch, patch, delete).

It answers like the real one: `Status` bodies with the real reasons and codes, list and watch
with `fieldSelector`/`labelSelector`, watches as chunked newline-delimited JSON events resuming
from a `resourceVersion`, names and labels validated, and with `rules` (a Role's rules) every
request authorised. A created pod goes Pending, then after `ready_delay` Running and Ready;
a deleted one terminates for `termination_delay` first (MODIFIED with a deletionTimestamp,
then DELETED).
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

KINDS = {"pods": "Pod", "services": "Service", "persistentvolumeclaims": "PersistentVolumeClaim"}
_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/([a-z]+)(?:/([^/]+))?/?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_FIELDS = {"metadata.name", "metadata.namespace", "status.phase"}


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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


def _field(obj: dict[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part, {}) if isinstance(value, dict) else {}
    return value if isinstance(value, str) else ""


def _selector(raw: str | None, fields: bool) -> Callable[[dict[str, Any]], bool]:
    """A matcher for a fieldSelector (`a=b`, `a==b`, `a!=b`) or a labelSelector (those,
    plus `key` and `!key`), comma-separated terms all of which must hold."""
    terms: list[tuple[str, str, str | None]] = []
    for term in (raw or "").split(","):
        term = term.strip()
        if not term:
            continue
        match = re.fullmatch(r"([^=!]+?)\s*(==|!=|=)\s*(.*)", term)
        if match:
            key, op, value = match.groups()
            terms.append((key.strip(), "!=" if op == "!=" else "=", value.strip()))
        elif not fields and term.startswith("!"):
            terms.append((term[1:], "absent", None))
        elif not fields:
            terms.append((term, "present", None))
        else:
            raise ApiError(status(400, "BadRequest", f"invalid selector: {raw!r}"))
        if fields and terms[-1][0] not in _FIELDS:
            raise ApiError(
                status(400, "BadRequest", f'field label not supported: "{terms[-1][0]}"')
            )

    def match(obj: dict[str, Any]) -> bool:
        got_labels = obj.get("metadata", {}).get("labels") or {}
        for key, op, value in terms:
            got = _field(obj, key) if fields else got_labels.get(key)
            if op == "present" and got is None:
                return False
            if op == "absent" and got is not None:
                return False
            if op == "=" and got != value:
                return False
            if op == "!=" and got == value:
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


def _verb(method: str, name: str | None, query: dict[str, str]) -> str:
    if method == "GET":
        if name:
            return "get"
        return "watch" if query.get("watch") in ("true", "1") else "list"
    return {"POST": "create", "DELETE": "delete", "PATCH": "patch", "PUT": "update"}[method]


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
    ) -> None:
        self.namespaces = set(namespaces)
        self.ready_delay = ready_delay
        self.termination_delay = termination_delay
        self.rules = rules
        self.rules_namespace = rules_namespace
        self.user = user
        self.schedulable = True  # False: pods stay Pending, Unschedulable
        self.broken_images: set[str] = set()  # pods with these images go to ImagePullBackOff
        # Watches from a resourceVersion this many times get "410 Gone" (history compacted).
        self.expire_watches = 0
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.events: list[tuple[int, str, str, str, dict[str, Any]]] = []  # rv, res, ns, type
        self.requests: list[tuple[str, str, str]] = []  # (method, path with query, verb)
        self.used: set[tuple[str, str]] = set()  # (verb, resource) that were authorised
        self._failures: dict[tuple[str, str], tuple[int, int]] = {}  # -> (code, times)
        self._forbidden: set[tuple[str, str]] = set()
        self._rv = 100
        self._cond = threading.Condition()
        self._timers: list[threading.Timer] = []
        self._closed = False
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- running -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

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

    def client(self) -> Any:
        """The real `kubernetes` client, configured for this server."""
        from kubernetes import client

        return client.ApiClient(client.Configuration(host=self.url))

    # -- what tests arrange and look at ------------------------------------------------------

    def forbid(self, verb: str, resource: str) -> None:
        """Answer 403 Forbidden to `verb` on `resource`, as RBAC does."""
        self._forbidden.add((verb, resource))

    def fail(self, verb: str, resource: str, code: int, times: int = 1) -> None:
        """Answer the next `times` such requests with `code` (500, 503, ...)."""
        self._failures[(verb, resource)] = (code, times)

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

    # -- state changes (under the lock) ------------------------------------------------------

    def _bump(self, resource: str, ns: str, kind: str, obj: dict[str, Any]) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self.events.append((self._rv, resource, ns, kind, copy.deepcopy(obj)))
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

    def authorise(self, verb: str, resource: str, ns: str, name: str | None) -> None:
        allowed = (verb, resource) not in self._forbidden
        if allowed and self.rules is not None:
            allowed = ns == self.rules_namespace and any(
                "" in rule.get("apiGroups", [])
                and resource in rule.get("resources", [])
                and (verb in rule.get("verbs", []) or "*" in rule.get("verbs", []))
                and (not rule.get("resourceNames") or name in rule["resourceNames"])
                for rule in self.rules
            )
        if not allowed:
            what = f'{resource} "{name}"' if name else resource
            raise ApiError(
                status(
                    403,
                    "Forbidden",
                    f'{what} is forbidden: User "{self.user}" cannot {verb} resource '
                    f'"{resource}" in API group "" in the namespace "{ns}"',
                    kind=resource,
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
                body["spec"]["clusterIP"] = f"10.12.{len(self.objects) % 250}.{self._rv % 250}"
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

    def read(self, resource: str, ns: str, name: str) -> dict[str, Any]:
        with self._cond:
            obj = self.objects.get((resource, ns, name))
            if obj is None:
                raise self._missing(resource, name)
            return copy.deepcopy(obj)

    def list(self, resource: str, ns: str, query: dict[str, str]) -> dict[str, Any]:
        fields = _selector(query.get("fieldSelector"), fields=True)
        labels = _selector(query.get("labelSelector"), fields=False)
        with self._cond:
            items = [
                copy.deepcopy(obj)
                for (res, n, _), obj in sorted(self.objects.items())
                if res == resource and n == ns and fields(obj) and labels(obj)
            ]
            return {
                "kind": f"{KINDS[resource]}List",
                "apiVersion": "v1",
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
        self, resource: str, ns: str, query: dict[str, str], write: Callable[[bytes], None]
    ) -> None:
        """Streams events until `timeoutSeconds` pass: without a resourceVersion (or "0") the
        current objects as ADDED first, then every change after it."""
        fields = _selector(query.get("fieldSelector"), fields=True)
        labels = _selector(query.get("labelSelector"), fields=False)
        timeout = min(float(query.get("timeoutSeconds") or 1800), 1800)
        deadline = time.monotonic() + timeout
        since_raw = query.get("resourceVersion") or "0"

        def matches(res: str, n: str, obj: dict[str, Any]) -> bool:
            return res == resource and n == ns and fields(obj) and labels(obj)

        with self._cond:
            if since_raw == "0":
                since = self._rv
                pending = [
                    ("ADDED", copy.deepcopy(obj))
                    for (res, n, _), obj in sorted(self.objects.items())
                    if matches(res, n, obj)
                ]
            else:
                since = int(since_raw)
                pending = []
                if self.expire_watches > 0:
                    self.expire_watches -= 1
                    gone = status(410, "Expired", f"too old resource version: {since_raw}")
                    write(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
                    return
        while True:
            for kind, obj in pending:
                write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
            with self._cond:
                while True:
                    fresh = [e for e in self.events if e[0] > since]
                    remaining = deadline - time.monotonic()
                    if fresh or remaining <= 0 or self._closed:
                        break
                    self._cond.wait(remaining)
                if not fresh:
                    return
                since = fresh[-1][0]
                pending = [(kind, obj) for _, res, n, kind, obj in fresh if matches(res, n, obj)]


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

        def _send(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
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

        def _serve(self, method: str) -> None:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            match = _PATH.match(parts.path)
            # Read whatever happens next: the connection is kept alive for the next request.
            body = self._body() if method != "GET" else None
            if not match or match.group(2) not in KINDS:
                self._send(
                    404, status(404, "NotFound", "the server could not find the requested resource")
                )
                return
            ns, resource, name = match.groups()
            try:
                if method != "GET" and not isinstance(body, dict | None):
                    raise ApiError(status(400, "BadRequest", "the body is not a JSON object"))
                verb = _verb(method, name, query)
                with kube._cond:
                    kube.requests.append((method, self.path, verb))
                    kube.authorise(verb, resource, ns, name)
                if ns not in kube.namespaces:
                    raise ApiError(
                        status(
                            404,
                            "NotFound",
                            f'namespaces "{ns}" not found',
                            name=ns,
                            kind="namespaces",
                        )
                    )
                if verb == "watch":
                    self._watch(resource, ns, query)
                elif verb == "create" and not name:
                    self._send(201, kube.create(resource, ns, body))
                elif verb == "get":
                    self._send(200, kube.read(resource, ns, name))
                elif verb == "list":
                    self._send(200, kube.list(resource, ns, query))
                elif verb == "delete" and name:
                    self._send(200, kube.delete(resource, ns, name))
                elif verb == "patch" and name:
                    content_type = (self.headers.get("Content-Type") or "").split(";")[0]
                    self._send(200, kube.patch(resource, ns, name, content_type, body))
                else:
                    self._send(
                        405, status(405, "MethodNotAllowed", f"{method} is not supported here")
                    )
            except ApiError as exc:
                self._send(exc.body["code"], exc.body)

        def _watch(self, resource: str, ns: str, query: dict[str, str]) -> None:
            # Selectors are checked before the 200 goes out, so a bad one is a plain 400.
            _selector(query.get("fieldSelector"), fields=True)
            _selector(query.get("labelSelector"), fields=False)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

            def write(data: bytes) -> None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            try:
                kube.watch(resource, ns, query, write)
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client stopped watching

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
