"""Every manifest the GKE provisioner sends, and every document in infra/k8s, is valid for the
Kubernetes versions we target (kubernetes-validate's schemas, strict: no unknown fields)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from tether.core.models import Template, WorkspaceSpec
from tether.provision.gke_manifests import (
    RUNTIME_PORT,
    pod_manifest,
    pvc_manifest,
    service_manifest,
)

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
# The oldest minor a GKE release channel still offers when this was written, and the newest
# kubernetes-validate ships schemas for: a field added or dropped in between fails one of them.
VERSIONS = ["1.33", kubernetes_validate.latest_version()]


def spec(persistent: bool = True, command: str | None = None) -> WorkspaceSpec:
    template = Template(
        name="python",
        display_name="Python",
        env={"GREETING": "hi"},
        command=command,
        resources={"cpu": "500m", "memory": "512Mi", "storage": "20Gi"},
    )
    return WorkspaceSpec(session_id="Session_1", template=template, persistent_home=persistent)


GENERATED: dict[str, dict[str, Any]] = {
    "pod with a persistent home": pod_manifest(spec()),
    "pod with a scratch home and a main command": pod_manifest(
        spec(persistent=False, command="python -m http.server")
    ),
    "pod with session storage": pod_manifest(
        spec(), bucket=("tether-sessions", "sessions/Session_1/"), service_account="ws"
    ),
    "pod from the workspace image": pod_manifest(
        spec(command="sleep infinity"), image="europe-docker.pkg.dev/p/tether/workspace:1"
    ),
    "service": service_manifest(spec()),
    "pvc": pvc_manifest(spec()),
    "pvc with a storage class": pvc_manifest(spec(), storage_class="premium-rwo"),
}


def infra_docs() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return docs


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_manifests_are_valid(name: str, version: str) -> None:
    kubernetes_validate.validate(GENERATED[name], version, strict=True)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_infra_k8s_document_is_valid(version: str) -> None:
    docs = infra_docs()
    kinds = {doc["kind"] for _, doc in docs}
    assert {"Namespace", "ServiceAccount", "Role", "RoleBinding", "Deployment"} <= kinds
    for name, doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {exc.message}")


def test_strict_validation_catches_a_misspelt_field() -> None:
    # Guards the tests above against passing vacuously.
    broken = pod_manifest(spec())
    broken["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[0], strict=True)


def test_the_agent_deployment_fits_the_role_accounts_and_policy_beside_it() -> None:
    docs = {name.split(":")[1]: doc for name, doc in infra_docs()}
    deployment = docs["Deployment/tether-agent"]
    pod = deployment["spec"]["template"]["spec"]
    (agent,) = pod["containers"]
    assert agent["command"] == ["python", "-m", "tether.agent"]
    env = {e["name"]: e.get("value") for e in agent["env"]}
    assert env["TETHER_BUS"] == "pubsub" and env["TETHER_PLATFORM"] == "gke"
    assert env["TETHER_AGENT_ID"] and env["GOOGLE_CLOUD_PROJECT"]
    assert agent["readinessProbe"] and agent["livenessProbe"] and agent["resources"]["limits"]
    account = docs["ServiceAccount/tether-agent"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert "iam.gke.io/gcp-service-account" in account["metadata"]["annotations"]
    # The Role is in the namespace the agent puts workspaces in, bound to the agent's account
    # only; nothing cluster-wide.
    workspaces = env["TETHER_WORKSPACE_NAMESPACE"]
    role, binding = docs["Role/tether-agent"], docs["RoleBinding/tether-agent"]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == workspaces
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": "tether-agent",
            "namespace": deployment["metadata"]["namespace"],
        }
    ]
    assert not {"ClusterRole", "ClusterRoleBinding"} & {doc["kind"] for doc in docs.values()}
    # Workspace pods run as an account that exists there and gets no API token.
    ws_account = docs[f"ServiceAccount/{env['TETHER_WORKSPACE_SERVICE_ACCOUNT']}"]
    assert ws_account["metadata"]["namespace"] == workspaces
    assert ws_account["automountServiceAccountToken"] is False
    # Only the agent reaches the runtimes.
    policy = docs["NetworkPolicy/workspace-ingress-from-agent"]
    assert policy["metadata"]["namespace"] == workspaces
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": RUNTIME_PORT}]
    assert (
        rule["from"][0]["podSelector"]["matchLabels"]
        == deployment["spec"]["selector"]["matchLabels"]
    )
