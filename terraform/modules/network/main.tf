# The VPC the Cloud Run agents and the relay send all their traffic through (Direct VPC
# egress): a workspace service takes internal traffic only, so this is their one way to it.
# Private Google Access carries their calls to Google APIs and to run.app; nothing else is
# reachable (no NAT, no firewall opening, no VM).

resource "google_compute_network" "this" {
  project                 = var.project_id
  name                    = "tether"
  auto_create_subnetworks = false
}

resource "google_compute_subnetwork" "this" {
  project                  = var.project_id
  name                     = "tether-${var.region}"
  region                   = var.region
  network                  = google_compute_network.this.id
  ip_cidr_range            = var.cidr
  private_ip_google_access = true

  log_config {
    aggregation_interval = "INTERVAL_10_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

# Nothing enters: what sends through this network (serverless egress) takes no connection.
resource "google_compute_firewall" "deny_ingress" {
  project   = var.project_id
  name      = "tether-deny-ingress"
  network   = google_compute_network.this.id
  direction = "INGRESS"
  priority  = 65534

  deny {
    protocol = "all"
  }
  source_ranges = ["0.0.0.0/0"]

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}
