"""The Terraform and the code agree: every function target has its function, every topic and
subscription the code uses exists with the filter the code expects, every composite index the
queries need is declared, the TTL policies cover what expires, the load balancer sends every
route to its target. Plus `terraform fmt` and checkov, offline."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest
from aiohttp import web
from tether.agent.journal import EXPIRING as JOURNAL_KINDS
from tether.bus import COMMANDS_TOPIC, EVENTS_TOPIC, commands_subscription
from tether.relay import app as relay_app
from tether.service.sweeper import EXPIRING_KINDS, RETAINED
from tether.store.indexes import COMPOSITE_INDEXES, as_json
from tether.targets import ROUTES

ROOT = Path(__file__).resolve().parents[2]
TF = ROOT / "terraform"
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"


def load(path: str) -> dict[str, Any]:
    with (TF / path).open() as f:
        return dict(hcl2.load(f))


def unq(value: Any) -> Any:
    """python-hcl2 keeps string literals quoted."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"')
    return value


def block(doc: dict[str, Any], kind: str, type_: str, name: str) -> dict[str, Any]:
    """A labelled block (python-hcl2 keeps the labels quoted too)."""
    for entry in doc.get(kind, []):
        for label, named in entry.items():
            for inner, body in named.items():
                if (unq(label), unq(inner)) == (type_, name):
                    return dict(body)
    raise AssertionError(f"no {kind} {type_}.{name}")


def variable_default(doc: dict[str, Any], name: str) -> Any:
    for entry in doc.get("variable", []):
        for label, body in entry.items():
            if unq(label) == name:
                return body.get("default")
    raise AssertionError(f"no variable {name}")


def locals_of(doc: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for entry in doc.get("locals", []):
        merged |= entry
    return merged


def targets() -> dict[str, str]:
    """functions/main.py's targets: name -> "http" | "cloud_event"."""
    tree = ast.parse((ROOT / "functions" / "main.py").read_text())
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            call = node.value.func
            if isinstance(call, ast.Attribute) and call.attr in ("http", "cloud_event"):
                found[node.targets[0].id] = call.attr  # type: ignore[attr-defined]
    return found


def test_terraform_is_formatted() -> None:
    assert shutil.which("terraform"), "terraform is on every machine (see the README)"
    run = subprocess.run(["terraform", "fmt", "-check", "-recursive", str(TF)],
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, f"terraform fmt would change: {run.stdout}"


def test_every_module_declares_typed_described_variables() -> None:
    for path in [TF / "variables.tf", *TF.glob("modules/*/variables.tf")]:
        for entry in load(str(path.relative_to(TF))).get("variable", []):
            for name, spec in entry.items():
                assert "type" in spec and unq(spec.get("description")), f"{path}: {name}"
    for module in (TF / "modules").iterdir():
        files = {f.name for f in module.glob("*.tf")}
        assert files >= {"main.tf", "variables.tf", "outputs.tf", "versions.tf"}, module


def test_every_function_target_has_a_function_with_its_entry_point() -> None:
    doc = load("modules/functions/main.tf")
    declared = locals_of(doc)["functions"]
    code = targets()
    assert set(declared) == set(code), "terraform functions != functions/main.py targets"
    for name, kind in code.items():
        assert (unq(declared[name]["topic"]) is not None) == (kind == "cloud_event"), name
    function = block(doc, "resource", "google_cloudfunctions2_function", "this")
    assert function["for_each"] == "${local.settings}", "one function per entry of local.functions"
    (build,) = function["build_config"]
    assert build["entry_point"] == "${each.key}", "entry point must be the target's name"
    (dynamic,) = function["dynamic"]
    (trigger,) = dynamic['"event_trigger"']["content"]
    assert unq(trigger["event_type"]) == "google.cloud.pubsub.topic.v1.messagePublished"
    assert unq(declared["agent_events"]["topic"]) == EVENTS_TOPIC


def test_topics_and_agent_subscriptions_match_the_bus() -> None:
    doc = load("modules/pubsub/main.tf")
    local = locals_of(doc)
    assert unq(local["commands_topic"]) == COMMANDS_TOPIC
    assert unq(local["events_topic"]) == EVENTS_TOPIC
    assert "local.commands_topic" in local["topics"] and "local.events_topic" in local["topics"]
    assert block(doc, "resource", "google_pubsub_topic", "this")["for_each"] == "${local.topics}"
    sub = block(doc, "resource", "google_pubsub_subscription", "agent_commands")
    defaults = variable_default(load("variables.tf"), "agents")
    assert defaults, "at least one agent by default"

    def evaluate(template: str, agent_id: str) -> str:
        out = unq(template).replace("${local.commands_topic}", COMMANDS_TOPIC)
        return out.replace("${each.key}", agent_id)

    for agent_id in defaults:
        assert evaluate(sub["name"], agent_id) == commands_subscription(agent_id)
        # The filter the Pub/Sub adapter writes when it creates a subscription itself.
        assert evaluate(sub["filter"], agent_id) == f'attributes.agent_id = "{agent_id}"'
        assert sub["dead_letter_policy"], "undeliverable commands go to the dead-letter topic"


def test_composite_indexes_and_ttl_policies_match_the_code() -> None:
    local = locals_of(load("modules/firestore/main.tf"))
    assert "indexes.json" in local["composite_indexes"]
    written = (TF / "modules/firestore/indexes.json").read_text()
    assert written == as_json(COMPOSITE_INDEXES), "run: python -m tether.store.indexes > ..."
    assert unq(local["ttl_field"]) == "expires_at"
    assert {unq(c) for c in local["ttl_collections"]} == set(EXPIRING_KINDS) | set(JOURNAL_KINDS)
    assert {k: unq(v) for k, v in local["retained"].items()} == RETAINED


def test_the_load_balancer_routes_every_path_to_its_target() -> None:
    routes = [(unq(r["path"]), unq(r["backend"])) for r in locals_of(load("main.tf"))["routes"]]

    def backend(path: str) -> str | None:
        for pattern, name in routes:  # first match wins, as in the URL map's route rules
            regex = re.escape(pattern).replace(r"\*", "[^/]+")
            if re.fullmatch(regex, path) or (pattern.endswith("/*") and path.startswith(
                    pattern[:-1])):  # fmt: skip
                return name
        return None

    for prefix, target in ROUTES:
        assert backend(prefix) == target, prefix
        if not prefix.endswith(".json"):  # a document has no paths under it
            assert backend(prefix + "/some-id") == target, prefix
    # Every path the relay serves: its WebSockets and pages.
    aio = web.Application()
    relay_app.add_routes(aio, relay_app.vnc_viewer)
    paths = [re.sub(r"\{\w+\}", "ws-1", str(r.canonical)) for r in aio.router.resources()
              if not isinstance(r, web.StaticResource)]  # fmt: skip
    assert len(paths) >= 5, paths  # two shells, the terminal, the desktop, live logs
    for path in (*paths, "/novnc/core/rfb.js"):
        # Openctrol's tunnels and viewers meet in the one-instance desktop relay.
        wanted = "desktop_relay" if path.startswith("/openctrol/") else "relay"
        assert backend(path) == wanted, path


def test_checkov_passes_offline_and_every_skip_says_why() -> None:
    if not CHECKOV.exists():
        pytest.fail("checkov is missing: `make test` puts it in .venv-checkov")
    for tf in TF.rglob("*.tf"):
        for line in tf.read_text().splitlines():
            if "checkov:skip=" in line:
                assert re.search(r"checkov:skip=CKV\w*_\d+:\s*\S.{10,}", line), f"{tf}: {line}"
    run = subprocess.run([str(CHECKOV), "-d", str(TF), "--framework", "terraform",
                          "--skip-download", "--compact", "--quiet"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:]


def test_cloud_build_lints_tests_builds_every_image_then_applies() -> None:
    import yaml

    build = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())
    steps = {step["id"]: step for step in build["steps"]}
    text = (ROOT / "cloudbuild.yaml").read_text()
    assert "make PYTHON=python3 lint typecheck" in text and "bash .ci/run" in text
    dockerfiles = set(re.findall(r"infra/docker/[\w.-]+\.Dockerfile", text))
    assert dockerfiles == {str(p.relative_to(ROOT)) for p in (ROOT / "infra/docker").iterdir()
                           if p.name.endswith(".Dockerfile")}  # fmt: skip
    assert all((ROOT / d).exists() for d in dockerfiles)
    # Images only after the tests pass; the full apply only once they are pushed.
    builds = {i for i in steps if i.startswith("build")}
    assert builds and all(steps[b]["waitFor"] == ["test"] for b in builds)
    pushes = [i for i, s in steps.items() if "docker push" in str(s.get("args"))]
    assert pushes and all(builds <= set(steps[i]["waitFor"]) for i in pushes)
    applies = [s for s in steps.values() if "terraform" in s["name"] and s["args"][0] == "apply"
               and not any(a.startswith("-target") for a in s["args"])]  # fmt: skip
    assert len(applies) == 1 and set(pushes) <= set(applies[0]["waitFor"])


# -- workspace isolation ----------------------------------------------------------------------

WORKSPACE_IDENTITY_PERMISSIONS = {
    "iam.serviceAccounts.actAs",  # deploy the workspace as its identity
    "iam.serviceAccounts.create",
    "iam.serviceAccounts.delete",
    "iam.serviceAccounts.get",
}
# Roles that would let an agent mint keys or tokens, edit policies, or hand out identities
# beyond what the custom role allows.
TOO_BROAD = (
    "roles/owner",
    "roles/editor",
    "roles/iam.serviceAccountAdmin",
    "roles/iam.serviceAccountUser",
    "roles/iam.serviceAccountKeyAdmin",
    "roles/iam.serviceAccountTokenCreator",
    "roles/resourcemanager.projectIamAdmin",
    "roles/storage.admin",
)


def test_agents_may_make_workspace_identities_and_nothing_broader() -> None:
    doc = load("modules/iam/main.tf")
    role = block(doc, "resource", "google_project_iam_custom_role", "workspace_identities")
    assert {unq(p) for p in role["permissions"]} == WORKSPACE_IDENTITY_PERMISSIONS
    local = locals_of(doc)
    assert "google_project_iam_custom_role.workspace_identities.id" in local["project_roles"]
    assert "local.cloud_run_agents" in local["project_roles"].split("workspace_identities")[0]
    for broad in TOO_BROAD:
        assert broad not in local["project_roles"], broad
    # On accounts, agents get nothing (Pub/Sub's own agent keeps its token grants).
    assert "cloud_run_agents" not in local["sa_roles"]
    assert "roles/iam.serviceAccountUser" not in local["sa_roles"]
    # No identity shared by workspaces: each Cloud Run workspace gets its own at runtime, a
    # GKE workspace none.
    assert "workspace =" not in local["workloads"]
    assert "workspace" not in local["sa_roles"]


def test_api_and_relay_may_make_their_own_reply_inboxes_only() -> None:
    from tether.bus.pubsub import INBOX_PREFIX

    doc = load("modules/iam/main.tf")
    role = block(doc, "resource", "google_project_iam_custom_role", "reply_inboxes")
    assert {unq(p) for p in role["permissions"]} == {
        "pubsub.subscriptions.consume", "pubsub.subscriptions.create",
        "pubsub.subscriptions.delete",
    }  # fmt: skip
    grant = block(doc, "resource", "google_project_iam_member", "reply_inboxes")
    assert unq(grant["for_each"]) == '${toset(["api", "relay"])}'
    condition = unq(grant["condition"][0]["expression"])
    assert condition == (
        f'resource.name.startsWith("projects/${{var.project_id}}/subscriptions/{INBOX_PREFIX}")'
    )
    routes = (TF / "main.tf").read_text()
    assert 'event_subscribers = {\n    api   = module.iam.members["api"]' in routes


def test_no_workspace_holds_a_role_on_the_sessions_bucket() -> None:
    text = (TF / "main.tf").read_text()
    grants = text.split('module "storage"')[1].split("depends_on")[0]
    assert 'members["workspace"]' not in grants
    sessions = re.findall(
        r'bucket = "sessions", role = "([^"]+)", key = key, member = member', grants
    )
    assert sorted(sessions) == ["roles/storage.folderAdmin", "roles/storage.objectAdmin"]
    assert "for key, member in local.cloud_run_agent_members" in grants, "Cloud Run agents only"


def test_agents_and_relay_reach_internal_only_workspaces_through_the_vpc() -> None:
    """Workspace services take internal traffic only (tether.provision.cloudrun): their
    callers send everything through a subnet with Private Google Access."""
    for path, name in (("modules/agents/main.tf", "agent"), ("modules/relay/main.tf", "relay")):
        svc = block(load(path), "resource", "google_cloud_run_v2_service", name)
        (template,) = svc["template"]
        (access,) = template["vpc_access"]
        assert unq(access["egress"]) == "ALL_TRAFFIC", path
        (nic,) = access["network_interfaces"]
        assert nic["subnetwork"] == "${var.vpc_subnetwork}", path
    subnet = block(load("modules/network/main.tf"), "resource", "google_compute_subnetwork", "this")
    assert subnet["private_ip_google_access"] is True
    root = (TF / "main.tf").read_text()
    for module in ("agents", "relay"):
        body = root.split(f'module "{module}"')[1].split("depends_on")[0]
        assert "vpc_subnetwork" in body and "module.network.subnetwork" in body, module
