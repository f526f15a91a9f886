"""The Cloud Run Admin API v2 at the wire: a gRPC server on a loopback port implementing the
`google.cloud.run.v2.Services` methods Tether calls and `google.longrunning.Operations`
GetOperation, with services in memory. The real `run_v2.ServicesClient` talks to it.

Messages are the generated protobuf types behind run_v2's proto-plus wrappers, served with
grpc's generic handlers. Mutations return real long-running Operations, done at once or after
`pending_polls` GetOperation calls; errors are real gRPC status codes.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.cloud import run_v2
from google.cloud.run_v2.services.services.transports import ServicesGrpcTransport
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, timestamp_pb2
from google.protobuf.message import Message

from tests.fakes.grpc_server import GrpcFake, abort, unary

ServicePb: Any = run_v2.Service.pb()
ConditionPb: Any = run_v2.Condition.pb()


@dataclass
class _Op:
    op: Any  # operations_pb2.Operation
    polls_left: int
    finish: Callable[[], Message]


class FakeCloudRun(GrpcFake):
    """Services by full name. `runtime_url` is the `uri` every service gets once created;
    service ids in `denied` answer PERMISSION_DENIED; `calls` lists the methods called.
    New operations need `pending_polls` GetOperation calls to finish, and none finishes while
    `paused`."""

    def __init__(self, runtime_url: str = "https://example.invalid") -> None:
        self.runtime_url = runtime_url
        self.denied: set[str] = set()
        self.pending_polls = 0
        self.paused = False
        self.services: dict[str, Any] = {}
        self.calls: list[str] = []
        self._ops: dict[str, _Op] = {}
        self._lock = threading.Lock()
        super().__init__()

    # -- lifecycle ---------------------------------------------------------------------------

    def handlers(self) -> dict[str, dict[str, grpc.RpcMethodHandler]]:
        return {
            "google.cloud.run.v2.Services": {
                "CreateService": unary(self._create, run_v2.CreateServiceRequest.pb()),
                "GetService": unary(self._get, run_v2.GetServiceRequest.pb()),
                "UpdateService": unary(self._update, run_v2.UpdateServiceRequest.pb()),
                "DeleteService": unary(self._delete, run_v2.DeleteServiceRequest.pb()),
            },
            "google.longrunning.Operations": {
                "GetOperation": unary(self._get_operation, operations_pb2.GetOperationRequest)
            },
        }

    def client(self) -> run_v2.ServicesClient:
        """The real client library over an insecure channel to this server."""
        channel = grpc.insecure_channel(self.address)
        return run_v2.ServicesClient(transport=ServicesGrpcTransport(channel=channel))

    def polls(self) -> int:
        return self.calls.count("GetOperation")

    # -- helpers -----------------------------------------------------------------------------

    def _guard(self, name: str, context: grpc.ServicerContext) -> None:
        if name.rsplit("/", 1)[-1] in self.denied:
            abort(context, grpc.StatusCode.PERMISSION_DENIED, f"Permission denied on {name}")

    def _existing(self, name: str, context: grpc.ServicerContext) -> Any:
        self._guard(name, context)
        svc = self.services.get(name)
        if svc is None:
            abort(context, grpc.StatusCode.NOT_FOUND, f"Resource '{name}' was not found")
        return svc

    def _operation(self, name: str, finish: Callable[[], Message]) -> Any:
        """A new Operation on `name`: done now (response packed) or after some polls."""
        location = name.split("/services/")[0]
        op = operations_pb2.Operation(name=f"{location}/operations/{uuid.uuid4()}")
        meta = any_pb2.Any()
        meta.Pack(self.services.get(name) or ServicePb(name=name))
        op.metadata.CopyFrom(meta)
        pending = _Op(op, self.pending_polls, finish)
        self._ops[op.name] = pending
        if pending.polls_left == 0:
            self._complete(pending)
        result = operations_pb2.Operation()
        result.CopyFrom(op)
        return result

    @staticmethod
    def _complete(pending: _Op) -> None:
        response = any_pb2.Any()
        response.Pack(pending.finish())
        pending.op.response.CopyFrom(response)
        pending.op.done = True

    def _now(self) -> timestamp_pb2.Timestamp:
        ts = timestamp_pb2.Timestamp()
        ts.GetCurrentTime()
        return ts

    def _ready(self, svc: Any) -> Any:
        svc.uri = self.runtime_url
        svc.urls[:] = [self.runtime_url]
        svc.reconciling = False
        svc.observed_generation = svc.generation
        svc.terminal_condition.CopyFrom(
            ConditionPb(type_="Ready", state=ConditionPb.State.CONDITION_SUCCEEDED)
        )
        return svc

    # -- google.cloud.run.v2.Services --------------------------------------------------------

    def _create(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            self.calls.append("CreateService")
            name = f"{request.parent}/services/{request.service_id}"
            self._guard(name, context)
            if request.service.name:
                abort(context, grpc.StatusCode.INVALID_ARGUMENT, "service.name must be empty")
            if not request.service.template.containers or not all(
                c.image for c in request.service.template.containers
            ):
                abort(context, grpc.StatusCode.INVALID_ARGUMENT, "a container image is required")
            if name in self.services:
                abort(context, grpc.StatusCode.ALREADY_EXISTS, f"Resource '{name}' already exists")
            svc = ServicePb()
            svc.CopyFrom(request.service)
            svc.name = name
            svc.uid = str(uuid.uuid4())
            svc.generation = 1
            svc.create_time.CopyFrom(self._now())
            svc.update_time.CopyFrom(svc.create_time)
            svc.etag = uuid.uuid4().hex
            svc.reconciling = True  # no uri until the rollout is done
            self.services[name] = svc

            def finish() -> Message:
                return self._ready(svc)

            return self._operation(name, finish)

    def _get(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            self.calls.append("GetService")
            return self._existing(request.name, context)

    def _update(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            self.calls.append("UpdateService")
            name = request.service.name
            old = self._existing(name, context)
            if request.service.etag and request.service.etag != old.etag:
                abort(context, grpc.StatusCode.ABORTED, "etag mismatch: the service changed")
            svc = ServicePb()
            svc.CopyFrom(request.service)
            # Output-only fields are the server's, whatever the client sent.
            svc.uid, svc.uri = old.uid, old.uri
            svc.urls[:] = old.urls
            svc.create_time.CopyFrom(old.create_time)
            svc.terminal_condition.CopyFrom(old.terminal_condition)
            svc.generation = old.generation + (svc.template != old.template)
            svc.update_time.CopyFrom(self._now())
            svc.etag = uuid.uuid4().hex
            self.services[name] = svc

            def finish() -> Message:
                return self._ready(svc)

            return self._operation(name, finish)

    def _delete(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            self.calls.append("DeleteService")
            svc = self._existing(request.name, context)
            op = self._operation(request.name, lambda: svc)
            del self.services[request.name]
            return op

    # -- google.longrunning.Operations -------------------------------------------------------

    def _get_operation(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            self.calls.append("GetOperation")
            pending = self._ops.get(request.name)
            if pending is None:
                abort(context, grpc.StatusCode.NOT_FOUND, f"Operation '{request.name}' not found")
            if not pending.op.done and not self.paused:
                pending.polls_left -= 1
                if pending.polls_left <= 0:
                    self._complete(pending)
            result = operations_pb2.Operation()
            result.CopyFrom(pending.op)
            return result
