"""What an operator is alerted on (terraform/modules/monitoring) agrees with what is deployed
and with what the code writes: the 5xx share of every function and relay, dead-lettered
commands, commands waiting in the agents' subscriptions, agents the sweeper marks offline.

Offline, as the other Terraform tests: the monitoring module's variables and locals (where
every filter, threshold and chart is built) and the root's `module "monitoring"` block are
copied verbatim into a configuration with no provider, next to stand-ins that compute the
names the functions, relay and pubsub modules give their services and subscriptions with
those modules' own expressions. Terraform plans it; the tests read the planned values."""

from __future__ import annotations

import importlib
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tether.bus import DEAD_LETTER_TOPIC, commands_subscription

from tests.infra.test_cluster_agent import hcl_block, terraform
from tests.infra.test_executor_clusters import expression, outputs_of, scratch_terraform
from tests.infra.test_terraform import block, load, locals_of, targets, unq, variable_default

ROOT = Path(__file__).resolve().parents[2]
TF = ROOT / "terraform"
MODULE = "modules/monitoring/main.tf"
CONCERNS = {"errors", "dead_letters", "command_age", "agents_offline"}
CLUSTERS = ["prod-eu"]  # Kubently clusters with a cluster agent
EXECUTORS = ["edge"]  # Kubently clusters served by third-party executors
CHANNEL = "projects/my-project/notificationChannels/1234567890"


def scratch_config(root: Path) -> Path:
    """The executor clusters' scratch (the root's agents, the pubsub module's wiring and
    subscription names), plus the functions' and relays' service names and the monitoring
    module."""
    scratch_terraform(root)
    main = (TF / "main.tf").read_text()
    variables = (TF / "variables.tf").read_text()

    # The pubsub module's dead-letter subscription, named as the resource names it.
    pubsub_main = (TF / "modules/pubsub/main.tf").read_text()
    dead = hcl_block(pubsub_main, 'resource "google_pubsub_subscription" "dead_letter" {')
    with (root / "pubsub" / "main.tf").open("a") as f:
        f.write(
            f'\noutput "dead_letter_subscription" {{\n  value = {expression(dead, "name")}\n}}\n'
        )

    # The functions module: one function per entry of its settings, named by its resource's
    # own name expression.
    functions_main = (TF / "modules/functions/main.tf").read_text()
    functions_vars = (TF / "modules/functions/variables.tf").read_text()
    function = hcl_block(functions_main, 'resource "google_cloudfunctions2_function" "this" {')
    name = expression(function, "name").replace("each.key", "name")
    (root / "functions").mkdir()
    (root / "functions" / "main.tf").write_text("\n".join([
        *(hcl_block(functions_vars, f'variable "{v}" {{') for v in
          ("sweeper_schedule", "max_instances", "overrides")),
        "locals {",
        f"  functions = {expression(functions_main, 'functions')}",
        f"  settings = {expression(functions_main, 'settings')}",
        "}",
        'output "function_names" {\n  value = { for name, _ in local.settings : name => '
        f"{name} }}\n}}",
    ]))  # fmt: skip

    # The relay module: its service is named by its `name` variable.
    relay_vars = (TF / "modules/relay/variables.tf").read_text()
    (root / "relay").mkdir()
    (root / "relay" / "main.tf").write_text(
        hcl_block(relay_vars, 'variable "name" {') + '\noutput "service_name" {\n'
        "  value = var.name\n}\n"
    )
    desktop = hcl_block(main, 'module "desktop_relay" {')

    # The monitoring module: its variables and locals, verbatim; the locals as outputs.
    monitoring_main = (TF / MODULE).read_text()
    (root / "modules" / "monitoring").mkdir(parents=True)
    (root / "modules" / "monitoring" / "main.tf").write_text("\n".join([
        (TF / "modules/monitoring/variables.tf").read_text(),
        hcl_block(monitoring_main, "locals {"),
        *(f'output "{o}" {{\n  value = local.{o}\n}}' for o in
          ("alerts", "log_metric", "dashboard", "service_names", "agent_offline_event")),
    ]))  # fmt: skip

    # The root's module block, verbatim but for the APIs it waits for.
    monitoring = hcl_block(main, 'module "monitoring" {')
    monitoring = re.sub(r"^\s*depends_on\s*=.*$", "", monitoring, flags=re.M)
    with (root / "main.tf").open("a") as f:
        f.write("\n".join([
            "",
            *(hcl_block(variables, f'variable "{v}" {{') for v in
              ("project_id", "labels", "notification_channels", "alert_thresholds")),
            'module "functions" {\n  source = "./functions"\n}',
            'module "relay" {\n  source = "./relay"\n}',
            'module "desktop_relay" {\n  source = "./relay"\n'
            f'  name = {expression(desktop, "name")}\n}}',
            monitoring,
            'output "monitoring" {\n  value = module.monitoring\n}',
            'output "function_names" {\n  value = module.functions.function_names\n}',
            'output "relay_services" {\n  value = [module.relay.service_name, '
            "module.desktop_relay.service_name]\n}",
            'output "agent_subscriptions" {\n  value = module.pubsub.agent_subscriptions\n}',
            'output "dead_letter_subscription" {\n'
            "  value = module.pubsub.dead_letter_subscription\n}",
            "",
        ]))  # fmt: skip
    return root


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = scratch_config(tmp_path_factory.mktemp("monitoring"))
    init = terraform(root, "init", "-input=false", "-backend=false")
    assert init.returncode == 0, init.stdout + init.stderr
    return root


Plan = Callable[..., dict[str, Any]]


def plan_in(scratch: Path, *variables: str) -> tuple[dict[str, Any] | None, str]:
    planned = terraform(scratch, "plan", "-input=false", "-out=plan", "-var=project_id=my-project",
                        *(f"-var={v}" for v in variables))  # fmt: skip
    if planned.returncode:
        return None, " ".join(planned.stderr.split())
    shown = terraform(scratch, "show", "-json", "plan")
    assert shown.returncode == 0, shown.stderr
    return outputs_of(json.loads(shown.stdout)), ""


@pytest.fixture(scope="module")
def planned(scratch: Path) -> dict[str, Any]:
    """The deployment with every kind of agent: the default agents, a Kubently cluster agent
    and a Kubently executor cluster."""
    out, error = plan_in(scratch, f"kubently_clusters={json.dumps(CLUSTERS)}",
                         f"kubently_executor_clusters={json.dumps(EXECUTORS)}")  # fmt: skip
    assert out is not None, error
    return out


def one_of(filter_: str, field: str) -> set[str]:
    """The values a Cloud Monitoring filter accepts for `field` (`= one_of(...)` or `= "x"`)."""
    found = re.search(rf'{re.escape(field)} = (?:one_of\(([^)]*)\)|("[^"]*"))', filter_)
    assert found, (field, filter_)
    return {json.loads(v) for v in re.findall(r'"[^"]*"', found.group(1) or found.group(2))}


def clauses(filter_: str) -> set[str]:
    return {c.strip() for c in filter_.split(" AND ")}


# -- one alert per concern, each explained and routed to the channels -----------------------


def test_every_concern_has_an_alert_that_explains_itself_and_notifies_the_channels(
    planned: dict[str, Any],
) -> None:
    alerts = planned["monitoring"]["alerts"]
    assert set(alerts) == CONCERNS
    for key, alert in alerts.items():
        doc = alert["documentation"]
        assert len(doc) > 200 and "First look at" in doc, key  # what it means, where to look
        assert alert["display_name"].startswith("Tether: "), key
        assert alert["severity"] in ("ERROR", "WARNING"), key
    # Every policy is one of these, sends to the channels and carries its text.
    doc = load(MODULE)
    policy = block(doc, "resource", "google_monitoring_alert_policy", "this")
    assert policy["for_each"] == "${local.alerts}"
    assert policy["notification_channels"] == "${var.notification_channels}"
    (documentation,) = policy["documentation"]
    assert documentation["content"] == "${trimspace(each.value.documentation)}"
    (condition,) = policy["conditions"]
    (threshold,) = condition["condition_threshold"]
    assert threshold["filter"] == "${each.value.filter}"
    assert threshold["threshold_value"] == "${each.value.threshold}"
    assert unq(threshold["comparison"]) == "COMPARISON_GT"
    # The root hands the module its channels, and a channel list reaches it as given.
    modules = {unq(k): v for entry in load("main.tf")["module"] for k, v in entry.items()}
    assert modules["monitoring"]["notification_channels"] == "${var.notification_channels}"
    assert variable_default(load("variables.tf"), "notification_channels") == []
    apis = [unq(a) for a in locals_of(load("main.tf"))["apis"]]
    assert {"monitoring.googleapis.com", "logging.googleapis.com"} <= set(apis)


def test_a_notification_channel_is_taken_by_its_full_name_only(scratch: Path) -> None:
    out, error = plan_in(scratch, f'notification_channels=["{CHANNEL}"]')
    assert out is not None, error
    out, error = plan_in(scratch, 'notification_channels=["1234567890"]')
    assert out is None and "projects/<project>/notificationChannels/<id>" in error, error


# -- 5xx: every function and relay ---------------------------------------------------------


def test_the_5xx_alert_covers_every_function_and_relay_the_deployment_runs(
    planned: dict[str, Any],
) -> None:
    # Every target functions/main.py registers is a function (test_terraform), named as the
    # functions module names it; each relay module is a Cloud Run service.
    functions = planned["function_names"]
    assert set(functions) == set(targets())
    relays = set(planned["relay_services"])
    assert relays == {"tether-relay", "tether-desktop-relay"}
    deployed = set(functions.values()) | relays

    alert = planned["monitoring"]["alerts"]["errors"]
    assert one_of(alert["filter"], "resource.labels.service_name") == deployed
    assert planned["monitoring"]["service_names"] == sorted(deployed)
    # A ratio: 5xx requests over all requests, of the same services, summed per service.
    assert clauses(alert["filter"]) == clauses(alert["denominator_filter"]) | {
        'metric.labels.response_code_class = "5xx"'
    }
    assert {
        'metric.type = "run.googleapis.com/request_count"',
        'resource.type = "cloud_run_revision"',
    } <= clauses(alert["denominator_filter"])
    assert alert["group_by"] == ["resource.labels.service_name"]
    assert alert["reducer"] == "REDUCE_SUM"
    assert (alert["threshold"], alert["period"]) == (0.05, "300s")
    # The denominator is aggregated as the numerator is (the API requires it).
    policy = block(load(MODULE), "resource", "google_monitoring_alert_policy", "this")
    (threshold,) = policy["conditions"][0]["condition_threshold"]
    (aggregations,) = threshold["aggregations"]
    (denominator,) = threshold["dynamic"]
    content = denominator['"denominator_aggregations"']["content"][0]
    fields = {k: v for k, v in aggregations.items() if not k.startswith("__")}
    assert set(fields) == {"alignment_period", "per_series_aligner", "cross_series_reducer",
                           "group_by_fields"}  # fmt: skip
    for field, value in fields.items():
        assert content[field] == value.replace("each.value", "denominator_aggregations.value")


def test_every_cloud_run_service_of_the_root_but_the_agents_is_watched() -> None:
    """A relay added as another instance of modules/relay is watched too."""
    modules = {unq(k): v for entry in load("main.tf")["module"] for k, v in entry.items()}
    relays = {name for name, body in modules.items() if unq(body["source"]) == "./modules/relay"}
    assert relays == {"relay", "desktop_relay"}
    watched = modules["monitoring"]["relay_services"]
    assert {watched[r] for r in relays} == {f"${{module.{r}.service_name}}" for r in relays}
    assert modules["monitoring"]["function_services"] == "${module.functions.function_names}"
    # Those outputs name the Cloud Run services (a 2nd gen function's is its name).
    outputs = {unq(k): v for entry in load("modules/functions/outputs.tf")["output"]
               for k, v in entry.items()}  # fmt: skip
    assert outputs["function_names"]["value"] == (
        "${{for name, f in google_cloudfunctions2_function.this : name => f.name}}"
    )
    relay = block(load("modules/relay/main.tf"), "resource", "google_cloud_run_v2_service", "relay")
    assert relay["name"] == "${var.name}"


def test_thresholds_are_the_operators_to_change(scratch: Path) -> None:
    thresholds = ("alert_thresholds={error_ratio = 0.2, error_window_minutes = 10, "
                  "dead_letter_minutes = 15, command_age_seconds = 900}")  # fmt: skip
    out, error = plan_in(scratch, thresholds)
    assert out is not None, error
    alerts = out["monitoring"]["alerts"]
    assert (alerts["errors"]["threshold"], alerts["errors"]["period"]) == (0.2, "600s")
    assert alerts["dead_letters"]["duration"] == "900s"
    assert alerts["command_age"]["threshold"] == 900
    assert "20 %" in alerts["errors"]["documentation"]
    out, error = plan_in(scratch, "alert_thresholds={error_ratio = 5}")
    assert out is None and "error_ratio is a share" in error, error


# -- Pub/Sub: the subscriptions the pubsub module makes ---------------------------------------


def test_the_dead_letter_alert_watches_the_dead_letter_subscription(
    planned: dict[str, Any],
) -> None:
    alert = planned["monitoring"]["alerts"]["dead_letters"]
    assert planned["dead_letter_subscription"] == DEAD_LETTER_TOPIC  # named as its topic
    assert one_of(alert["filter"], "resource.labels.subscription_id") == {DEAD_LETTER_TOPIC}
    assert 'metric.type = "pubsub.googleapis.com/subscription/num_undelivered_messages"' in (
        clauses(alert["filter"])
    )
    assert (alert["threshold"], alert["duration"]) == (0, "300s")  # any, for 5 minutes


def test_the_command_age_alert_watches_every_agents_subscription(
    planned: dict[str, Any], scratch: Path
) -> None:
    alert = planned["monitoring"]["alerts"]["command_age"]
    made = planned["agent_subscriptions"]
    ids = {*map(unq, variable_default(load("variables.tf"), "agents")), *CLUSTERS, *EXECUTORS}
    assert made == {i: commands_subscription(i) for i in ids}
    assert one_of(alert["filter"], "resource.labels.subscription_id") == set(made.values())
    assert DEAD_LETTER_TOPIC not in set(made.values())
    assert 'metric.type = "pubsub.googleapis.com/subscription/oldest_unacked_message_age"' in (
        clauses(alert["filter"])
    )
    assert alert["threshold"] == 300 and alert["group_by"] == ["resource.labels.subscription_id"]
    # With no agent at all there is nothing to watch, and the plan still stands.
    out, error = plan_in(scratch, "agents={}")
    assert out is not None, error
    assert set(out["monitoring"]["alerts"]) == CONCERNS - {"command_age"}


# -- agents offline: the event the sweeper logs -------------------------------------------------


def test_the_offline_alert_counts_the_event_the_code_logs(planned: dict[str, Any]) -> None:
    metric = planned["monitoring"]["log_metric"]
    logged = re.search(r'jsonPayload\.event = "([^"]+)"', metric["filter"])
    assert logged and logged.group(1) == "agent_offline"
    assert planned["monitoring"]["agent_offline_event"] == "agent_offline"
    assert metric["label_extractors"] == {"agent_id": "EXTRACT(jsonPayload.agent_id)"}
    # The code's name for it: the sweeper's log line carries it.
    agents = importlib.import_module("tether.service.agents")
    event = getattr(agents, "AGENT_OFFLINE_EVENT", None)
    assert event is not None, (
        "shared/tether/service/agents.py has no AGENT_OFFLINE_EVENT: the agents-offline alert "
        "counts log entries whose event is 'agent_offline'"
    )
    assert event == logged.group(1)
    source = (ROOT / "shared/tether/service/agents.py").read_text()
    assert re.search(r'"event": AGENT_OFFLINE_EVENT, "agent_id": agent\.id', source)
    # In the cloud that line is a JSON entry whose jsonPayload has both fields the filter and
    # the label extractor read.
    from tether.logs import CloudJson

    record = logging.LogRecord("tether.service.agents", logging.WARNING, __file__, 1,
                               "Agent %s is offline", ("gke",), None)  # fmt: skip
    record.event = event
    record.agent_id = "gke"
    payload = json.loads(CloudJson("my-project").format(record))
    assert (payload["event"], payload["agent_id"]) == ("agent_offline", "gke")

    # The alert reads that metric per agent; the metric is a counter labelled by agent.
    alert = planned["monitoring"]["alerts"]["agents_offline"]
    assert f'metric.type = "logging.googleapis.com/user/{metric["name"]}"' in clauses(
        alert["filter"]
    )
    assert alert["group_by"] == ["metric.labels.agent_id"] and alert["threshold"] == 0
    resource = block(load(MODULE), "resource", "google_logging_metric", "agent_offline")
    assert resource["filter"] == "${local.log_metric.filter}"
    assert resource["label_extractors"] == "${local.log_metric.label_extractors}"
    (descriptor,) = resource["metric_descriptor"]
    assert (unq(descriptor["metric_kind"]), unq(descriptor["value_type"])) == ("DELTA", "INT64")
    assert [unq(label["key"]) for label in descriptor["labels"]] == ["agent_id"]


# -- the dashboard --------------------------------------------------------------------------


def test_the_dashboard_charts_what_the_alerts_watch(planned: dict[str, Any]) -> None:
    dashboard = planned["monitoring"]["dashboard"]
    tiles = dashboard["mosaicLayout"]["tiles"]
    filters: dict[str, list[str]] = {}
    for tile in tiles:
        assert tile["xPos"] + tile["width"] <= dashboard["mosaicLayout"]["columns"]
        for data in tile["widget"]["xyChart"]["dataSets"]:
            query = data["timeSeriesQuery"]
            found = re.findall(r"'filter': '([^']*)'", repr(query))
            filters[tile["widget"]["title"]] = filters.get(tile["widget"]["title"], []) + found
    shown = " ".join(" ".join(f) for f in filters.values())
    for metric in ("run.googleapis.com/request_count", "run.googleapis.com/request_latencies",
                   "pubsub.googleapis.com/subscription/num_undelivered_messages",
                   "pubsub.googleapis.com/subscription/oldest_unacked_message_age",
                   f"logging.googleapis.com/user/{planned['monitoring']['log_metric']['name']}",
                   "firestore.googleapis.com/document/read_count"):  # fmt: skip
        assert metric in shown, metric
    alerts = planned["monitoring"]["alerts"]
    # The charts read the series the alerts read: the same services and subscriptions.
    for key in CONCERNS:
        assert alerts[key]["filter"] in shown, key
    latency = next(t["widget"] for t in tiles if "p95" in t["widget"]["title"])
    aggregation = latency["xyChart"]["dataSets"][0]["timeSeriesQuery"]["timeSeriesFilter"]
    assert aggregation["aggregation"]["crossSeriesReducer"] == "REDUCE_PERCENTILE_95"
    board = block(load(MODULE), "resource", "google_monitoring_dashboard", "this")
    assert board["dashboard_json"] == "${jsonencode(local.dashboard)}"
