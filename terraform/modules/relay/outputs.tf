output "service_name" {
  description = "Cloud Run service name of the relay (the load balancer's serverless NEG points at it)."
  value       = google_cloud_run_v2_service.relay.name
}

output "url" {
  description = "The relay's own run.app URL (ingress is load-balancer only: clients use the public origin)."
  value       = google_cloud_run_v2_service.relay.uri
}
