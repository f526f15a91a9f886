"""Kubently's cluster agent, deployment side: the manifests in infra/k8s/cluster-agent/ are
valid Kubernetes (kubernetes-validate, strict) once the README's command has filled them in;
its ServiceAccount reads what kubectl's read verbs read and nothing else (no secret, no exec,
no proxy, no write, no way to more rights); the Deployment holds the agent to the restricted
Pod Security level and gives it the settings tether.settings reads; and Terraform gives each
cluster its subscription, an identity that may read that subscription only, publish events and
use Firestore, bound to the manifests' ServiceAccount by Workload Identity. Offline: Terraform
evaluates the root's cluster agents and the agents' environment with no provider at all."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from tether.bus import COMMANDS_TOPIC, EVENTS_TOPIC, commands_subscription
from tether.settings import Settings

from tests.infra.test_terraform import block, load, locals_of, unq

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
MANIFESTS = K8S / "cluster-agent"
TF = ROOT / "terraform"
VERSIONS = ["1.33", kubernetes_validate.latest_version()]  # as tests/provision/test_gke_manifests

CLUSTER = "prod-eu"
PROJECT = "my-project"
REGION = "europe-west1"
NAMESPACE = "team-a"


# -- the manifests, as the README says to apply them ------------------------------------------


def readme_command(path_glob: str) -> str:
    """The README's shell command that fills in the files matching `path_glob`, without its
    `| kubectl apply -f -`."""
    text = (K8S / "README.md").read_text()
    codes: list[str] = re.findall(r"```\n(.*?)```", text, re.S)
    for code in codes:
        if path_glob in code:
            command = code.replace("\\\n", " ").strip()
            assert command.endswith("| kubectl apply -f -"), command
            return command.removesuffix("| kubectl apply -f -")
    raise AssertionError(f"no command for {path_glob} in infra/k8s/README.md")


def filled(path_glob: str) -> list[dict[str, Any]]:
    """What `kubectl apply` receives from the README's command (its example values)."""
    run = subprocess.run(["bash", "-c", readme_command(path_glob)], cwd=ROOT,
                         capture_output=True, text=True, check=True)  # fmt: skip
    for placeholder in ("CLUSTER_ID", "PROJECT_ID", "REGION", "NAMESPACE"):
        assert not re.search(rf"(?<![_A-Z]){placeholder}", run.stdout), placeholder
    return [doc for doc in yaml.safe_load_all(run.stdout) if doc]


def raw(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


APPLIED = filled("infra/k8s/cluster-agent/*.yaml")
OPTIONAL = filled("infra/k8s/cluster-agent/optional/configmaps.yaml")


def docs_by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{doc['kind']}/{doc['metadata']['name']}": doc for doc in docs}


DOCS = docs_by_kind(APPLIED)
ACCOUNT = f"agent-{CLUSTER}"
AGENT_NAMESPACE = "tether-cluster-agent"


def test_the_readme_command_fills_in_every_file_and_keeps_every_name() -> None:
    files = sorted(MANIFESTS.glob("*.yaml"))
    assert [p.name for p in files] == [
        "00-namespace.yaml", "10-rbac.yaml", "20-agent.yaml", "30-network-policy.yaml",
    ]  # fmt: skip
    assert len(APPLIED) == sum(len(raw(p)) for p in files)
    (agent,) = DOCS["Deployment/tether-cluster-agent"]["spec"]["template"]["spec"]["containers"]
    assert "TETHER_REGION" in {e["name"] for e in agent["env"]}, "sed kept the variable's name"
    assert OPTIONAL[1]["metadata"]["namespace"] == NAMESPACE


@pytest.mark.parametrize("version", VERSIONS)
def test_every_document_is_valid(version: str) -> None:
    kinds = set()
    for doc in [*APPLIED, *OPTIONAL]:
        kinds.add(doc["kind"])
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {exc.message}")
    assert kinds >= {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                     "Role", "RoleBinding", "Deployment", "NetworkPolicy"}  # fmt: skip


def test_names_are_valid_once_filled_in() -> None:
    """The schema does not check names; the API server does (DNS-1123 subdomains)."""
    dns = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
    for doc in [*APPLIED, *OPTIONAL]:
        meta = doc["metadata"]
        for name in (meta["name"], meta.get("namespace", "x")):
            assert dns.fullmatch(name) and len(name) <= 253, name


# -- RBAC: what the agent's account may do ----------------------------------------------------


def rules_for(account: str, docs: list[dict[str, Any]]) -> list[tuple[str | None, dict[str, Any]]]:
    """Every rule bound to the ServiceAccount `account` of the agent's namespace, with the
    namespace it holds in (None: cluster-wide)."""
    roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d
             for d in docs if d["kind"] in ("Role", "ClusterRole")}  # fmt: skip
    found: list[tuple[str | None, dict[str, Any]]] = []
    for binding in docs:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        subject = {"kind": "ServiceAccount", "name": account, "namespace": AGENT_NAMESPACE}
        if subject not in binding["subjects"]:
            continue
        ref = binding["roleRef"]
        where = binding["metadata"].get("namespace")
        role_ns = where if ref["kind"] == "Role" else None
        role = roles[(ref["kind"], role_ns, ref["name"])]
        assert "aggregationRule" not in role, "an aggregated role grows with other roles"
        found += [(where, rule) for rule in role["rules"]]
    return found


RULES = rules_for(ACCOUNT, APPLIED)


def allowed(verb: str, group: str, resource: str, namespace: str | None = "default",
            rules: list[tuple[str | None, dict[str, Any]]] = RULES) -> bool:  # fmt: skip
    """Kubernetes RBAC's answer to a resource request (wildcards included, so that one would
    show up here as access)."""
    for where, rule in rules:
        if where is not None and where != namespace:
            continue
        if "resources" not in rule:
            continue
        base = resource.split("/")[0]
        sub = resource.partition("/")[2]
        names = {resource, "*", f"{base}/*" if sub else "", f"*/{sub}" if sub else ""}
        if (
            (verb in rule["verbs"] or "*" in rule["verbs"])
            and (group in rule["apiGroups"] or "*" in rule["apiGroups"])
            and names & set(rule["resources"])
        ):
            return True
    return False


def allowed_url(path: str) -> bool:
    for _, rule in RULES:
        for url in rule.get("nonResourceURLs", []):
            if "get" in rule["verbs"] and (
                url == path or (url.endswith("*") and path.startswith(url[:-1]))
            ):
                return True
    return False


READ = ("get", "list", "watch")
# (group, resource): what kubectl's read verbs (get, describe, logs, top, events, version,
# api-resources, api-versions, explain) read, and describe's lookups beside the object.
GRANTED = {
    ("", "pods"), ("", "pods/log"), ("", "services"), ("", "endpoints"), ("", "namespaces"),
    ("", "nodes"), ("", "events"), ("", "persistentvolumes"), ("", "persistentvolumeclaims"),
    ("", "replicationcontrollers"), ("", "serviceaccounts"), ("", "resourcequotas"),
    ("", "limitranges"),
    ("apps", "deployments"), ("apps", "replicasets"), ("apps", "statefulsets"),
    ("apps", "daemonsets"),
    ("batch", "jobs"), ("batch", "cronjobs"),
    ("events.k8s.io", "events"),
    ("metrics.k8s.io", "pods"), ("metrics.k8s.io", "nodes"),
    ("networking.k8s.io", "ingresses"), ("networking.k8s.io", "networkpolicies"),
    ("autoscaling", "horizontalpodautoscalers"),
    ("policy", "poddisruptionbudgets"),
    ("discovery.k8s.io", "endpointslices"),
    ("storage.k8s.io", "storageclasses"),
    ("apiextensions.k8s.io", "customresourcedefinitions"),
}  # fmt: skip
# What an SRE handing read-only access to people and AI agents must never hand out.
FORBIDDEN = [
    ("", "secrets"), ("", "pods/exec"), ("", "pods/attach"), ("", "pods/portforward"),
    ("", "pods/proxy"), ("", "nodes/proxy"), ("", "services/proxy"),
    ("", "serviceaccounts/token"), ("", "pods/ephemeralcontainers"), ("", "pods/eviction"),
    ("", "configmaps"),
    ("rbac.authorization.k8s.io", "clusterroles"), ("rbac.authorization.k8s.io", "roles"),
    ("authentication.k8s.io", "tokenreviews"),
    ("certificates.k8s.io", "certificatesigningrequests"),
]  # fmt: skip
DISCOVERY = {"/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*", "/version",
             "/version/"}  # fmt: skip


def all_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*all_strings(k), *all_strings(v))]
    if isinstance(value, list):
        return [s for item in value for s in all_strings(item)]
    return []


def test_the_agent_reads_what_kubectls_read_verbs_need() -> None:
    for group, resource in sorted(GRANTED):
        for verb in READ:
            assert allowed(verb, group, resource), (verb, group, resource)
            assert allowed(verb, group, resource, namespace="kube-system"), "any namespace"
    # Discovery (api-resources, api-versions, every lookup), explain's OpenAPI, version.
    for path in ("/api", "/api/v1", "/apis", "/apis/apps/v1", "/openapi/v2", "/openapi/v3",
                 "/openapi/v3/apis/apps/v1", "/version"):  # fmt: skip
        assert allowed_url(path), path
    # describe node: the node's lease, and nothing else in its namespace.
    assert allowed("get", "coordination.k8s.io", "leases", namespace="kube-node-lease")
    assert not allowed("get", "coordination.k8s.io", "leases", namespace="kube-system")


def test_the_cluster_role_grants_exactly_the_read_verbs_on_exactly_those_resources() -> None:
    granted = set()
    for _, rule in RULES:
        assert set(rule["verbs"]) <= set(READ), rule
        if "nonResourceURLs" in rule:
            assert set(rule["nonResourceURLs"]) <= DISCOVERY and rule["verbs"] == ["get"], rule
            assert set(rule) == {"nonResourceURLs", "verbs"}, rule
            continue
        assert "resourceNames" not in rule
        granted |= {(g, r) for g in rule["apiGroups"] for r in rule["resources"]
                    if (g, r) != ("coordination.k8s.io", "leases")}  # fmt: skip
    assert granted == GRANTED


@pytest.mark.parametrize(("group", "resource"), FORBIDDEN, ids=lambda v: v or "core")
def test_the_agent_never_reaches(group: str, resource: str) -> None:
    for verb in (*READ, "create", "update", "patch", "delete"):
        for namespace in ("default", "kube-system", AGENT_NAMESPACE, None):
            assert not allowed(verb, group, resource, namespace), (verb, namespace)


def test_no_write_no_escalation_no_wildcard() -> None:
    writes = ("create", "update", "patch", "delete", "deletecollection")
    for group, resource in sorted(GRANTED):
        for verb in writes:
            assert not allowed(verb, group, resource), (verb, group, resource)
    for verb, group, resource in [
        ("impersonate", "", "users"), ("impersonate", "", "groups"),
        ("impersonate", "", "serviceaccounts"),
        ("impersonate", "authentication.k8s.io", "userextras/scopes"),
        ("escalate", "rbac.authorization.k8s.io", "clusterroles"),
        ("bind", "rbac.authorization.k8s.io", "clusterroles"),
        ("approve", "certificates.k8s.io", "signers"),
    ]:  # fmt: skip
        assert not allowed(verb, group, resource), verb
    for path in ("/logs", "/metrics", "/debug/pprof", "/healthz/etcd"):
        assert not allowed_url(path), path
    # No "*" as a group, resource, verb or name; a nonResourceURL may end in /* (a path
    # prefix under a discovery path, the same as Kubernetes' own system:discovery role).
    roles = [d for d in [*APPLIED, *OPTIONAL] if d["kind"] in ("Role", "ClusterRole")]
    for role in roles:
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert not any("*" in v for v in rule.get(key, [])), (role["metadata"], rule)
        strings = all_strings(role["rules"])
        assert "*" not in strings, role["metadata"]["name"]
        assert not any("*" in s for s in strings if s not in DISCOVERY), role["metadata"]["name"]


def test_the_role_is_bound_to_the_agents_account_only() -> None:
    for doc in APPLIED:
        if doc["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            assert doc["subjects"] == [
                {"kind": "ServiceAccount", "name": ACCOUNT, "namespace": AGENT_NAMESPACE}
            ], doc["metadata"]["name"]
    # Nothing else in the namespace carries a token.
    assert DOCS["ServiceAccount/default"]["automountServiceAccountToken"] is False


def test_configmaps_are_opt_in_per_namespace() -> None:
    """The applied files leave ConfigMaps out (10-rbac.yaml says why); the optional file
    grants them in the one namespace its RoleBinding is in."""
    rules = rules_for(ACCOUNT, [*APPLIED, *OPTIONAL])
    assert allowed("get", "", "configmaps", NAMESPACE, rules)
    assert allowed("list", "", "configmaps", NAMESPACE, rules)
    assert not allowed("get", "", "configmaps", "kube-system", rules)
    assert not allowed("get", "", "configmaps", None, rules)
    assert not allowed("get", "", "secrets", NAMESPACE, rules)
    assert [d["kind"] for d in OPTIONAL] == ["ClusterRole", "RoleBinding"]


# -- the Deployment ---------------------------------------------------------------------------

DEPLOYMENT = DOCS["Deployment/tether-cluster-agent"]
POD = DEPLOYMENT["spec"]["template"]["spec"]
(AGENT,) = POD["containers"]
ENV = {e["name"]: e["value"] for e in AGENT["env"]}


def test_the_agent_runs_as_restricted_a_pod_as_can_be() -> None:
    assert DEPLOYMENT["metadata"]["namespace"] == AGENT_NAMESPACE
    labels = DOCS[f"Namespace/{AGENT_NAMESPACE}"]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    ctx = POD["securityContext"]
    assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] != 0
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    own = AGENT["securityContext"]
    assert own["allowPrivilegeEscalation"] is False and own.get("privileged") is False
    assert own["readOnlyRootFilesystem"] is True
    assert own["capabilities"] == {"drop": ["ALL"]}, "no capability, none added back"
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        assert not POD.get(host), host
    assert all(set(v) == {"name", "emptyDir"} for v in POD["volumes"]), "no hostPath, no more"
    assert all(v["emptyDir"].get("sizeLimit") for v in POD["volumes"])
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(AGENT["resources"][kind]), kind
    assert POD["enableServiceLinks"] is False
    # One agent per agent id (a second one's results would be stale).
    assert DEPLOYMENT["spec"]["replicas"] == 1
    assert DEPLOYMENT["spec"]["strategy"] == {"type": "Recreate"}
    assert AGENT["readinessProbe"] and AGENT["livenessProbe"]


def test_the_agent_has_its_accounts_token_and_workload_identity() -> None:
    account = DOCS[f"ServiceAccount/{ACCOUNT}"]
    assert POD["serviceAccountName"] == ACCOUNT
    assert POD["automountServiceAccountToken"] is True, "kubectl's in-cluster credentials"
    assert account["automountServiceAccountToken"] is True
    annotation = account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
    assert annotation == f"tether-agent-{CLUSTER}@{PROJECT}.iam.gserviceaccount.com"
    assert POD["nodeSelector"] == {"iam.gke.io/gke-metadata-server-enabled": "true"}


def test_nothing_reaches_the_agent() -> None:
    (policy,) = [d for d in APPLIED if d["kind"] == "NetworkPolicy"]
    assert policy["metadata"]["namespace"] == AGENT_NAMESPACE
    assert policy["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}


def test_the_agent_runs_the_agent_image_as_a_cluster_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    gke = docs_by_kind(raw(K8S / "20-agent.yaml"))["Deployment/tether-agent"]
    (gke_agent,) = gke["spec"]["template"]["spec"]["containers"]
    assert AGENT["image"] == gke_agent["image"].replace("REGION", REGION).replace(
        "PROJECT_ID", PROJECT
    ), "the one agent image (infra/docker/agent.Dockerfile)"
    assert AGENT["command"] == ["python", "-m", "tether.agent"]
    assert ENV == {
        "TETHER_PLATFORM": "cluster",
        "TETHER_AGENT_ID": CLUSTER,
        "TETHER_BUS": "pubsub",
        "TETHER_STORE": "firestore",
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "TETHER_REGION": REGION,
        "TETHER_HEARTBEAT_INTERVAL": "10",
        "TETHER_HOME": "/tmp/tether",
        "PORT": "8080",
    }
    # What tether.settings makes of it.
    for name in list(os.environ):
        if name.startswith("TETHER_"):
            monkeypatch.delenv(name)
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert (settings.platform, settings.agent_id) == ("cluster", CLUSTER)
    assert (settings.store, settings.bus, settings.project) == ("firestore", "pubsub", PROJECT)
    assert settings.region == REGION and settings.heartbeat_interval == 10
    # Writable, the root filesystem being read-only.
    mounts = {m["mountPath"] for m in AGENT["volumeMounts"]}
    assert str(settings.home).startswith(tuple(f"{m}/" for m in mounts))
    port = AGENT["ports"][0]["containerPort"]
    assert int(ENV["PORT"]) == port and AGENT["livenessProbe"]["httpGet"]["port"] == "http"


# -- Terraform --------------------------------------------------------------------------------


def hcl_block(text: str, header: str) -> str:
    """The source of the block opening with `header` (e.g. 'variable "agents" {')."""
    start = text.index(header)
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0 and text[i] == "}":
            return text[start : i + 1]
    raise AssertionError(header)


def test_each_cluster_has_its_subscription_filtered_on_its_agent_id() -> None:
    doc = load("modules/pubsub/main.tf")
    sub = block(doc, "resource", "google_pubsub_subscription", "agent_commands")
    assert sub["for_each"] == "${var.agents}"

    def evaluate(template: str) -> str:
        out: str = unq(template).replace("${local.commands_topic}", COMMANDS_TOPIC)
        return out.replace("${each.key}", CLUSTER)

    assert evaluate(sub["name"]) == commands_subscription(CLUSTER)
    assert evaluate(sub["filter"]) == f'attributes.agent_id = "{CLUSTER}"'
    assert "push_config" not in sub and sub["dynamic"], "push only for Cloud Run agents"
    # The root passes every cluster in as a pulling agent of its own.
    root = locals_of(load("main.tf"))
    assert root["agents"] == "${merge(var.agents, local.cluster_agents)}"
    assert "for id in var.kubently_clusters : id =>" in root["cluster_agents"]
    assert 'platform = "cluster"' in root["cluster_agents"]
    modules = {unq(k): v for entry in load("main.tf")["module"] for k, v in entry.items()}
    pubsub = modules["pubsub"]["agents"]
    assert pubsub.startswith("${merge({for id, agent in local.agents : id =>")
    assert 'push = agent.platform == "cloud_run"' in pubsub
    assert 'subscribers = {agent = module.iam.members["agent-${id}"]}' in pubsub
    assert modules["iam"]["agents"] == modules["agents"]["agents"] == "${local.agents}"


def test_a_cluster_agent_may_read_its_own_subscription_and_publish_events_only() -> None:
    doc = load("modules/pubsub/main.tf")
    local = locals_of(doc)
    # Subscriber: a binding on the agent's own subscription, for pulling agents.
    grant = block(doc, "resource", "google_pubsub_subscription_iam_member", "agent_commands")
    assert unq(grant["role"]) == "roles/pubsub.subscriber"
    assert grant["subscription"] == (
        "${google_pubsub_subscription.agent_commands[each.value.agent].name}"
    )
    own = local["subscription_iam"]
    assert (
        "[for id, agent in var.agents : {for key, member in agent.subscribers : "
        '"${id}/subscriber/${key}" => {agent = id, member = member}} if !agent.push]'
    ) in own
    # Publisher on agent-events: every agent (the root's agent_members spans local.agents), and
    # the agent_events function (a dead-lettered command's failure, to its waiting caller).
    assert (
        'for key, member in var.event_publishers : "${local.events_topic}/publisher/${key}" => '
        '{topic = local.events_topic, role = "roles/pubsub.publisher", member = member}'
        in local["topic_iam"]
    )
    assert unq(local["events_topic"]) == EVENTS_TOPIC
    modules = {unq(k): v for entry in load("main.tf")["module"] for k, v in entry.items()}
    assert modules["pubsub"]["event_publishers"] == (
        '${merge(local.agent_members, {events = module.iam.members["events"]})}'
    )
    assert locals_of(load("main.tf"))["agent_members"].startswith(
        "${{for id, agent in local.agents :"
    )
    # No Pub/Sub role anywhere on the project: only on topics and subscriptions.
    for tf in TF.rglob("*.tf"):
        text = tf.read_text()
        for resource in re.findall(r'resource "google_project_iam_\w+" "\w+" \{', text):
            assert "roles/pubsub." not in hcl_block(text, resource), (tf, resource)
    project_roles = locals_of(load("modules/iam/main.tf"))["project_roles"]
    assert "roles/pubsub." not in project_roles
    # Every agent is among the serving workloads, whose project roles are Firestore (the
    # journal) and Cloud Trace (their spans) only.
    serving = locals_of(load("modules/iam/main.tf"))["serving"]
    assert '[for id, _ in var.agents : "agent-${id}"]' in serving
    for role in ("roles/datastore.user", "roles/cloudtrace.agent"):
        assert f'[for sa in local.serving : {{sa = sa, role = "{role}"}}]' in project_roles
    assert project_roles.count("local.serving") == 2


def test_workload_identity_binds_the_manifests_account_to_the_clusters_identity() -> None:
    doc = load("modules/iam/main.tf")
    sa_roles = locals_of(doc)["sa_roles"]
    wi = sa_roles[sa_roles.index("[for id, agent in var.agents : {target") :]
    assert 'role = "roles/iam.workloadIdentityUser"' in wi
    assert 'if contains(["gke", "cluster"], agent.platform)' in wi
    member = re.search(r'member = "(serviceAccount:[^"]+\])"', wi)
    assert member
    # The root's cluster agents, evaluated: the account is the manifests' one.
    namespace = unq(locals_of(load("main.tf"))["cluster_agent_namespace"])
    template = re.search(
        r'k8s_service_account = "([^"]+)"', locals_of(load("main.tf"))["cluster_agents"]
    )
    assert template
    k8s = template.group(1).replace("${local.cluster_agent_namespace}", namespace)
    k8s = k8s.replace("${id}", CLUSTER)
    assert k8s == f"{AGENT_NAMESPACE}/{ACCOUNT}"
    bound = member.group(1).replace("${var.project_id}", PROJECT)
    assert bound.replace("${agent.k8s_service_account}", k8s) == (
        f"serviceAccount:{PROJECT}.svc.id.goog[{AGENT_NAMESPACE}/{ACCOUNT}]"
    )
    # The Google account the manifests' annotation names is the one the binding is on.
    account = block(doc, "resource", "google_service_account", "this")
    assert unq(account["account_id"]) == "tether-${each.key}"
    assert 'target = "agent-${id}"' in wi


def scratch_terraform(tmp_path: Path) -> Path:
    """The root's agent variables and cluster-agent locals and the agents module's locals,
    copied verbatim into a configuration with no provider, which Terraform runs offline."""
    variables = (TF / "variables.tf").read_text()
    main = (TF / "main.tf").read_text()
    found = re.search(r"^  cluster_agent_namespace .*?^  agents = merge\(.*?$", main, re.S | re.M)
    assert found, "the cluster agents' locals in terraform/main.tf"
    module_main = (TF / "modules/agents/main.tf").read_text()
    module_locals = hcl_block(module_main, "locals {")
    module_vars = (TF / "modules/agents/variables.tf").read_text()
    used = sorted(set(re.findall(r"var\.(\w+)", module_locals)))
    (tmp_path / "agents").mkdir()
    module = [module_locals, *(hcl_block(module_vars, f'variable "{v}" {{') for v in used)]
    module.append('output "env" {\n  value = local.env\n}\n')
    (tmp_path / "agents" / "main.tf").write_text("\n".join(module))
    passed = "\n".join(
        f'  {v} = "{v}-value"' for v in used if v != "agents"
        and not re.search(r"^\s*default\s*=", hcl_block(module_vars, f'variable "{v}" {{'), re.M)
    )  # fmt: skip
    (tmp_path / "main.tf").write_text("\n".join([
        hcl_block(variables, 'variable "agents" {'),
        hcl_block(variables, 'variable "kubently_clusters" {'),
        "locals {", found.group(0), "}",
        f'module "agents" {{\n  source = "./agents"\n  agents = local.agents\n{passed}\n}}',
        'output "agents" {\n  value = local.agents\n}',
        'output "env" {\n  value = module.agents.env\n}',
    ]))  # fmt: skip
    return tmp_path


def terraform(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert shutil.which("terraform"), "terraform is on every machine (see the README)"
    env = {**os.environ, "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1"}
    return subprocess.run(["terraform", *args, "-no-color"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_terraform_makes_each_cluster_an_agent_with_the_deployments_environment(
    tmp_path: Path,
) -> None:
    scratch = scratch_terraform(tmp_path)
    init = terraform(scratch, "init", "-input=false", "-backend=false")
    assert init.returncode == 0, init.stdout + init.stderr
    plan = terraform(scratch, "plan", "-input=false", "-out=plan",
                     f'-var=kubently_clusters=["{CLUSTER}", "staging"]')  # fmt: skip
    assert plan.returncode == 0, plan.stdout + plan.stderr
    shown = terraform(scratch, "show", "-json", "plan")
    outputs = json.loads(shown.stdout)["planned_values"]["outputs"]
    agents, env = outputs["agents"]["value"], outputs["env"]["value"]
    assert agents[CLUSTER] == {
        "platform": "cluster", "k8s_service_account": f"{AGENT_NAMESPACE}/{ACCOUNT}",
    }  # fmt: skip
    assert agents["staging"]["k8s_service_account"] == f"{AGENT_NAMESPACE}/agent-staging"
    assert {"cloud-run", "gke"} <= set(agents), "the other agents stay"
    # The Deployment's environment is Terraform's for this cluster (its project and region
    # filled in by hand), plus the probes' port; nothing about workspaces.
    expected = {**env[CLUSTER], "GOOGLE_CLOUD_PROJECT": PROJECT, "TETHER_REGION": REGION}
    assert {k: v for k, v in ENV.items() if k != "PORT"} == expected
    assert "TETHER_WORKSPACE_IMAGE" in env["gke"], "workspace agents keep theirs"


@pytest.mark.parametrize("clusters", ['["Prod_EU"]', '["a-cluster-id-too-long"]', '["9lives"]'])
def test_terraform_refuses_a_cluster_id_that_cannot_be_an_agent_id(
    tmp_path: Path, clusters: str
) -> None:
    scratch = scratch_terraform(tmp_path)
    assert terraform(scratch, "init", "-input=false", "-backend=false").returncode == 0
    plan = terraform(scratch, "plan", "-input=false", f"-var=kubently_clusters={clusters}")
    assert plan.returncode != 0 and "cluster id" in plan.stderr, plan.stderr


def test_a_cluster_id_that_is_already_an_agent_id_fails_the_plan() -> None:
    outputs = {unq(k): v for entry in load("outputs.tf")["output"] for k, v in entry.items()}
    out = outputs["kubently_cluster_agents"]
    (pre,) = out["precondition"]
    assert pre["condition"] == (
        "${length(setintersection(keys(var.agents), var.kubently_clusters)) == 0}"
    )
    for field in ("google_service_account", "k8s_service_account", "subscription", "env"):
        assert f"{field} =" in out["value"], field
