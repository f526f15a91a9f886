# The Bus (tether.bus.pubsub): `agent-commands` with one filtered subscription per agent
# (agent-commands-<agent_id>, filter on the agent_id attribute), `agent-events` (acks,
# results, heartbeats; the agent_events function's Eventarc trigger subscribes to it, and each
# waiting process's reply inbox, made at runtime) and a dead-letter topic for commands no
# agent could take.

locals {
  commands_topic    = "agent-commands"
  events_topic      = "agent-events"
  dead_letter_topic = "agent-commands-dead-letter"

  topics = toset([local.commands_topic, local.events_topic, local.dead_letter_topic])

  pubsub_agent = "serviceAccount:service-${var.project_number}@gcp-sa-pubsub.iam.gserviceaccount.com"

  topic_iam = merge(
    { for key, member in var.command_publishers : "${local.commands_topic}/publisher/${key}" => {
      topic = local.commands_topic, role = "roles/pubsub.publisher", member = member
    } },
    { for key, member in var.command_viewers : "${local.commands_topic}/viewer/${key}" => {
      topic = local.commands_topic, role = "roles/pubsub.viewer", member = member
    } },
    { for key, member in var.event_publishers : "${local.events_topic}/publisher/${key}" => {
      topic = local.events_topic, role = "roles/pubsub.publisher", member = member
    } },
    # A process that waits for results attaches its own inbox (a subscription filtered on
    # its reply_to attribute); making and deleting it is the iam module's inbox role.
    { for key, member in var.event_subscribers : "${local.events_topic}/subscriber/${key}" => {
      topic = local.events_topic, role = "roles/pubsub.subscriber", member = member
    } },
    # Dead-lettering: Pub/Sub itself forwards undeliverable messages.
    { "${local.dead_letter_topic}/publisher/pubsub-agent" = {
      topic = local.dead_letter_topic, role = "roles/pubsub.publisher", member = local.pubsub_agent
    } },
  )

  subscription_iam = merge(
    # A pull subscription is read by its subscribers only: a pull agent reads its own (and no
    # other); a Kubently executor cluster's is read by whoever serves that cluster's executors.
    merge([for id, agent in var.agents : {
      for key, member in agent.subscribers : "${id}/subscriber/${key}" => { agent = id, member = member }
    } if !agent.push]...),
    # Dead-lettering: Pub/Sub acks the message it forwarded on the source subscription.
    { for id, agent in var.agents : "${id}/subscriber/pubsub-agent" => {
      agent = id, member = local.pubsub_agent
    } },
  )
}

resource "google_pubsub_topic" "this" {
  # checkov:skip=CKV_GCP_83: Google-managed encryption; the messages are command envelopes (ids, template names), no user data or secrets.
  for_each = local.topics

  project                    = var.project_id
  name                       = each.key
  labels                     = var.labels
  message_retention_duration = var.topic_retention
}

resource "google_pubsub_topic_iam_member" "this" {
  for_each = local.topic_iam

  project = var.project_id
  topic   = google_pubsub_topic.this[each.value.topic].name
  role    = each.value.role
  member  = each.value.member
}

# One subscription per agent: agent-commands-<agent_id>, seeing only that agent's commands.
# Push (Cloud Run agents) or pull (GKE agents).
resource "google_pubsub_subscription" "agent_commands" {
  for_each = var.agents

  project = var.project_id
  name    = "${local.commands_topic}-${each.key}"
  topic   = google_pubsub_topic.this[local.commands_topic].id
  filter  = "attributes.agent_id = \"${each.key}\""
  labels  = var.labels

  # A start_session command provisions a workspace: give the agent time before redelivery.
  ack_deadline_seconds       = var.ack_deadline_seconds
  message_retention_duration = var.message_retention
  retain_acked_messages      = false

  expiration_policy {
    ttl = "" # never expires, however long the agent is away
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.this[local.dead_letter_topic].id
    max_delivery_attempts = var.max_delivery_attempts
  }

  dynamic "push_config" {
    for_each = each.value.push ? [each.value] : []
    content {
      push_endpoint = push_config.value.push_endpoint

      oidc_token {
        service_account_email = var.push_service_account_email
        audience              = push_config.value.push_audience
      }
    }
  }
}

resource "google_pubsub_subscription_iam_member" "agent_commands" {
  for_each = local.subscription_iam

  project      = var.project_id
  subscription = google_pubsub_subscription.agent_commands[each.value.agent].name
  role         = "roles/pubsub.subscriber"
  member       = each.value.member
}

# Without a subscription, Pub/Sub would drop what reaches the dead-letter topic. It pushes
# each dead-lettered command to the agent_events function, which fails it (reason
# dead_lettered) and answers a caller waiting on it; what the function cannot take stays here.
resource "google_pubsub_subscription" "dead_letter" {
  project                    = var.project_id
  name                       = local.dead_letter_topic
  topic                      = google_pubsub_topic.this[local.dead_letter_topic].id
  labels                     = var.labels
  ack_deadline_seconds       = 60
  message_retention_duration = var.message_retention

  expiration_policy {
    ttl = ""
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dynamic "push_config" {
    for_each = var.dead_letter_push == null ? [] : [var.dead_letter_push]
    content {
      push_endpoint = push_config.value.endpoint

      oidc_token {
        service_account_email = push_config.value.service_account_email
        audience              = push_config.value.endpoint
      }
    }
  }
}
