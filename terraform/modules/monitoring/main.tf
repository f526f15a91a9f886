# What an operator is told about, and where to look: alert policies on the functions' and
# relays' 5xx share, on commands nobody takes (dead-lettered, or waiting in an agent's
# subscription), on agents going offline (a log-based metric on the sweeper's log entries),
# and one dashboard with the same figures. Every filter and chart is built in `locals` from
# the names the other modules give (functions, relays, subscriptions), so a new function or
# agent is watched without a change here.

locals {
  # The sweeper writes one Cloud Logging JSON entry per agent it marks offline, with
  # `event` = this and `agent_id` (tether.service.agents.AGENT_OFFLINE_EVENT).
  agent_offline_event = "agent_offline"
  log_metric_name     = "tether-agent-offline"
  # The sweeper is a Cloud Run function: its entries are logged against its revision.
  log_metric = {
    name        = local.log_metric_name
    description = "Agents the sweeper marked offline (one per log entry with jsonPayload.event = \"${local.agent_offline_event}\"), by agent_id."
    filter      = "resource.type = \"cloud_run_revision\" AND jsonPayload.event = \"${local.agent_offline_event}\""
    label_extractors = {
      agent_id = "EXTRACT(jsonPayload.agent_id)"
    }
  }

  # Watched Cloud Run services: every function and each relay (not the Cloud Run agents,
  # whose push endpoint may refuse a delivery on purpose, nor the workspace services).
  services        = merge(var.function_services, var.relay_services)
  service_names   = sort(distinct(values(local.services)))
  one_of_services = "one_of(${join(", ", [for s in local.service_names : jsonencode(s)])})"

  requests = join(" AND ", [
    "metric.type = \"run.googleapis.com/request_count\"",
    "resource.type = \"cloud_run_revision\"",
    "resource.labels.service_name = ${local.one_of_services}",
  ])
  errors    = "${local.requests} AND metric.labels.response_code_class = \"5xx\""
  latencies = "metric.type = \"run.googleapis.com/request_latencies\" AND resource.type = \"cloud_run_revision\" AND resource.labels.service_name = ${local.one_of_services}"
  instances = "metric.type = \"run.googleapis.com/container/instance_count\" AND resource.type = \"cloud_run_revision\" AND resource.labels.service_name = ${local.one_of_services}"

  command_subscription_names = sort(distinct(values(var.command_subscriptions)))
  dead_letter_depth          = "metric.type = \"pubsub.googleapis.com/subscription/num_undelivered_messages\" AND resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id = ${jsonencode(var.dead_letter_subscription)}"
  command_age                = "metric.type = \"pubsub.googleapis.com/subscription/oldest_unacked_message_age\" AND resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id = one_of(${join(", ", [for s in local.command_subscription_names : jsonencode(s)])})"
  offline_agents             = "metric.type = \"logging.googleapis.com/user/${local.log_metric_name}\" AND resource.type = \"cloud_run_revision\""

  error_window   = "${var.error_window_minutes * 60}s"
  offline_window = "${var.offline_window_minutes * 60}s"

  # One alert policy each, one threshold condition each (every attribute present in each, null
  # where unused). Comparison: the series is above `threshold`.
  all_alerts = {
    # A ratio, not a count: the functions' traffic differs by orders of magnitude (the
    # sweeper is called once a minute, onmemos by every client), so one count would be
    # either deaf for the busy ones or noisy for the quiet ones; 5 % of a service's requests
    # over 5 minutes is far above what clients retry through (Tether answers bad input with a
    # 4xx, never a 5xx). Both series are summed per service before the division.
    errors = {
      display_name       = "Tether: 5xx share per service"
      condition          = "5xx share of requests above ${var.error_ratio * 100} % over ${var.error_window_minutes} min"
      severity           = "ERROR"
      filter             = local.errors
      denominator_filter = local.requests
      period             = local.error_window
      aligner            = "ALIGN_DELTA"
      reducer            = "REDUCE_SUM"
      group_by           = ["resource.labels.service_name"]
      threshold          = var.error_ratio
      duration           = "60s"                              # two consecutive evaluations, not one burst
      missing_data       = "EVALUATION_MISSING_DATA_INACTIVE" # no 5xx at all: nothing to say
      auto_close         = "1800s"
      documentation      = <<-EOT
        More than ${var.error_ratio * 100} % of the requests one Tether service answered in
        the last ${var.error_window_minutes} minutes were 5xx. Watched: ${join(", ", local.service_names)}
        (each function is the Cloud Run service of its name; the relays are Cloud Run services).

        Tether answers bad input with a 4xx, so a 5xx is a crash, a timeout (the function's
        `timeout_seconds`), or a dependency it could not reach (503 with Retry-After while
        Firestore or Pub/Sub is away).

        First look at:
        1. The service's errors: Logs Explorer, `resource.type="cloud_run_revision"
           resource.labels.service_name="<service>" severity>=ERROR` (each entry carries its
           request_id and trace).
        2. `GET /health`: whether Firestore and Pub/Sub answer.
        3. A deploy that just happened (the service's latest revision), and instance counts at
           `max_instances` (the dashboard "Tether" shows both).
      EOT
    }

    # Dead-lettered commands are pushed to the agent_events function, which fails them and
    # acks: the subscription is empty but for minutes at a time. One that stays means that
    # function cannot take them.
    dead_letters = {
      display_name       = "Tether: dead-lettered commands waiting"
      condition          = "${var.dead_letter_subscription} holds a command for ${var.dead_letter_minutes} min"
      severity           = "ERROR"
      filter             = local.dead_letter_depth
      denominator_filter = null
      period             = "60s"
      aligner            = "ALIGN_MAX"
      reducer            = "REDUCE_MAX"
      group_by           = ["resource.labels.subscription_id"]
      threshold          = 0
      duration           = "${var.dead_letter_minutes * 60}s"
      missing_data       = null
      auto_close         = "1800s"
      documentation      = <<-EOT
        The subscription `${var.dead_letter_subscription}` has held at least one command for
        ${var.dead_letter_minutes} minutes. A command lands there after its agent failed to
        take it on every delivery attempt; the subscription pushes it to the `agent_events`
        function, which fails the command (`result.reason = "dead_lettered"`) and acks it. A
        command that stays means that function does not take it.

        First look at:
        1. The agent_events function (service `tether-agent-events`): its errors in Logs
           Explorer and its 5xx on the dashboard "Tether".
        2. The subscription in the Pub/Sub console: its push endpoint, delivery errors, and the
           `agent_id` attribute of the waiting messages (whose agent failed them).
        3. That agent (the agents-offline alert, its own logs).
      EOT
    }

    # Commands are acked once the agent has run them; an ack deadline is 600 s, so a
    # command older than 5 minutes is one no agent is working on, or one that keeps failing.
    command_age = {
      display_name       = "Tether: agent commands not taken"
      condition          = "oldest unacked command older than ${var.command_age_seconds} s"
      severity           = "WARNING"
      filter             = local.command_age
      denominator_filter = null
      period             = "60s"
      aligner            = "ALIGN_MAX"
      reducer            = "REDUCE_MAX"
      group_by           = ["resource.labels.subscription_id"]
      threshold          = var.command_age_seconds
      duration           = "60s"
      missing_data       = null
      auto_close         = "1800s"
      documentation      = <<-EOT
        An agent's subscription (`agent-commands-<agent id>`) has held a command unacknowledged
        for more than ${var.command_age_seconds} s. Its agent is down or stuck, or the command
        fails at each delivery (after the last attempt it is dead-lettered and fails). For a
        Kubently executor cluster: no executor is polling for its commands.

        First look at:
        1. The agents-offline alert and the agent's status (its heartbeats).
        2. The agent itself: the Cloud Run service `tether-agent-<id>`, or the Deployment in
           its GKE cluster; its logs name each command_id.
        3. The subscription in the Pub/Sub console: delivery attempts, push errors.
      EOT
    }

    # A log-based counter: any entry in the window opens the incident; none for a window
    # closes it.
    agents_offline = {
      display_name       = "Tether: agent offline"
      condition          = "an agent was marked offline in the last ${var.offline_window_minutes} min"
      severity           = "WARNING"
      filter             = local.offline_agents
      denominator_filter = null
      period             = local.offline_window
      aligner            = "ALIGN_SUM"
      reducer            = "REDUCE_SUM"
      group_by           = ["metric.labels.agent_id"]
      threshold          = 0
      duration           = "0s"
      missing_data       = "EVALUATION_MISSING_DATA_INACTIVE"
      auto_close         = "1800s"
      documentation      = <<-EOT
        The sweeper marked an agent offline: no heartbeat reached Tether within the agent's
        grace. Its live sessions say the agent is offline, and commands for it wait in
        `agent-commands-<agent id>` until it is back (past the command-age threshold, that
        alert opens too).

        First look at:
        1. Which agent: the incident's `agent_id` label, or Logs Explorer
           `jsonPayload.event="${local.agent_offline_event}"`.
        2. The agent's process: the Cloud Run service `tether-agent-<id>` (min instances,
           crashes), the Deployment in its GKE cluster, or the desktop's host.
        3. Its network path to Pub/Sub (agent-events) and Firestore.
      EOT
    }
  }
  # No agent, no command subscription to watch.
  alerts = { for key, alert in local.all_alerts : key => alert if key != "command_age" || length(local.command_subscription_names) > 0 }

  # The dashboard: a 48-column mosaic, two charts a row.
  per_service = {
    alignmentPeriod    = "60s"
    perSeriesAligner   = "ALIGN_RATE"
    crossSeriesReducer = "REDUCE_SUM"
    groupByFields      = ["resource.labels.service_name"]
  }
  charts = concat(
    [
      {
        title = "5xx share of requests, per service"
        xyChart = {
          dataSets = [{
            plotType = "LINE"
            timeSeriesQuery = {
              timeSeriesFilterRatio = {
                numerator   = { filter = local.errors, aggregation = local.per_service }
                denominator = { filter = local.requests, aggregation = local.per_service }
              }
            }
          }]
          thresholds = [{ value = var.error_ratio, label = "alert" }]
          yAxis      = { label = "5xx / requests", scale = "LINEAR" }
        }
      },
      {
        title = "Requests per second, per service and response class"
        xyChart = {
          dataSets = [{
            plotType = "STACKED_AREA"
            timeSeriesQuery = {
              timeSeriesFilter = {
                filter      = local.requests
                aggregation = merge(local.per_service, { groupByFields = ["resource.labels.service_name", "metric.labels.response_code_class"] })
              }
            }
          }]
          yAxis = { label = "requests/s", scale = "LINEAR" }
        }
      },
      {
        title = "5xx per second, per service"
        xyChart = {
          dataSets = [{
            plotType        = "LINE"
            timeSeriesQuery = { timeSeriesFilter = { filter = local.errors, aggregation = local.per_service } }
          }]
          yAxis = { label = "5xx/s", scale = "LINEAR" }
        }
      },
      {
        title = "Request latency p95, per service"
        xyChart = {
          dataSets = [{
            plotType = "LINE"
            timeSeriesQuery = {
              timeSeriesFilter = {
                filter      = local.latencies
                aggregation = merge(local.per_service, { perSeriesAligner = "ALIGN_DELTA", crossSeriesReducer = "REDUCE_PERCENTILE_95" })
              }
            }
          }]
          yAxis = { label = "ms", scale = "LINEAR" }
        }
      },
      {
        title = "Instances, per service"
        xyChart = {
          dataSets = [{
            plotType = "STACKED_AREA"
            timeSeriesQuery = {
              timeSeriesFilter = {
                filter      = local.instances
                aggregation = merge(local.per_service, { perSeriesAligner = "ALIGN_MAX" })
              }
            }
          }]
          yAxis = { label = "instances", scale = "LINEAR" }
        }
      },
      {
        title = "Dead-lettered commands waiting (${var.dead_letter_subscription})"
        xyChart = {
          dataSets = [{
            plotType = "LINE"
            timeSeriesQuery = {
              timeSeriesFilter = {
                filter      = local.dead_letter_depth
                aggregation = { alignmentPeriod = "60s", perSeriesAligner = "ALIGN_MAX" }
              }
            }
          }]
          thresholds = [{ value = 0, label = "alert after ${var.dead_letter_minutes} min" }]
          yAxis      = { label = "messages", scale = "LINEAR" }
        }
      },
    ],
    length(local.command_subscription_names) == 0 ? [] : [{
      title = "Oldest unacked command, per agent subscription"
      xyChart = {
        dataSets = [{
          plotType = "LINE"
          timeSeriesQuery = {
            timeSeriesFilter = {
              filter = local.command_age
              aggregation = {
                alignmentPeriod    = "60s"
                perSeriesAligner   = "ALIGN_MAX"
                crossSeriesReducer = "REDUCE_MAX"
                groupByFields      = ["resource.labels.subscription_id"]
              }
            }
          }
        }]
        thresholds = [{ value = var.command_age_seconds, label = "alert" }]
        yAxis      = { label = "seconds", scale = "LINEAR" }
      }
    }],
    [
      {
        title = "Agents marked offline, per agent"
        xyChart = {
          dataSets = [{
            plotType = "STACKED_BAR"
            timeSeriesQuery = {
              timeSeriesFilter = {
                filter = local.offline_agents
                aggregation = {
                  alignmentPeriod    = "60s"
                  perSeriesAligner   = "ALIGN_SUM"
                  crossSeriesReducer = "REDUCE_SUM"
                  groupByFields      = ["metric.labels.agent_id"]
                }
              }
            }
          }]
          yAxis = { label = "agents marked offline", scale = "LINEAR" }
        }
      },
      {
        title = "Firestore documents read, written, deleted per second"
        xyChart = {
          dataSets = [for op in ["read", "write", "delete"] : {
            plotType = "LINE"
            timeSeriesQuery = {
              timeSeriesFilter = {
                filter = "metric.type = \"firestore.googleapis.com/document/${op}_count\" AND resource.type = \"firestore_instance\""
                aggregation = {
                  alignmentPeriod    = "60s"
                  perSeriesAligner   = "ALIGN_RATE"
                  crossSeriesReducer = "REDUCE_SUM"
                }
              }
            }
          }]
          yAxis = { label = "documents/s", scale = "LINEAR" }
        }
      },
    ],
  )
  dashboard = {
    displayName = "Tether"
    mosaicLayout = {
      columns = 48
      tiles = [for i, chart in local.charts : {
        xPos   = (i % 2) * 24
        yPos   = floor(i / 2) * 16
        width  = 24
        height = 16
        widget = chart
      }]
    }
  }
}

resource "google_logging_metric" "agent_offline" {
  project     = var.project_id
  name        = local.log_metric.name
  description = local.log_metric.description
  filter      = local.log_metric.filter

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "Tether agents marked offline"

    labels {
      key         = "agent_id"
      value_type  = "STRING"
      description = "The agent the sweeper marked offline."
    }
  }

  label_extractors = local.log_metric.label_extractors
}

resource "google_monitoring_alert_policy" "this" {
  for_each = local.alerts

  project               = var.project_id
  display_name          = each.value.display_name
  severity              = each.value.severity
  combiner              = "OR"
  enabled               = true
  notification_channels = var.notification_channels
  user_labels           = var.labels

  documentation {
    content   = trimspace(each.value.documentation)
    mime_type = "text/markdown"
  }

  conditions {
    display_name = each.value.condition

    condition_threshold {
      filter                  = each.value.filter
      comparison              = "COMPARISON_GT"
      threshold_value         = each.value.threshold
      duration                = each.value.duration
      evaluation_missing_data = each.value.missing_data

      aggregations {
        alignment_period     = each.value.period
        per_series_aligner   = each.value.aligner
        cross_series_reducer = each.value.reducer
        group_by_fields      = each.value.group_by
      }

      # A ratio: the numerator is `filter`, aggregated alike.
      denominator_filter = each.value.denominator_filter
      dynamic "denominator_aggregations" {
        for_each = each.value.denominator_filter == null ? [] : [each.value]
        content {
          alignment_period     = denominator_aggregations.value.period
          per_series_aligner   = denominator_aggregations.value.aligner
          cross_series_reducer = denominator_aggregations.value.reducer
          group_by_fields      = denominator_aggregations.value.group_by
        }
      }

      trigger {
        count = 1 # any one service, subscription or agent
      }
    }
  }

  alert_strategy {
    auto_close = each.value.auto_close
  }

  # The agents-offline condition reads the log-based metric, which must exist first.
  depends_on = [google_logging_metric.agent_offline]
}

resource "google_monitoring_dashboard" "this" {
  project        = var.project_id
  dashboard_json = jsonencode(local.dashboard)
}
