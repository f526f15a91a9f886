# The cluster GKE workspaces run in, and the path the relay takes to them.
#
# The relay runs on Cloud Run and sends all its traffic into the `tether` VPC (Direct VPC
# egress, modules/network). This cluster is VPC-native in that VPC, so every pod's address is
# routable from the relay's subnet, and it publishes its Services' names to the whole VPC with
# Cloud DNS's VPC scope under `dns_domain`. A workspace's Service is headless
# (tether.provision.gke_manifests): its name resolves to the pod's address, the one the GKE
# provisioner reports (http://<service>.<namespace>.svc.<dns_domain>:8080). Three checks stand
# between the relay and a runtime: this firewall rule (the relay's subnet, the runtime port,
# pod addresses only), the namespace's NetworkPolicy (the same, in the cluster,
# infra/k8s/30-network-policy.yaml) and the runtime's own, the session's token derived from
# the key the relay and the agent share (no Google front end checks an ID token before a pod,
# as one does before a Cloud Run service).

locals {
  pods_range     = "tether-gke-pods"
  services_range = "tether-gke-services"
  pools = merge(
    { workspaces = { min = 1, max = var.max_nodes, gvisor = false } },
    var.sandbox_max_nodes > 0 ? { sandbox = { min = 0, max = var.sandbox_max_nodes, gvisor = true } } : {},
  )
}

resource "google_compute_subnetwork" "nodes" {
  project                  = var.project_id
  name                     = "tether-gke-${var.region}"
  region                   = var.region
  network                  = var.network
  ip_cidr_range            = var.nodes_cidr
  private_ip_google_access = true # private nodes pull images and call Google APIs

  secondary_ip_range {
    range_name    = local.pods_range
    ip_cidr_range = var.pods_cidr
  }

  secondary_ip_range {
    range_name    = local.services_range
    ip_cidr_range = var.services_cidr
  }

  log_config {
    aggregation_interval = "INTERVAL_10_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

# The relay (and only from its subnet) to the runtime port of pods; the network's
# deny-all-ingress rule (modules/network) refuses everything else.
resource "google_compute_firewall" "relay_to_runtimes" {
  project            = var.project_id
  name               = "tether-relay-to-gke-runtimes"
  network            = var.network
  direction          = "INGRESS"
  priority           = 1000
  source_ranges      = [var.relay_cidr]
  destination_ranges = [var.pods_cidr]

  allow {
    protocol = "tcp"
    ports    = [tostring(var.runtime_port)]
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

resource "google_service_account" "nodes" {
  project      = var.project_id
  account_id   = "tether-gke-nodes"
  display_name = "Tether GKE nodes (logs, metrics, image pulls; no workload uses it)"
}

resource "google_project_iam_member" "nodes" {
  for_each = toset([
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
    "roles/artifactregistry.reader",
  ])

  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.nodes.email}"
}

resource "google_container_cluster" "this" {
  # checkov:skip=CKV_GCP_12: Dataplane V2 (datapath_provider ADVANCED_DATAPATH) enforces NetworkPolicy itself; the network_policy block is for Calico and conflicts with it.
  # checkov:skip=CKV_GCP_66: Binary Authorization needs attestors for Tether's and every template's images; templates name images the operator chooses.
  # checkov:skip=CKV_GCP_65: Google Groups for RBAC is an organisation setting; the agent's Role is bound to its Kubernetes service account (infra/k8s/10-rbac.yaml).
  # checkov:skip=CKV_GCP_24: PodSecurityPolicy was removed from Kubernetes (1.25); the workspace namespace enforces Pod Security "restricted" (infra/k8s/00-namespaces.yaml).
  # checkov:skip=CKV_GCP_69: the node pools below set the GKE metadata server (workload_metadata_config); the default pool is removed at creation.
  # checkov:skip=CKV_GCP_68: the node pools below set Secure Boot; the default pool is removed at creation.
  # checkov:skip=CKV_GCP_72: the node pools below set integrity monitoring; the default pool is removed at creation.
  project  = var.project_id
  name     = var.name
  location = var.region

  network    = var.network
  subnetwork = google_compute_subnetwork.nodes.id

  networking_mode = "VPC_NATIVE"
  ip_allocation_policy {
    cluster_secondary_range_name  = local.pods_range
    services_secondary_range_name = local.services_range
  }

  # Dataplane V2 enforces the workspace namespace's NetworkPolicies.
  datapath_provider = "ADVANCED_DATAPATH"

  # Services' names resolvable from the whole VPC: the relay finds a workspace's pod by name.
  dns_config {
    cluster_dns        = "CLOUD_DNS"
    cluster_dns_scope  = "VPC_SCOPE"
    cluster_dns_domain = var.dns_domain
  }

  workload_identity_config {
    workload_pool = "${var.project_id}.svc.id.goog"
  }

  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = false
    master_ipv4_cidr_block  = var.control_plane_cidr
  }

  master_authorized_networks_config {
    dynamic "cidr_blocks" {
      for_each = var.authorized_networks
      content {
        cidr_block   = cidr_blocks.value
        display_name = cidr_blocks.key
      }
    }
  }

  release_channel {
    channel = "REGULAR"
  }

  enable_intranode_visibility = true
  enable_shielded_nodes       = true
  enable_legacy_abac          = false

  master_auth {
    client_certificate_config {
      issue_client_certificate = false
    }
  }

  resource_labels = var.labels

  # Node pools are their own resources (below).
  remove_default_node_pool = true
  initial_node_count       = 1

  deletion_protection = true
}

# Ordinary workspaces and the agent; and, for templates with `sandbox: gvisor`, GKE Sandbox
# nodes (labelled and tainted by GKE).
resource "google_container_node_pool" "this" {
  for_each = local.pools

  project  = var.project_id
  name     = each.key
  location = var.region
  cluster  = google_container_cluster.this.name

  autoscaling {
    total_min_node_count = each.value.min
    total_max_node_count = each.value.max
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  node_config {
    machine_type    = var.machine_type
    image_type      = "COS_CONTAINERD"
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    labels          = var.labels

    dynamic "sandbox_config" {
      for_each = each.value.gvisor ? [1] : []
      content {
        sandbox_type = "gvisor"
      }
    }

    # Pods get the GKE metadata server: Workload Identity for the agent, nothing for a
    # workspace (its policies block the address anyway).
    workload_metadata_config {
      mode = "GKE_METADATA"
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
  }
}

# Workspaces whose template asks for egress reach the internet through NAT (pod addresses
# only; the nodes need none: Private Google Access).
resource "google_compute_router" "this" {
  project = var.project_id
  name    = "tether-gke-${var.region}"
  region  = var.region
  network = var.network
}

resource "google_compute_router_nat" "pods" {
  project                            = var.project_id
  name                               = "tether-gke-pods"
  router                             = google_compute_router.this.name
  region                             = var.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "LIST_OF_SUBNETWORKS"

  subnetwork {
    name                     = google_compute_subnetwork.nodes.id
    source_ip_ranges_to_nat  = ["LIST_OF_SECONDARY_IP_RANGES"]
    secondary_ip_range_names = [local.pods_range]
  }

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}
