variable "project_id" {
  type        = string
  description = "Project of the cluster."
}

variable "region" {
  type        = string
  description = "Region of the (regional) cluster and its subnet."
}

variable "network" {
  type        = string
  description = "Id of the VPC the relay sends through (modules/network): the cluster is VPC-native in it."
}

variable "relay_cidr" {
  type        = string
  description = "Range the relay's Direct VPC egress takes addresses from (modules/network's subnet): the one source outside the cluster admitted to workspace runtimes."
}

variable "name" {
  type        = string
  description = "Name of the cluster."
  default     = "tether"
}

variable "dns_domain" {
  type        = string
  description = "The cluster's DNS domain, published to the VPC (Cloud DNS VPC scope; unique in the VPC): the agent's TETHER_GKE_CLUSTER_DOMAIN."
  default     = "tether.internal"
}

variable "runtime_port" {
  type        = number
  description = "Port of every workspace runtime (tether.provision.gke_manifests.RUNTIME_PORT)."
  default     = 8080
}

variable "nodes_cidr" {
  type        = string
  description = "Primary range of the nodes' subnet."
  default     = "10.20.0.0/22"
}

variable "pods_cidr" {
  type        = string
  description = "Pods' secondary range (one address per workspace pod)."
  default     = "10.24.0.0/14"
}

variable "services_cidr" {
  type        = string
  description = "Services' secondary range (a workspace's headless Service takes none)."
  default     = "10.28.0.0/20"
}

variable "control_plane_cidr" {
  type        = string
  description = "The private control plane's /28."
  default     = "172.16.0.32/28"
}

variable "authorized_networks" {
  type        = map(string)
  description = "Who may reach the control plane's endpoint (kubectl, CI): name => CIDR. Empty: nobody outside Google's own paths."
  default     = {}
}

variable "machine_type" {
  type        = string
  description = "Machine type of both node pools."
  default     = "e2-standard-4"
}

variable "max_nodes" {
  type        = number
  description = "Most nodes of the ordinary pool (autoscaled, across the region's zones)."
  default     = 10
}

variable "sandbox_max_nodes" {
  type        = number
  description = "Most nodes of the GKE Sandbox pool (templates with sandbox: gvisor); 0: no such pool."
  default     = 4
}

variable "labels" {
  type        = map(string)
  description = "Labels on the cluster and its nodes."
  default     = {}
}
