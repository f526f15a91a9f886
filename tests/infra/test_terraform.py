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
from tether.bus import COMMANDS_TOPIC, DEAD_LETTER_TOPIC, EVENTS_TOPIC, commands_subscription
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


def test_dead_lettered_commands_are_pushed_to_the_function_that_fails_them() -> None:
    doc = load("modules/pubsub/main.tf")
    assert unq(locals_of(doc)["dead_letter_topic"]) == DEAD_LETTER_TOPIC
    sub = block(doc, "resource", "google_pubsub_subscription", "agent_commands")
    (policy,) = sub["dead_letter_policy"]
    assert policy["dead_letter_topic"] == "${google_pubsub_topic.this[local.dead_letter_topic].id}"
    dead = block(doc, "resource", "google_pubsub_subscription", "dead_letter")
    (push,) = dead["dynamic"]
    (content,) = push['"push_config"']["content"]
    assert content["push_endpoint"] == "${push_config.value.endpoint}"
    (oidc,) = content["oidc_token"]
    assert oidc["service_account_email"] == "${push_config.value.service_account_email}"
    modules = {unq(k): v for entry in load("main.tf")["module"] for k, v in entry.items()}
    wired = modules["pubsub"]["dead_letter_push"]
    assert wired["endpoint"] == '${module.functions.event_urls["agent_events"]}'
    assert targets()["agent_events"] == "cloud_event"  # it takes a raw Pub/Sub push too
    # Pushed as the identity of agent_events' own trigger, which may invoke it.
    functions = locals_of(load("modules/functions/main.tf"))["functions"]
    identity = unq(functions["agent_events"]["identity"])
    assert wired["service_account_email"] == f'${{module.iam.emails["{identity}"]}}'


def test_composite_indexes_and_ttl_policies_match_the_code() -> None:
    local = locals_of(load("modules/firestore/main.tf"))
    assert "indexes.json" in local["composite_indexes"]
    written = (TF / "modules/firestore/indexes.json").read_text()
    assert written == as_json(COMPOSITE_INDEXES), "run: python -m tether.store.indexes > ..."
    assert unq(local["ttl_field"]) == "expires_at"
    assert {unq(c) for c in local["ttl_collections"]} == set(EXPIRING_KINDS) | set(JOURNAL_KINDS)
    assert {k: unq(v) for k, v in local["retained"].items()} == RETAINED


def lb_routes() -> list[tuple[str, str]]:
    return [(unq(r["path"]), unq(r["backend"])) for r in locals_of(load("main.tf"))["routes"]]


def backend(path: str, routes: list[tuple[str, str]] | None = None) -> str | None:
    """The backend the URL map sends `path` to (modules/lb: "/a/*" anything under /a/, a "*"
    elsewhere one segment, a last "**" any segments, otherwise the exact path)."""
    for pattern, name in lb_routes() if routes is None else routes:  # first match wins
        regex = re.escape(pattern).replace(r"\*\*", ".*").replace(r"\*", "[^/]+")
        if re.fullmatch(regex, path) or (pattern.endswith("/*") and path.startswith(
                pattern[:-1])):  # fmt: skip
            return name
    return None


def test_the_load_balancer_routes_every_path_to_its_target() -> None:
    routes = lb_routes()
    for prefix, target in ROUTES:
        assert backend(prefix, routes) == target, prefix
        if not prefix.endswith(".json"):  # a document has no paths under it
            assert backend(prefix + "/some-id", routes) == target, prefix
    # Every path the relay serves: its WebSockets and pages.
    aio = web.Application()
    relay_app.add_routes(aio, relay_app.vnc_viewer)
    paths = [re.sub(r"\{\w+(:[^}]*)?\}", "ws-1", str(r.canonical))
             for r in aio.router.resources() if not isinstance(r, web.StaticResource)]  # fmt: skip
    assert len(paths) >= 5, paths  # two shells, the terminal, the desktop, live logs
    for path in (*paths, "/novnc/core/rfb.js"):
        # Openctrol's tunnels and viewers meet in the one-instance desktop relay.
        wanted = "desktop_relay" if path.startswith("/openctrol/") else "relay"
        assert backend(path, routes) == wanted, path


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


# -- SentinelStacks (issue #18) ---------------------------------------------------------------


def module_args(name: str) -> dict[str, Any]:
    """The arguments of `module "<name>"` in the root."""
    for entry in load("main.tf").get("module", []):
        for label, body in entry.items():
            if unq(label) == name:
                return dict(body)
    raise AssertionError(f"no module {name}")


def dynamic_blocks(body: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [inner[f'"{kind}"'] for inner in body.get("dynamic", []) if f'"{kind}"' in inner]


def test_routes_agree_with_the_targets_routes_and_the_relay_gets_the_agents_websockets() -> None:
    routes = lb_routes()
    functions = {unq(t) for t in locals_of(load("modules/functions/main.tf"))["functions"]}
    # Every function route is a prefix of targets.ROUTES (or what is under it), same target.
    for pattern, name in routes:
        if name in functions:
            assert (pattern.removesuffix("/*"), name) in ROUTES, pattern
        else:
            assert name in ("relay", "desktop_relay"), pattern
    # Every path form the lb module knows: exact, "/a/*", "*" segments, a last "**".
    for pattern, _ in routes:
        assert re.fullmatch(r"(/[\w.-]+|/\*)+(/\*\*)?", pattern), pattern
    # A session's live calls go to the relay, its other paths to the OnMemOS function.
    for tail in ("exec/stream", "exec/ws", "processes", "processes/12/output", "files",
                 "files/content", "ports/8080/", "ports/8080/a/b.js"):  # fmt: skip
        assert backend(f"/v1/sessions/ws-1/{tail}", routes) == "relay", tail
    for tail in ("", "/execute", "/extend", "/preview-urls", "/filesystem"):
        assert backend(f"/v1/sessions/ws-1{tail}", routes) == "onmemos", tail
    assert backend("/preview/abc.def/x/y", routes) == "relay"
    assert backend("/metrics", routes) == "relay"  # the origin's scrape (tether.origin.apps)
    sentinel = [prefix for prefix, target in ROUTES if target == "sentinelstacks"]
    assert {"/v1/agents", "/api/v1/packages", "/openapi/sentinelstacks.json"} <= set(sentinel)
    for prefix in sentinel:
        assert backend(prefix, routes) == "sentinelstacks", prefix
        if not prefix.endswith(".json"):
            assert backend(f"{prefix}/a-1/b", routes) == "sentinelstacks", prefix
    # The relay's two WebSockets (tether.relay.agentchat), before the REST tree they sit in.
    from tether.relay import agentchat

    for path in (agentchat.CHAT, agentchat.EVENTS):
        assert backend(re.sub(r"\{\w+\}", "agent-1", path), routes) == "relay", path
    assert backend("/v1/agents/agent-1/conversations/c-1/messages", routes) == "sentinelstacks"
    assert backend("/v1/agents/agent-1/chat/more", routes) == "sentinelstacks"
    # Registry clients' package paths inside StreamSpace's tree, and StreamSpace keeps the rest.
    assert backend("/api/v1/packages/search", routes) == "sentinelstacks"
    assert backend("/api/v1/sessions", routes) == "streamspace"
    assert backend("/api/v1/packagesx", routes) == "streamspace"


def test_the_sentinelstacks_function_gets_the_registry_and_the_model() -> None:
    doc = load("modules/functions/main.tf")
    local = locals_of(doc)
    entry = local["functions"]["sentinelstacks"]
    assert unq(entry["identity"]) == "api" and entry["lb"] is True and entry["jwt"] is True
    assert entry["topic"] is None and entry["schedule"] is None
    assert entry["timeout"] >= 300, "a chat turn waits for the model and its tools"
    extra = unq(local["extra_env"]["sentinelstacks"])
    assert "TETHER_REGISTRY_URL = var.registry_url" in extra and "var.model_env" in extra
    # The other targets' env is unchanged, but for OnMemOS's recordings.
    assert set(local["extra_env"]) == {"sentinelstacks", "onmemos"}
    function = block(doc, "resource", "google_cloudfunctions2_function", "this")
    (service,) = function["service_config"]
    assert service["environment_variables"] == (
        "${merge(local.env, lookup(local.extra_env, each.key, {}))}"
    )
    secrets = {unq(d["content"][0]["key"]): d for d in
               dynamic_blocks(service, "secret_environment_variables")}  # fmt: skip
    assert set(secrets) == {"TETHER_JWT_SECRET", "TETHER_MODEL_API_KEY"}
    key = secrets["TETHER_MODEL_API_KEY"]
    assert key["for_each"] == (
        "${contains(local.model_functions, each.key) && var.model_api_key_secret_id != null"
        " ? [var.model_api_key_secret_id] : []}"
    )
    assert [unq(f) for f in local["model_functions"]] == ["sentinelstacks"]
    assert key["content"][0]["secret"] == "${secret_environment_variables.value}"
    # The root's wiring: the registry bucket, the model settings, the key's secret.
    root = locals_of(load("main.tf"))
    assert unq(root["registry_url"]) == "gs://${module.storage.registry_bucket}/images"
    args = module_args("functions")
    assert args["registry_url"] == "${local.registry_url}"
    assert args["model_env"] == "${local.model_env}"
    assert args["model_api_key_secret_id"] == "${module.secrets.model_api_key_secret_id}"
    # Every setting Terraform gives is one tether.settings reads.
    settings = (ROOT / "shared/tether/settings.py").read_text()
    for name in re.findall(r"\b(TETHER_\w+) =", root["model_env"] + extra):
        assert f'"{name}"' in settings, name


def test_the_relay_gets_the_model_settings_and_key_for_the_chat_websocket() -> None:
    doc = load("modules/relay/main.tf")
    assert "var.model_env" in locals_of(doc)["env"]
    svc = block(doc, "resource", "google_cloud_run_v2_service", "relay")
    (container,) = svc["template"][0]["containers"]
    envs = dynamic_blocks(container, "env")
    assert any(e["for_each"] == "${local.env}" for e in envs)
    (key,) = [e for e in envs if unq(e["content"][0].get("name")) == "TETHER_MODEL_API_KEY"]
    assert key["for_each"] == (
        "${var.model_api_key_secret_id == null ? [] : [var.model_api_key_secret_id]}"
    )
    (ref,) = key["content"][0]["value_source"][0]["secret_key_ref"]
    assert ref["secret"] == "${env.value}" and unq(ref["version"]) == "latest"
    args = module_args("relay")
    assert args["model_env"] == "${local.model_env}"
    assert args["model_api_key_secret_id"] == "${module.secrets.model_api_key_secret_id}"


def test_the_model_key_secret_is_declared_and_readable_by_the_api_and_the_relay() -> None:
    doc = load("modules/secrets/main.tf")
    secret = block(doc, "resource", "google_secret_manager_secret", "model_api_key")
    assert secret["count"] == "${var.model_api_key_secret_id == null ? 0 : 1}"
    assert secret["secret_id"] == "${var.model_api_key_secret_id}"
    assert "secret_data" not in str(doc), "the value is added outside Terraform, never in state"
    grant = block(doc, "resource", "google_secret_manager_secret_iam_member",
                  "model_api_key_accessor")  # fmt: skip
    assert unq(grant["role"]) == "roles/secretmanager.secretAccessor"
    assert "var.accessors" in grant["for_each"] and grant["member"] == "${each.value}"
    assert grant["secret_id"] == "${google_secret_manager_secret.model_api_key[0].secret_id}"
    args = module_args("secrets")
    assert args["model_api_key_secret_id"] == "${var.model_api_key_secret_id}"
    assert args["accessors"] == {
        "api": '${module.iam.members["api"]}', "relay": '${module.iam.members["relay"]}',
    }  # fmt: skip
    assert variable_default(load("variables.tf"), "model_api_key_secret_id") is None


def test_the_registry_bucket_is_private_and_no_one_may_delete_or_overwrite_a_blob() -> None:
    doc = load("modules/storage/main.tf")
    buckets = locals_of(doc)["buckets"]
    assert "registry" in buckets and buckets["registry"]["versioning"] is False
    bucket = block(doc, "resource", "google_storage_bucket", "this")
    assert bucket["for_each"] == "${local.buckets}"
    assert bucket["uniform_bucket_level_access"] is True
    assert unq(bucket["public_access_prevention"]) == "enforced"
    # No public member and no role on the bucket but the root's grants, and the registry's
    # grants create and read objects only (objectUser, objectAdmin, admin all delete).
    text = "\n".join(p.read_text() for p in TF.rglob("*.tf"))
    grants = re.findall(r'bucket = "registry", role = "([^"]+)", key = "(\w+)"', text)
    assert sorted(grants) == [("roles/storage.objectCreator", "api"),
                              ("roles/storage.objectViewer", "api")]  # fmt: skip
    assert text.count('bucket = "registry"') == len(grants)
    storage_text = (TF / "modules/storage/main.tf").read_text()
    assert "allUsers" not in storage_text and "allAuthenticatedUsers" not in storage_text
    assert "google_storage_bucket_iam_binding" not in text
    assert "google_storage_bucket_iam_policy" not in text
    (iam,) = [r for r in doc["resource"] if '"google_storage_bucket_iam_member"' in r]
    assert iam['"google_storage_bucket_iam_member"']['"this"']["for_each"] == "${local.iam}"
    # Nor on the project: the api account holds no storage role there.
    project_roles = locals_of(load("modules/iam/main.tf"))["project_roles"]
    assert "roles/storage" not in re.sub(r'sa = "build", role = "roles/storage\.\w+"', "",
                                         project_roles)  # fmt: skip
    # The module refuses any other role on the registry (a plan, offline).
    out = storage_variables_plan(
        '[{bucket = "registry", role = "roles/storage.objectUser", key = "api", member = "x"}]'
    )
    assert out.returncode != 0 and "registry bucket takes" in out.stderr, out.stderr
    out = storage_variables_plan(
        '[{bucket = "registry", role = "roles/storage.objectCreator", key = "api", member = "x"}]'
    )
    assert out.returncode == 0, out.stderr
    assert unq(module_args("storage")["registry_bucket_name"]) == "${var.registry_bucket_name}"


def test_recordings_go_to_a_private_bucket_only_the_relay_writes_and_nothing_deletes() -> None:
    doc = load("modules/storage/main.tf")
    bucket = locals_of(doc)["buckets"]["recordings"]
    assert bucket["versioning"] is False
    assert bucket["delete_after_days"] == "${var.recordings_retention_days}"
    # Parts outlive the records (TETHER_RECORDING_RETENTION) by a day.
    args = module_args("storage")
    assert args["recordings_retention_days"] == "${var.recording_retention_days + 1}"
    assert args["recordings_bucket_name"] == "${var.recordings_bucket_name}"
    root = locals_of(load("main.tf"))
    assert {k: unq(v) for k, v in root["recordings_env"].items()} == {
        "TETHER_RECORDINGS_URL": "gs://${module.storage.recordings_bucket}/casts",
        "TETHER_RECORDING_RETENTION": "${var.recording_retention_days}d",
    }
    # The relay (which records) creates and reads parts; the onmemos function (the api
    # account: list and download) reads them; no one else, and no role that deletes one.
    text = "\n".join(p.read_text() for p in TF.rglob("*.tf"))
    grants = re.findall(r'bucket = "recordings", role = "([^"]+)", key = "(\w+)"', text)
    assert sorted(grants) == [("roles/storage.objectCreator", "relay"),
                              ("roles/storage.objectViewer", "api"),
                              ("roles/storage.objectViewer", "relay")]  # fmt: skip
    assert text.count('bucket = "recordings"') == len(grants)
    assert module_args("relay")["recordings_env"] == "${local.recordings_env}"
    assert "var.recordings_env" in locals_of(load("modules/relay/main.tf"))["env"]
    assert module_args("functions")["recordings_env"] == "${local.recordings_env}"
    functions = locals_of(load("modules/functions/main.tf"))
    assert functions["extra_env"]["onmemos"] == "${var.recordings_env}"
    assert unq(functions["functions"]["onmemos"]["identity"]) == "api"
    # Every setting given is one tether.settings reads; the URL is one bootstrap takes.
    settings = (ROOT / "shared/tether/settings.py").read_text()
    assert all(f'"{name}"' in settings for name in root["recordings_env"])
    from tether import bootstrap
    from tether.registry.gcs import GcsArtifacts
    from tether.settings import Settings

    made = bootstrap.make_artifacts(Settings(), "gs://p-tether-recordings/casts", "recordings")
    assert isinstance(made, GcsArtifacts)
    assert (made.bucket_name, made.prefix) == ("p-tether-recordings", "casts")
    # The module refuses any other role on it (a plan, offline).
    out = storage_variables_plan(
        '[{bucket = "recordings", role = "roles/storage.objectAdmin", key = "relay", member = "x"}]'
    )
    assert out.returncode != 0 and "recordings bucket takes" in out.stderr, out.stderr


def storage_variables_plan(iam: str) -> subprocess.CompletedProcess[str]:
    import tempfile

    from tests.infra.test_cluster_agent import terraform

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "variables.tf").write_text((TF / "modules/storage/variables.tf").read_text())
        init = terraform(Path(tmp), "init", "-input=false", "-backend=false")
        assert init.returncode == 0, init.stderr
        return terraform(Path(tmp), "plan", "-input=false", "-var=project_id=p",
                         "-var=location=europe-west1", f"-var=iam={iam}")  # fmt: skip


def test_vertex_ai_is_enabled_and_the_api_and_relay_may_call_it() -> None:
    root = locals_of(load("main.tf"))
    assert "aiplatform.googleapis.com" in [unq(a) for a in root["apis"]]
    assert module_args("iam")["vertex_ai_users"] == (
        '${var.model_provider == "vertex" ? ["api", "relay"] : []}'
    )
    project_roles = locals_of(load("modules/iam/main.tf"))["project_roles"]
    assert 'for sa in var.vertex_ai_users : {sa = sa, role = "roles/aiplatform.user"}' in (
        project_roles
    )
    assert unq(variable_default(load("variables.tf"), "model_provider")) == "vertex"


def test_ttl_policies_cover_every_retained_kind_of_the_sweeper() -> None:
    from tether.core import aiagents

    ai_kinds = {aiagents.AGENTS, aiagents.CONVERSATIONS, aiagents.MESSAGES, aiagents.EVENTS}
    assert ai_kinds <= set(RETAINED)
    doc = load("modules/firestore/main.tf")
    retained = {k: unq(v) for k, v in locals_of(doc)["retained"].items()}
    assert retained == RETAINED
    ttl = block(doc, "resource", "google_firestore_field", "ttl")
    assert ttl["for_each"] == (
        "${merge({for c in local.ttl_collections : c => local.ttl_field}, local.retained)}"
    )
    assert ttl["collection"] == "${each.key}" and ttl["field"] == "${each.value}"
    assert ttl["ttl_config"], "an empty ttl_config block turns the policy on"


# The model's settings as Terraform computes them, planned offline: the root's variables and
# `local.model_env`, the functions module's extra env and key wiring, the `model` output's
# check, verbatim, with stand-ins for the storage and secrets modules.


def model_scratch(root: Path) -> Path:
    from tests.infra.test_cluster_agent import hcl_block
    from tests.infra.test_executor_clusters import expression

    main = (TF / "main.tf").read_text()
    variables = (TF / "variables.tf").read_text()
    functions_main = (TF / "modules/functions/main.tf").read_text()
    functions_vars = (TF / "modules/functions/variables.tf").read_text()
    names = ["project_id", "region", "model_provider", "model_base_url", "model_name",
             "vertex_location", "model_api_key_secret_id", "cors_origins",
             "registry_bucket_name", "registry_max_bytes"]  # fmt: skip
    (root / "storage").mkdir()
    (root / "storage" / "main.tf").write_text(
        'variable "name" {\n  type = string\n}\noutput "registry_bucket" {\n  value = var.name\n}\n'
    )
    (root / "secrets").mkdir()
    (root / "secrets" / "main.tf").write_text(
        'variable "id" {\n  type = string\n}\noutput "model_api_key_secret_id" {\n'
        "  value = var.id\n}\n"
    )
    model_key = 'dynamic "secret_environment_variables" {\n      for_each = contains'
    key_each = expression(hcl_block(functions_main, model_key), "for_each")
    (root / "functions").mkdir()
    (root / "functions" / "main.tf").write_text("\n".join([
        *(hcl_block(functions_vars, f'variable "{v}" {{') for v in
          ("model_api_key_secret_id", "model_env", "registry_url", "registry_max_bytes",
           "recordings_env")),
        "locals {",
        f"  extra_env = {expression(functions_main, 'extra_env')}",
        f"  model_functions = {expression(functions_main, 'model_functions')}",
        "}",
        'output "extra_env" {\n  value = local.extra_env\n}',
        'output "key_secrets" {\n  value = { for name in ["sentinelstacks", "onmemos"] : name => '
        + key_each.replace("each.key", "name") + " }\n}",
    ]))  # fmt: skip
    functions_args = hcl_block(main, 'module "functions" {')
    (root / "main.tf").write_text("\n".join([
        *(hcl_block(variables, f'variable "{v}" {{') for v in names),
        "locals {",
        f"  model_env = {expression(main, 'model_env')}",
        f"  registry_url = {expression(main, 'registry_url')}",
        "}",
        'module "storage" {\n  source = "./storage"\n'
        '  name = coalesce(var.registry_bucket_name, "${var.project_id}-tether-registry")\n}',
        'module "secrets" {\n  source = "./secrets"\n  id = var.model_api_key_secret_id\n}',
        'module "functions" {\n  source = "./functions"\n'
        + "".join(f"  {a} = {expression(functions_args, a)}\n" for a in
                  ("registry_url", "registry_max_bytes", "model_env", "model_api_key_secret_id"))
        + "}",
        hcl_block((TF / "outputs.tf").read_text(), 'output "model" {'),
        'output "functions" {\n  value = module.functions\n}',
    ]))  # fmt: skip
    return root


@pytest.fixture(scope="module")
def model_plan(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import json

    from tests.infra.test_cluster_agent import terraform

    root = model_scratch(tmp_path_factory.mktemp("model"))
    init = terraform(root, "init", "-input=false", "-backend=false")
    assert init.returncode == 0, init.stdout + init.stderr

    def plan(*variables: str) -> dict[str, Any] | str:
        planned = terraform(root, "plan", "-input=false", "-out=plan",
                            "-var=project_id=my-project", *variables)  # fmt: skip
        if planned.returncode:
            return planned.stderr
        shown = terraform(root, "show", "-json", "plan")
        outputs = json.loads(shown.stdout)["planned_values"]["outputs"]
        return {name: value["value"] for name, value in outputs.items()}

    return plan


def function_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    from tether.settings import Settings

    for name in [n for n in __import__("os").environ if n.startswith("TETHER_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings.from_env()


def test_the_function_and_relay_settings_are_what_the_code_reads(
    model_plan: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tether import bootstrap
    from tether.registry.gcs import GcsArtifacts

    # The defaults: Gemini on Vertex AI in the region, the registry bucket, no key.
    out = model_plan()
    assert isinstance(out, dict), out
    env = out["model"]["env"]
    assert env == {"TETHER_MODEL_PROVIDER": "vertex", "TETHER_VERTEX_LOCATION": "europe-west1"}
    function_env = out["functions"]["extra_env"]["sentinelstacks"]
    assert function_env == {**env, "TETHER_REGISTRY_URL": "gs://my-project-tether-registry/images"}
    assert out["functions"]["key_secrets"] == {"sentinelstacks": [], "onmemos": []}
    settings = function_settings(function_env, monkeypatch)
    assert (settings.model_provider, settings.vertex_location) == ("vertex", "europe-west1")
    artifacts = bootstrap.make_artifacts(settings)
    assert isinstance(artifacts, GcsArtifacts)
    assert (artifacts.bucket_name, artifacts.prefix) == ("my-project-tether-registry", "images")

    # An OpenAI-compatible endpoint with its key in Secret Manager, CORS for a web UI.
    out = model_plan("-var=model_provider=openai", "-var=model_base_url=https://llm.example/v1",
                     "-var=model_name=gpt-4o-mini", "-var=model_api_key_secret_id=tether-key",
                     '-var=cors_origins=["https://ui.example.com/", "http://localhost:3000"]',
                     "-var=registry_max_bytes=16777216",
                     "-var=registry_bucket_name=reg")  # fmt: skip
    assert isinstance(out, dict), out
    assert out["model"]["api_key_secret"] == "tether-key"
    assert out["functions"]["key_secrets"] == {"sentinelstacks": ["tether-key"],
                                               "onmemos": []}  # fmt: skip
    function_env = out["functions"]["extra_env"]["sentinelstacks"]
    assert function_env["TETHER_REGISTRY_URL"] == "gs://reg/images"
    settings = function_settings(function_env, monkeypatch)
    assert settings.model_provider == "openai" and settings.model_name == "gpt-4o-mini"
    assert settings.model_base_url == "https://llm.example/v1"
    assert settings.cors_origins == ("https://ui.example.com", "http://localhost:3000")
    assert settings.registry_max_bytes == 16 << 20


def test_terraform_refuses_model_settings_the_code_would_refuse(model_plan: Any) -> None:
    refused = model_plan("-var=model_provider=openai")
    assert isinstance(refused, str) and "needs model_base_url" in refused
    refused = model_plan("-var=model_provider=gemini")
    assert isinstance(refused, str) and "offline, openai or vertex" in refused
    refused = model_plan('-var=cors_origins=["https://ui.example.com/app"]')
    assert isinstance(refused, str) and "CORS origin" in refused
    refused = model_plan("-var=registry_max_bytes=67108864")
    assert isinstance(refused, str) and "registry_max_bytes" in refused
    assert isinstance(model_plan('-var=cors_origins=["*"]', "-var=model_provider=offline"), dict)


# -- the relay's path to GKE workspaces (issue #20) -------------------------------------------


def test_the_relay_reaches_gke_runtimes_by_name_through_the_vpc_and_nothing_else_does() -> None:
    """The GKE provisioner reports http://<headless service>.<ns>.svc.<domain>:<RUNTIME_PORT>;
    the relay (Direct VPC egress into the tether VPC) must resolve that name and reach that
    pod address there, and only it (and the agent, in the cluster) may."""
    from tether.provision.gke_manifests import RELAY_CIDR, RUNTIME_PORT, service_manifest

    from tests.provision.test_gke import spec

    assert service_manifest(spec())["spec"]["clusterIP"] == "None", "resolves to the pod"
    gke = load("modules/gke/main.tf")
    cluster = block(gke, "resource", "google_container_cluster", "this")
    assert unq(cluster["networking_mode"]) == "VPC_NATIVE", "pod addresses routable in the VPC"
    assert unq(cluster["datapath_provider"]) == "ADVANCED_DATAPATH", "NetworkPolicy enforced"
    (dns,) = cluster["dns_config"]
    assert (unq(dns["cluster_dns"]), unq(dns["cluster_dns_scope"])) == ("CLOUD_DNS", "VPC_SCOPE")
    assert dns["cluster_dns_domain"] == "${var.dns_domain}"
    assert cluster["network"] == "${var.network}"
    rule = block(gke, "resource", "google_compute_firewall", "relay_to_runtimes")
    assert (unq(rule["direction"]), rule["source_ranges"]) == ("INGRESS", ["${var.relay_cidr}"])
    assert rule["destination_ranges"] == ["${var.pods_cidr}"], "pods only, not the nodes"
    (allow,) = rule["allow"]
    assert unq(allow["protocol"]) == "tcp" and allow["ports"] == ["${tostring(var.runtime_port)}"]
    gke_vars = load("modules/gke/variables.tf")
    assert variable_default(gke_vars, "runtime_port") == RUNTIME_PORT
    # The root: the cluster sits in the relay's network, admits the relay's subnet, and the
    # agent's domain setting is the cluster's.
    args = module_args("gke")
    assert args["network"] == "${module.network.network}"
    assert args["relay_cidr"] == "${var.vpc_cidr}" == module_args("network")["cidr"]
    assert args["dns_domain"] == "${var.gke_cluster.dns_domain}"
    outputs = (TF / "outputs.tf").read_text()
    assert "TETHER_GKE_CLUSTER_DOMAIN = var.gke_cluster.dns_domain" in outputs
    assert "TETHER_GKE_CLUSTER_DOMAIN" in settings_env_names()
    root_type = (TF / "variables.tf").read_text().split('variable "gke_cluster"')[1]
    assert 'dns_domain          = optional(string, "tether.internal")' in root_type
    assert unq(variable_default(gke_vars, "dns_domain")) == "tether.internal"
    # The relay's egress goes through that network, and the namespace's policy names its range.
    relay = block(load("modules/relay/main.tf"), "resource", "google_cloud_run_v2_service", "relay")
    (template,) = relay["template"]
    assert unq(template["vpc_access"][0]["egress"]) == "ALL_TRAFFIC", "DNS and all through VPC"
    policy = (ROOT / "infra/k8s/30-network-policy.yaml").read_text()
    assert f"cidr: {RELAY_CIDR}" in policy
    assert "RELAY_CIDR" in (ROOT / "infra/k8s/README.md").read_text(), "how to fill it in"


def test_the_runtime_key_is_a_secret_of_its_own_that_only_the_relay_reads() -> None:
    """The relay and the GKE agent derive runtime tokens from TETHER_RUNTIME_KEY; it is not the
    JWT secret (an agent holding that could sign any user's token)."""
    secrets = load("modules/secrets/main.tf")
    key = block(secrets, "resource", "google_secret_manager_secret", "runtime_key")
    assert key["secret_id"] == "${var.runtime_key_secret_id}"
    args = module_args("secrets")
    assert args["runtime_key_accessors"] == {"relay": '${module.iam.members["relay"]}'}
    relay_main = (TF / "modules/relay/main.tf").read_text()
    assert 'name = "TETHER_RUNTIME_KEY"' in relay_main
    assert module_args("relay")["runtime_key_secret_id"] == (
        "${module.secrets.runtime_key_secret_id}"
    )
    assert "TETHER_RUNTIME_KEY" in settings_env_names()
    cloudbuild = (ROOT / "cloudbuild.yaml").read_text()
    assert "_RUNTIME_KEY_SECRET_ID" in cloudbuild, "its first value is added as the JWT's is"


def settings_env_names() -> set[str]:
    """The environment variables `Settings.from_env` reads."""
    from tether.settings import Settings

    return {c for c in Settings.from_env.__code__.co_consts if isinstance(c, str)}
