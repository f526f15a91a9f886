output "topic_ids" {
  description = "Topic ids (projects/<p>/topics/<name>) by topic name."
  value       = { for name, topic in google_pubsub_topic.this : name => topic.id }
}

output "topic_names" {
  description = "Topic names: commands, events, dead_letter."
  value = {
    commands    = google_pubsub_topic.this[local.commands_topic].name
    events      = google_pubsub_topic.this[local.events_topic].name
    dead_letter = google_pubsub_topic.this[local.dead_letter_topic].name
  }
}

output "agent_subscriptions" {
  description = "The agent-commands-<agent_id> subscription of each agent."
  value       = { for id, sub in google_pubsub_subscription.agent_commands : id => sub.name }
}

output "dead_letter_subscription" {
  description = "Subscription holding dead-lettered commands."
  value       = google_pubsub_subscription.dead_letter.name
}
