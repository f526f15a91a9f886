variable "project_id" {
  type        = string
  description = "Project of the network."
}

variable "region" {
  type        = string
  description = "Region of the subnet (that of the Cloud Run agents and the relay)."
}

variable "cidr" {
  type        = string
  description = "Primary range of the subnet; Direct VPC egress takes addresses from it (/26 or larger)."
}
