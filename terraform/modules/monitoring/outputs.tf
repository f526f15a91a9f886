output "alert_policies" {
  description = "Resource name (projects/<p>/alertPolicies/<id>) of each alert policy, by concern: errors, dead_letters, command_age, agents_offline."
  value       = { for key, policy in google_monitoring_alert_policy.this : key => policy.name }
}

output "log_metric" {
  description = "Metric type of the agents-offline counter (logging.googleapis.com/user/<name>)."
  value       = "logging.googleapis.com/user/${google_logging_metric.agent_offline.name}"
}

output "dashboard_id" {
  description = "Id of the Tether dashboard (Cloud Monitoring > Dashboards > Tether)."
  value       = google_monitoring_dashboard.this.id
}

output "watched_services" {
  description = "The Cloud Run services whose 5xx share is alerted on (every function and each relay)."
  value       = local.service_names
}
