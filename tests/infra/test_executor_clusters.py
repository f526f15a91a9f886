"""Kubently's executor clusters in the cloud: a cluster served by third-party executors (no
Tether agent) is listed in `kubently_executor_clusters`, and Terraform makes its subscription
agent-commands-<id> (filtered on its agent_id, as tether.bus.pubsub's `pull_commands` reads it)
and lets the two processes that pull it for the executors read it, and only it: the kubently
function (GET /agent/commands, as the api account) and the relay (GET /executor/stream). They
may not make subscriptions themselves (tether.bus.pubsub `_made_elsewhere`). Offline: the
root's variables, locals, the pubsub module's arguments and locals and the output's check are
copied verbatim into a configuration with no provider (stand-ins for the service accounts and
the Cloud Run agents), which Terraform plans."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tether.bus import COMMANDS_TOPIC, commands_subscription

from tests.infra.test_cluster_agent import hcl_block, terraform
from tests.infra.test_terraform import block, load, locals_of, unq

TF = Path(__file__).resolve().parents[2] / "terraform"
PROJECT = "my-project"
EXECUTORS = ["edge", "lab-2"]
CLUSTERS = ["prod-eu"]  # clusters with a Tether cluster agent


def member(workload: str) -> str:
    """What the stand-in iam module gives (the real one: serviceAccount:<tether-<key> email>)."""
    return f"serviceAccount:tether-{workload}@{PROJECT}.iam.gserviceaccount.com"


PUBSUB_AGENT = "serviceAccount:service-123@gcp-sa-pubsub.iam.gserviceaccount.com"


def expression(text: str, name: str) -> str:
    """The value of the argument `name` (at the start of a line) in `text`, up to the end of the
    line at which its brackets close."""
    found = re.search(rf"^\s*{name}\s*=\s*", text, re.M)
    assert found, name
    depth = 0
    for i in range(found.end(), len(text)):
        depth += {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(text[i], 0)
        if depth == 0 and text[i] == "\n":
            return text[found.end() : i]
    raise AssertionError(name)


def scratch_terraform(root: Path) -> Path:
    main = (TF / "main.tf").read_text()
    variables = (TF / "variables.tf").read_text()
    outputs = (TF / "outputs.tf").read_text()
    found = re.search(r"^  cluster_agent_namespace .*?^  executor_subscribers = \{.*?^  \}$",
                      main, re.S | re.M)  # fmt: skip
    assert found, "the cluster agents' and executors' locals in terraform/main.tf"
    pubsub_args = hcl_block(main, 'module "pubsub" {')

    # The service accounts: the iam module's workloads, each member known at plan, or not
    # (as in the cloud, where an email is known once the account exists).
    iam_locals = (TF / "modules/iam/main.tf").read_text()
    (root / "iam").mkdir()
    (root / "iam" / "main.tf").write_text(f"""
variable "agents" {{
  type = any
}}
variable "unknown" {{
  type = bool
}}
locals {{
  workloads = {expression(iam_locals, "workloads")}
}}
resource "terraform_data" "account" {{
  for_each = local.workloads
}}
output "members" {{
  value = {{ for k, _ in local.workloads : k => "serviceAccount:${{
    var.unknown ? terraform_data.account[k].id : "tether-${{k}}@{PROJECT}.iam.gserviceaccount.com"
  }}" }}
}}
""")  # fmt: skip
    (root / "agents").mkdir()
    (root / "agents" / "main.tf").write_text(
        'output "push_endpoints" {\n  value = {}\n}\noutput "push_audiences" {\n  value = {}\n}\n'
    )

    # The pubsub module: its variables and locals verbatim; the subscription's name and filter
    # evaluated per agent as the resource does; its IAM grants' for_each planned (its keys must
    # be known at plan, whatever the members).
    pubsub_main = (TF / "modules/pubsub/main.tf").read_text()
    header = 'resource "google_pubsub_subscription" "agent_commands" {'
    subscription = hcl_block(pubsub_main, header)
    name = expression(subscription, "name").replace("each.key", "id")
    filter_ = expression(subscription, "filter").replace("each.key", "id")
    (root / "pubsub").mkdir()
    (root / "pubsub" / "main.tf").write_text("\n".join([
        (TF / "modules/pubsub/variables.tf").read_text(),
        hcl_block(pubsub_main, "locals {"),
        'output "subscription_iam" {\n  value = local.subscription_iam\n}',
        "output \"agent_subscriptions\" {\n  value = { for id, _ in var.agents : id => "
        f"{name} }}\n}}",
        "output \"subscriptions\" {\n  value = { for id, agent in var.agents : id => "
        f"{{ name = {name}, filter = {filter_}, pull = !agent.push }} }}\n}}",
        'resource "terraform_data" "subscriber" {\n  for_each = local.subscription_iam\n}',
    ]))  # fmt: skip

    (root / "main.tf").write_text("\n".join([
        hcl_block(variables, 'variable "agents" {'),
        hcl_block(variables, 'variable "kubently_clusters" {'),
        hcl_block(variables, 'variable "kubently_executor_clusters" {'),
        'variable "unknown_accounts" {\n  type    = bool\n  default = false\n}',
        "locals {", found.group(0), "}",
        'module "iam" {\n  source  = "./iam"\n  agents  = local.agents\n'
        "  unknown = var.unknown_accounts\n}",
        'module "agents" {\n  source = "./agents"\n}',
        'module "pubsub" {\n  source = "./pubsub"\n  project_id = "my-project"\n'
        '  project_number = "123"\n  push_service_account_email = "push@example.com"\n'
        f"  agents = {expression(pubsub_args, 'agents')}\n}}",
        hcl_block(outputs, 'output "kubently_executor_clusters" {'),
        'output "agents" {\n  value = local.agents\n}',
        'output "subscriptions" {\n  value = module.pubsub.subscriptions\n}',
        'output "subscription_iam" {\n  value = module.pubsub.subscription_iam\n}',
    ]))  # fmt: skip
    return root


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = scratch_terraform(tmp_path_factory.mktemp("executors"))
    init = terraform(root, "init", "-input=false", "-backend=false")
    assert init.returncode == 0, init.stdout + init.stderr
    return root


Plan = Callable[..., dict[str, Any]]


@pytest.fixture
def plan(scratch: Path) -> Plan:
    def run(*variables: str) -> dict[str, Any]:
        planned = terraform(scratch, "plan", "-input=false", "-out=plan",
                            *(f"-var={v}" for v in variables))  # fmt: skip
        assert planned.returncode == 0, planned.stdout + planned.stderr
        shown = terraform(scratch, "show", "-json", "plan")
        assert shown.returncode == 0, shown.stderr
        result: dict[str, Any] = json.loads(shown.stdout)
        return result

    return run


def clusters(executors: list[str] = EXECUTORS, agents: list[str] = CLUSTERS) -> tuple[str, str]:
    return (f"kubently_executor_clusters={json.dumps(executors)}",
            f"kubently_clusters={json.dumps(agents)}")  # fmt: skip


def outputs_of(planned: dict[str, Any]) -> dict[str, Any]:
    return {k: v.get("value") for k, v in planned["planned_values"]["outputs"].items()}


def test_each_executor_cluster_gets_its_filtered_pull_subscription_and_no_identity(
    plan: Plan,
) -> None:
    out = outputs_of(plan(*clusters()))
    for cluster in EXECUTORS:
        # The subscription pull_commands reads, with the filter the adapter would write.
        assert out["subscriptions"][cluster] == {
            "name": commands_subscription(cluster),
            "filter": f'attributes.agent_id = "{cluster}"',
            "pull": True,
        }
        assert cluster not in out["agents"], "no service account, no Deployment"
    assert out["kubently_executor_clusters"] == {c: commands_subscription(c) for c in EXECUTORS}
    # The agents stay as they were, cluster agents included.
    assert {"cloud-run", "gke", *CLUSTERS} == set(out["agents"])
    assert set(out["subscriptions"]) == {"cloud-run", "gke", *CLUSTERS, *EXECUTORS}


def test_the_kubently_function_and_the_relay_read_each_executor_subscription_only(
    plan: Plan,
) -> None:
    grants = outputs_of(plan(*clusters()))["subscription_iam"]
    for cluster in EXECUTORS:
        assert {k: v for k, v in grants.items() if v["agent"] == cluster} == {
            f"{cluster}/subscriber/api": {"agent": cluster, "member": member("api")},
            f"{cluster}/subscriber/relay": {"agent": cluster, "member": member("relay")},
            # Dead-lettering, as on every subscription.
            f"{cluster}/subscriber/pubsub-agent": {"agent": cluster, "member": PUBSUB_AGENT},
        }
    # Neither reads any other subscription; each pulling agent reads its own only.
    for key, grant in grants.items():
        if grant["agent"] not in EXECUTORS:
            assert grant["member"] not in (member("api"), member("relay")), key
    assert grants["prod-eu/subscriber/agent"]["member"] == member("agent-prod-eu")
    assert grants["gke/subscriber/agent"]["member"] == member("agent-gke")
    assert "cloud-run/subscriber/agent" not in grants, "a push subscription is pushed"

    # Each grant is roles/pubsub.subscriber on that subscription (no project-wide role: see
    # test_cluster_agent), and the accounts are the kubently function's and the relay's.
    doc = load("modules/pubsub/main.tf")
    binding = block(doc, "resource", "google_pubsub_subscription_iam_member", "agent_commands")
    assert binding["for_each"] == "${local.subscription_iam}"
    assert unq(binding["role"]) == "roles/pubsub.subscriber"
    assert binding["subscription"] == (
        "${google_pubsub_subscription.agent_commands[each.value.agent].name}"
    )
    root = locals_of(load("main.tf"))
    assert root["executor_subscribers"] == {
        "api": '${module.iam.members["api"]}', "relay": '${module.iam.members["relay"]}',
    }  # fmt: skip
    functions = locals_of(load("modules/functions/main.tf"))["functions"]
    assert unq(functions["kubently"]["identity"]) == "api"
    modules = {unq(k): v for entry in load("main.tf")["module"] for k, v in entry.items()}
    assert modules["relay"]["service_account_email"] == '${module.iam.emails["relay"]}'
    # The kubently function publishes the commands it queues.
    assert modules["pubsub"]["command_publishers"]["api"] == '${module.iam.members["api"]}'
    assert unq(locals_of(doc)["commands_topic"]) == COMMANDS_TOPIC


def test_the_grants_plan_while_the_accounts_emails_are_unknown(plan: Plan) -> None:
    planned = plan(*clusters(), "unknown_accounts=true")
    keys = {c["index"] for c in planned["resource_changes"]
            if c["address"].startswith("module.pubsub.terraform_data.subscriber")}  # fmt: skip
    assert {"edge/subscriber/api", "edge/subscriber/relay", "lab-2/subscriber/relay"} <= keys


def test_without_executor_clusters_the_grants_keep_their_addresses(plan: Plan) -> None:
    """No grant of an existing deployment is re-made by the change."""
    grants = outputs_of(plan())["subscription_iam"]
    assert grants == {
        "gke/subscriber/agent": {"agent": "gke", "member": member("agent-gke")},
        "gke/subscriber/pubsub-agent": {"agent": "gke", "member": PUBSUB_AGENT},
        "cloud-run/subscriber/pubsub-agent": {"agent": "cloud-run", "member": PUBSUB_AGENT},
    }


@pytest.mark.parametrize(
    ("executors", "agents"),
    [(["gke"], []), (["prod-eu"], ["prod-eu"]), (["edge", "cloud-run"], ["prod-eu"])],
)
def test_an_executor_cluster_id_that_is_an_agent_id_fails_the_plan(
    scratch: Path, executors: list[str], agents: list[str]
) -> None:
    planned = terraform(scratch, "plan", "-input=false",
                        *(f"-var={v}" for v in clusters(executors, agents)))  # fmt: skip
    assert planned.returncode != 0
    message = " ".join(planned.stderr.split())
    assert "A kubently_executor_clusters id must not also be a key of agents" in message, message


@pytest.mark.parametrize("executors", [["Edge_1"], ["an-executor-id-too-long"], ["9lives"]])
def test_terraform_refuses_an_executor_cluster_id_like_a_cluster_id(
    scratch: Path, executors: list[str]
) -> None:
    planned = terraform(scratch, "plan", "-input=false",
                        *(f"-var={v}" for v in clusters(executors, [])))  # fmt: skip
    assert planned.returncode != 0
    assert "executor cluster id is 1-16" in " ".join(planned.stderr.split()), planned.stderr
