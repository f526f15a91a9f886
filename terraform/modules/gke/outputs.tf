output "cluster" {
  description = "Name of the cluster."
  value       = google_container_cluster.this.name
}

output "endpoint" {
  description = "The control plane's endpoint (CONTROL_PLANE_IP in infra/k8s/30-network-policy.yaml)."
  value       = google_container_cluster.this.endpoint
}

output "dns_domain" {
  description = "The cluster's DNS domain, published to the VPC: the agent's TETHER_GKE_CLUSTER_DOMAIN."
  value       = var.dns_domain
}

output "relay_cidr" {
  description = "The relay's range admitted to runtimes (RELAY_CIDR in infra/k8s/30-network-policy.yaml)."
  value       = var.relay_cidr
}
