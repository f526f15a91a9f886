"""Every manifest the GKE provisioner sends, and every document in infra/k8s, is valid for the
Kubernetes versions we target (kubernetes-validate's schemas, strict: no unknown fields), and
holds a workspace to what its template allows: no privilege, no credential, its resources, its
sandbox, its network."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from tether.core.models import Template, WorkspaceSpec
from tether.provision.gke_manifests import (
    AGENT_LABELS,
    AGENT_NAMESPACE,
    DEFAULT_NAMESPACE,
    LABEL_NETWORK,
    RUNTIME_PORT,
    network_policies,
    pod_manifest,
    pvc_manifest,
    service_manifest,
)

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
# The oldest minor a GKE release channel still offers when this was written, and the newest
# kubernetes-validate ships schemas for: a field added or dropped in between fails one of them.
VERSIONS = ["1.33", kubernetes_validate.latest_version()]


def spec(persistent: bool = True, command: str | None = None, **template_kw: Any) -> WorkspaceSpec:
    template_kw.setdefault("resources", {"cpu": "500m", "memory": "512Mi", "storage": "20Gi"})
    template = Template(
        name="python", display_name="Python", env={"GREETING": "hi"}, command=command,
        **template_kw,
    )  # fmt: skip
    return WorkspaceSpec(session_id="Session_1", template=template, persistent_home=persistent)


GENERATED: dict[str, dict[str, Any]] = {
    "pod with a persistent home": pod_manifest(spec()),
    "pod with a scratch home and a main command": pod_manifest(
        spec(persistent=False, command="python -m http.server")
    ),
    "pod with its own service account": pod_manifest(spec(), service_account="ws"),
    "pod in GKE Sandbox with egress": pod_manifest(spec(sandbox="gvisor", network="egress")),
    "pod from the workspace image": pod_manifest(
        spec(command="sleep infinity"), image="europe-docker.pkg.dev/p/tether/workspace:1"
    ),
    "pod whose template limits pids": pod_manifest(
        spec(resources={"cpu": "1", "memory": "1Gi", "pids": "256", "ephemeral-storage": "1Gi"})
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
    # Only the agent (and the relay, from outside the cluster) reaches the runtimes.
    policy = docs["NetworkPolicy/workspace-ingress-from-agent-and-relay"]
    assert policy["metadata"]["namespace"] == workspaces
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": RUNTIME_PORT}]
    assert (
        rule["from"][0]["podSelector"]["matchLabels"]
        == deployment["spec"]["selector"]["matchLabels"]
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_generated_network_policies_are_valid(version: str) -> None:
    for policy in network_policies(control_plane="34.1.2.3/32", relay="10.10.0.0/24"):
        kubernetes_validate.validate(policy, version, strict=True)


# -- what a workspace pod may do ----------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in sorted(GENERATED) if n.startswith("pod")])
def test_a_workspace_pod_has_no_privilege_and_no_credential(name: str) -> None:
    pod = GENERATED[name]["spec"]
    ctx = pod["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert ctx["runAsUser"] == ctx["runAsGroup"] == 1000, "never root, whatever the image says"
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    own = container["securityContext"]
    assert own["allowPrivilegeEscalation"] is False and own["privileged"] is False
    assert own["capabilities"] == {"drop": ["ALL"]}, "no capability, none added back"
    assert "runAsUser" not in own and "seccompProfile" not in own, "nothing overrides the pod's"
    assert pod["automountServiceAccountToken"] is False, "no token for the cluster's API"
    assert pod["enableServiceLinks"] is False, "no addresses of other workspaces in its env"
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(host), host
    # Only its own volumes: no hostPath, no CSI (Cloud Storage FUSE would need the metadata
    # server), no projected token.
    assert all(set(v) <= {"name", "persistentVolumeClaim", "emptyDir"} for v in pod["volumes"])
    assert "gke-gcsfuse/volumes" not in GENERATED[name]["metadata"]["annotations"]


def test_the_workspace_namespace_enforces_the_restricted_pod_security_level() -> None:
    """The API server itself refuses a pod there that is given more than the generator gives
    (the pod above meets the level: non-root, no escalation, no capability, RuntimeDefault)."""
    docs = {name.split(":")[1]: doc for name, doc in infra_docs()}
    labels = docs[f"Namespace/{DEFAULT_NAMESPACE}"]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_requests_and_limits_come_from_the_template() -> None:
    (container,) = pod_manifest(spec())["spec"]["containers"]
    expected = {"cpu": "500m", "memory": "512Mi", "ephemeral-storage": "2Gi"}
    assert container["resources"] == {"requests": expected, "limits": expected}
    assert "storage" not in container["resources"]["limits"], "that is the home's claim"
    assert pvc_manifest(spec())["spec"]["resources"]["requests"] == {"storage": "20Gi"}

    own = spec(resources={"cpu": "2", "memory": "4Gi", "ephemeral-storage": "5Gi"})
    (container,) = pod_manifest(own)["spec"]["containers"]
    assert container["resources"]["limits"] == {
        "cpu": "2",
        "memory": "4Gi",
        "ephemeral-storage": "5Gi",
    }


def test_a_pids_limit_is_left_out_of_the_pod_as_kubernetes_has_no_such_resource() -> None:
    """`pids` is a Tether resource (local workspaces). The schema takes any key there, but the
    API server refuses a container resource name that is neither standard nor domain-prefixed;
    GKE bounds a pod's processes by the kubelet's podPidsLimit instead."""
    own = spec(resources={"cpu": "1", "memory": "1Gi", "pids": "256", "storage": "5Gi"})
    (container,) = pod_manifest(own)["spec"]["containers"]
    expected = {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "2Gi"}
    assert container["resources"] == {"requests": expected, "limits": expected}


def test_a_scratch_home_is_bounded_and_counted_in_the_pods_disk_limit() -> None:
    pod = pod_manifest(spec(persistent=False))["spec"]
    (home,) = pod["volumes"]
    assert home == {"name": "home", "emptyDir": {"sizeLimit": "20Gi"}}
    (container,) = pod["containers"]
    # The kubelet counts emptyDir usage against the containers' limits: 20Gi + 2Gi.
    assert container["resources"]["limits"]["ephemeral-storage"] == str(22 * 2**30)


def test_a_gvisor_template_runs_in_gke_sandbox_and_others_do_not() -> None:
    sandboxed = pod_manifest(spec(sandbox="gvisor"))["spec"]
    assert sandboxed["runtimeClassName"] == "gvisor"
    assert sandboxed["nodeSelector"] == {"sandbox.gke.io/runtime": "gvisor"}
    assert sandboxed["tolerations"] == [
        {"key": "sandbox.gke.io/runtime", "operator": "Equal", "value": "gvisor",
         "effect": "NoSchedule"}
    ]  # fmt: skip
    plain = pod_manifest(spec())["spec"]
    assert not {"runtimeClassName", "nodeSelector", "tolerations"} & set(plain)


# -- the network: the namespace's policies, evaluated ---------------------------------------


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "this evaluator knows matchLabels only"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _peer_matches(peer: dict[str, Any], dest: dict[str, Any]) -> bool:
    if "ipBlock" in peer:
        if "ip" not in dest:
            return False
        ip = ipaddress.ip_address(dest["ip"])
        block = peer["ipBlock"]
        return ip in ipaddress.ip_network(block["cidr"]) and not any(
            ip in ipaddress.ip_network(e) for e in block.get("except", [])
        )
    if "pod" not in dest:
        return False
    namespace, labels = dest["pod"]
    ns_ok = (
        _selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace})
        if "namespaceSelector" in peer
        else namespace == DEFAULT_NAMESPACE
    )
    return ns_ok and _selects(peer.get("podSelector", {}), labels)


def _allowed(
    policies: list[dict[str, Any]], pod: dict[str, str], direction: str, peer: dict[str, Any],
    port: int, protocol: str = "TCP",
) -> bool:  # fmt: skip
    """NetworkPolicy semantics: traffic is open unless some policy of that direction selects
    the pod; then it passes if any rule of any of them allows it."""
    selecting = [
        p["spec"] for p in policies
        if direction in p["spec"]["policyTypes"] and _selects(p["spec"]["podSelector"], pod)
    ]  # fmt: skip
    if not selecting:
        return True
    key, side = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    for policy in selecting:
        for rule in policy.get(key, []):
            ports = rule.get("ports")
            if ports and not any(
                p["port"] == port and p.get("protocol", "TCP") == protocol for p in ports
            ):
                continue
            if any(_peer_matches(x, peer) for x in rule.get(side, [])):
                return True
    return False


def _workspace(network: str) -> dict[str, str]:
    return pod_manifest(spec(network=network))["metadata"]["labels"]


CONTROL_PLANE = "34.1.2.3"
RELAY_SUBNET = "10.10.0.0/24"  # terraform's vpc_cidr default: the relay's Direct VPC egress
POLICIES = network_policies(control_plane=f"{CONTROL_PLANE}/32", relay=RELAY_SUBNET)
RELAY = {"ip": "10.10.0.37"}
AGENT = {"pod": (AGENT_NAMESPACE, dict(AGENT_LABELS))}
NEIGHBOUR = {"pod": (DEFAULT_NAMESPACE, _workspace("egress"))}
FORBIDDEN = {
    "the metadata server": ("169.254.169.254", 80),
    "GKE's metadata server": ("169.254.169.252", 988),
    "the control plane's public endpoint": (CONTROL_PLANE, 443),
    "a private control plane": ("172.16.0.2", 443),
    "a node or pod of the cluster": ("10.8.0.7", 8080),
    "a Service address": ("10.12.3.4", 8080),
    "a host of the VPC": ("192.168.1.10", 22),
    "a carrier-grade NAT address": ("100.64.0.9", 443),
}


def test_pods_carry_their_templates_network_in_the_label_the_policies_select() -> None:
    assert _workspace("none")[LABEL_NETWORK] == "none"
    assert _workspace("egress")[LABEL_NETWORK] == "egress"


@pytest.mark.parametrize("network", ["none", "egress"])
def test_only_the_agent_and_relay_reach_a_workspace_and_only_at_the_runtimes_port(
    network: str,
) -> None:
    pod = _workspace(network)
    assert _allowed(POLICIES, pod, "Ingress", AGENT, RUNTIME_PORT)
    assert not _allowed(POLICIES, pod, "Ingress", AGENT, 22)
    assert _allowed(POLICIES, pod, "Ingress", RELAY, RUNTIME_PORT), "the relay, from the VPC"
    assert not _allowed(POLICIES, pod, "Ingress", RELAY, 22)
    assert not _allowed(POLICIES, pod, "Ingress", {"ip": "10.11.0.5"}, RUNTIME_PORT), "the VPC"
    assert not _allowed(POLICIES, pod, "Ingress", NEIGHBOUR, RUNTIME_PORT), "another workspace"
    other_namespace = {"pod": ("default", dict(AGENT_LABELS))}
    assert not _allowed(POLICIES, pod, "Ingress", other_namespace, RUNTIME_PORT)
    assert not _allowed(POLICIES, pod, "Ingress", {"ip": "8.8.8.8"}, RUNTIME_PORT)


def test_a_workspace_without_egress_reaches_nothing_not_even_dns() -> None:
    pod = _workspace("none")
    assert not _allowed(POLICIES, pod, "Egress", {"ip": "8.8.8.8"}, 443)
    assert not _allowed(POLICIES, pod, "Egress", {"ip": "169.254.169.254"}, 53, "UDP")
    kube_dns = {"pod": ("kube-system", {"k8s-app": "kube-dns"})}
    assert not _allowed(POLICIES, pod, "Egress", kube_dns, 53, "UDP")
    assert not _allowed(POLICIES, pod, "Egress", AGENT, 8080)
    for ip, port in FORBIDDEN.values():
        assert not _allowed(POLICIES, pod, "Egress", {"ip": ip}, port)


@pytest.mark.parametrize("what", sorted(FORBIDDEN))
def test_a_workspace_with_egress_never_reaches(what: str) -> None:
    ip, port = FORBIDDEN[what]
    assert not _allowed(POLICIES, _workspace("egress"), "Egress", {"ip": ip}, port)


def test_a_workspace_with_egress_reaches_dns_and_the_internet_but_no_tether_pod() -> None:
    pod = _workspace("egress")
    assert _allowed(POLICIES, pod, "Egress", {"ip": "8.8.8.8"}, 443)
    assert _allowed(POLICIES, pod, "Egress", {"ip": "151.101.0.223"}, 80)
    kube_dns = {"pod": ("kube-system", {"k8s-app": "kube-dns"})}
    assert _allowed(POLICIES, pod, "Egress", kube_dns, 53, "UDP")
    # Cloud DNS for GKE answers at the metadata server's address: DNS only, not its API.
    assert _allowed(POLICIES, pod, "Egress", {"ip": "169.254.169.254"}, 53, "UDP")
    assert not _allowed(POLICIES, pod, "Egress", {"ip": "169.254.169.254"}, 80)
    assert not _allowed(POLICIES, pod, "Egress", AGENT, 8080), "the agent's namespace"
    assert not _allowed(POLICIES, pod, "Egress", NEIGHBOUR, RUNTIME_PORT), "another workspace"


def test_the_policies_applied_with_infra_k8s_are_the_generated_ones() -> None:
    """One source: the YAML is the function's output (its placeholder left for deployment)."""
    applied = [doc for _, doc in infra_docs() if doc["kind"] == "NetworkPolicy"]
    assert applied == network_policies()
    assert all(doc["metadata"]["namespace"] == DEFAULT_NAMESPACE for doc in applied)


def test_nodes_pre_pull_the_image_the_agent_starts_workspaces_from() -> None:
    """infra/k8s/40-prepull.yaml keeps the agent's TETHER_WORKSPACE_IMAGE on every node, the
    GKE Sandbox ones too, in pods held to what a workspace is (no privilege, no token)."""
    docs = dict(infra_docs())
    agent = docs["20-agent.yaml:Deployment/tether-agent"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for c in agent["containers"] for e in c.get("env", [])}
    pullers = [doc for name, doc in docs.items() if name.startswith("40-prepull.yaml:DaemonSet")]
    assert len(pullers) == 2
    for doc in pullers:
        pod = doc["spec"]["template"]["spec"]
        assert doc["metadata"]["namespace"] == DEFAULT_NAMESPACE
        assert [c["image"] for c in pod["initContainers"]] == [env["TETHER_WORKSPACE_IMAGE"]]
        assert (
            pod["automountServiceAccountToken"] is False and pod["securityContext"]["runAsNonRoot"]
        )
        for c in pod["initContainers"] + pod["containers"]:
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert pullers[1]["spec"]["template"]["spec"]["runtimeClassName"] == "gvisor"
