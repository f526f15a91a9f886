output "push_endpoints" {
  description = "Push endpoint of each Cloud Run agent, by agent id."
  value       = { for id, svc in google_cloud_run_v2_service.agent : id => "${svc.uri}${var.push_path}" }
}

output "push_audiences" {
  description = "OIDC audience of each Cloud Run agent (its service URL), by agent id."
  value       = { for id, svc in google_cloud_run_v2_service.agent : id => svc.uri }
}

output "cloud_run_urls" {
  description = "Service URL of each Cloud Run agent."
  value       = { for id, svc in google_cloud_run_v2_service.agent : id => svc.uri }
}

output "env" {
  description = "Environment of each agent (for a GKE or cluster agent: put it in its Deployment)."
  value       = local.env
}

output "gke_agent_ids" {
  description = "Ids of the agents that run in a GKE cluster."
  value       = keys(local.gke_agents)
}
