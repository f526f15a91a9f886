output "network" {
  description = "Id of the VPC network."
  value       = google_compute_network.this.id
}

output "subnetwork" {
  description = "Id of the subnet the Cloud Run agents and the relay send through."
  value       = google_compute_subnetwork.this.id
}
