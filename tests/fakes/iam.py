"""IAM service accounts and Cloud Storage managed folders at the wire: one gRPC server on a
loopback port implementing the `google.iam.admin.v1.IAM` and
`google.storage.control.v2.StorageControl` methods Tether calls, state in memory. The real
`iam_admin_v1.IAMClient` and `storage_control_v2.StorageControlClient` talk to it.

It answers like the real APIs: account ids and managed folder names validated, ALREADY_EXISTS
and NOT_FOUND as real status codes, a policy only on a managed folder that exists.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import grpc
from google.cloud import iam_admin_v1, storage_control_v2
from google.cloud.iam_admin_v1.services.iam.transports import IAMGrpcTransport
from google.cloud.storage_control_v2.services.storage_control.transports import (
    StorageControlGrpcTransport,
)
from google.iam.v1 import iam_policy_pb2, policy_pb2
from google.protobuf import empty_pb2

from tests.fakes.grpc_server import GrpcFake, Handler, abort, unary

ServiceAccountPb: Any = iam_admin_v1.ServiceAccount.pb()
ManagedFolderPb: Any = storage_control_v2.ManagedFolder.pb()
_ACCOUNT_ID = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")
_ACCOUNT_NAME = re.compile(r"projects/([^/]+)/serviceAccounts/([^/]+)")
_BUCKET = re.compile(r"projects/_/buckets/([^/]+)")
_FOLDER = re.compile(r"projects/_/buckets/([^/]+)/managedFolders/(.+/)")


_METHODS = {
    "_create_account": "CreateServiceAccount",
    "_get_account": "GetServiceAccount",
    "_delete_account": "DeleteServiceAccount",
    "_create_folder": "CreateManagedFolder",
    "_delete_folder": "DeleteManagedFolder",
    "_set_policy": "SetIamPolicy",
    "_get_policy": "GetIamPolicy",
}


class FakeIam(GrpcFake):
    """`accounts` by email; `folders` by resource name, each with its IAM policy (None: never
    set). Methods in `denied` answer PERMISSION_DENIED; `calls` lists the methods called."""

    def __init__(self) -> None:
        self.accounts: dict[str, Any] = {}
        self.folders: dict[str, Any] = {}
        self.denied: set[str] = set()
        self.calls: list[str] = []
        self._lock = threading.Lock()
        super().__init__()

    def handlers(self) -> dict[str, dict[str, grpc.RpcMethodHandler]]:
        def handler(fn: Handler, request: Any) -> grpc.RpcMethodHandler:
            return unary(self._recorded(fn, _METHODS[fn.__name__]), request)

        sc = storage_control_v2
        return {
            "google.iam.admin.v1.IAM": {
                "CreateServiceAccount": handler(
                    self._create_account, iam_admin_v1.CreateServiceAccountRequest.pb()
                ),
                "GetServiceAccount": handler(
                    self._get_account, iam_admin_v1.GetServiceAccountRequest.pb()
                ),
                "DeleteServiceAccount": handler(
                    self._delete_account, iam_admin_v1.DeleteServiceAccountRequest.pb()
                ),
            },
            "google.storage.control.v2.StorageControl": {
                "CreateManagedFolder": handler(
                    self._create_folder, sc.CreateManagedFolderRequest.pb()
                ),
                "DeleteManagedFolder": handler(
                    self._delete_folder, sc.DeleteManagedFolderRequest.pb()
                ),
                "SetIamPolicy": handler(self._set_policy, iam_policy_pb2.SetIamPolicyRequest),
                "GetIamPolicy": handler(self._get_policy, iam_policy_pb2.GetIamPolicyRequest),
            },
        }

    def iam_client(self) -> iam_admin_v1.IAMClient:
        channel = grpc.insecure_channel(self.address)
        return iam_admin_v1.IAMClient(transport=IAMGrpcTransport(channel=channel))

    def control_client(self) -> storage_control_v2.StorageControlClient:
        channel = grpc.insecure_channel(self.address)
        return storage_control_v2.StorageControlClient(
            transport=StorageControlGrpcTransport(channel=channel)
        )

    def policy(self, folder: str) -> dict[str, list[str]] | None:
        """A managed folder's policy as {role: members}; None when it has none."""
        with self._lock:
            policy = self.folders.get(folder)
            if policy is None:
                return None
            return {b.role: sorted(b.members) for b in policy.bindings}

    def _recorded(self, fn: Handler, method: str) -> Handler:
        def handler(request: Any, context: grpc.ServicerContext) -> Any:
            with self._lock:
                self.calls.append(method)
                if method in self.denied:
                    abort(context, grpc.StatusCode.PERMISSION_DENIED, f"{method} denied")
                return fn(request, context)

        return handler

    # -- google.iam.admin.v1.IAM -------------------------------------------------------------

    def _create_account(self, request: Any, context: grpc.ServicerContext) -> Any:
        project = request.name.removeprefix("projects/")
        if not request.name.startswith("projects/") or "/" in project:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"bad project {request.name!r}")
        if not _ACCOUNT_ID.fullmatch(request.account_id):
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"bad id {request.account_id!r}")
        email = f"{request.account_id}@{project}.iam.gserviceaccount.com"
        if email in self.accounts:
            abort(context, grpc.StatusCode.ALREADY_EXISTS, f"{email} already exists")
        account = ServiceAccountPb()
        account.CopyFrom(request.service_account)
        account.name = f"projects/{project}/serviceAccounts/{email}"
        account.project_id, account.email = project, email
        account.unique_id = str(10**20 + len(self.accounts))
        self.accounts[email] = account
        return account

    def _account(self, name: str, context: grpc.ServicerContext) -> str:
        match = _ACCOUNT_NAME.fullmatch(name)
        if match is None:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"bad name {name!r}")
        if match.group(2) not in self.accounts:
            abort(context, grpc.StatusCode.NOT_FOUND, f"{name} not found")
        return match.group(2)

    def _get_account(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self.accounts[self._account(request.name, context)]

    def _delete_account(self, request: Any, context: grpc.ServicerContext) -> Any:
        del self.accounts[self._account(request.name, context)]
        return empty_pb2.Empty()

    # -- google.storage.control.v2.StorageControl --------------------------------------------

    def _create_folder(self, request: Any, context: grpc.ServicerContext) -> Any:
        if not _BUCKET.fullmatch(request.parent):
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"bad parent {request.parent!r}")
        folder_id = request.managed_folder_id
        if not folder_id.endswith("/") or folder_id.startswith("/") or "//" in folder_id:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"bad folder {folder_id!r}")
        name = f"{request.parent}/managedFolders/{folder_id}"
        if name in self.folders:
            abort(context, grpc.StatusCode.ALREADY_EXISTS, f"{name} already exists")
        self.folders[name] = None
        return ManagedFolderPb(name=name, metageneration=1)

    def _folder(self, name: str, context: grpc.ServicerContext) -> str:
        if not _FOLDER.fullmatch(name):
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"not a managed folder: {name!r}")
        if name not in self.folders:
            abort(context, grpc.StatusCode.NOT_FOUND, f"{name} not found")
        return name

    def _delete_folder(self, request: Any, context: grpc.ServicerContext) -> Any:
        del self.folders[self._folder(request.name, context)]
        return empty_pb2.Empty()

    def _set_policy(self, request: Any, context: grpc.ServicerContext) -> Any:
        name = self._folder(request.resource, context)
        for binding in request.policy.bindings:
            if not binding.role.startswith("roles/") or not all(
                m.partition(":")[0] in ("serviceAccount", "user", "group") for m in binding.members
            ):
                abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"bad binding {binding}")
        policy = policy_pb2.Policy()
        policy.CopyFrom(request.policy)
        policy.etag = str(len(self.calls)).encode()
        self.folders[name] = policy
        return policy

    def _get_policy(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self.folders[self._folder(request.resource, context)] or policy_pb2.Policy()
