output "ip_address" {
  description = "The load balancer's IPv4 address (point the domain's A record here)."
  value       = google_compute_global_address.this.address
}

output "url" {
  description = "Public HTTPS origin."
  value       = "https://${var.domains[0]}"
}

output "certificate" {
  description = "Name of the managed certificate (provisioning takes a while after DNS points here)."
  value       = google_compute_managed_ssl_certificate.this.name
}

output "route_rules" {
  description = "The generated route rules (priority, backend, match), for checking the routing table."
  value       = local.rules
}
