variable "project_id" {
  type        = string
  description = "Project of the agents and of the workspaces they create."
}

variable "region" {
  type        = string
  description = "Region of the Cloud Run agents and of the workspace services they create."
}

variable "agents" {
  type = map(object({
    platform            = string
    k8s_service_account = optional(string)
  }))
  description = "Agents by id (the root variable `agents` and one `cluster` agent per `kubently_clusters` entry)."
}

variable "agent_service_accounts" {
  type        = map(string)
  description = "Service account email of each agent, by agent id."
}

variable "agent_image" {
  type        = string
  description = "Agent image (infra/docker/agent.Dockerfile; its default command is the Cloud Run agent)."
}

variable "workspace_image" {
  type        = string
  description = "Workspace runtime image templates run (TETHER_WORKSPACE_IMAGE)."
}

variable "vpc_network" {
  type        = string
  description = "VPC network the Cloud Run agents send all their traffic through."
}

variable "vpc_subnetwork" {
  type        = string
  description = "Subnet (Private Google Access on) of the Cloud Run agents' Direct VPC egress."
}

variable "sessions_bucket" {
  type        = string
  description = "Session storage bucket (TETHER_SESSIONS_BUCKET)."
}

variable "push_service_account_email" {
  type        = string
  description = "Pub/Sub push identity: the only invoker of the Cloud Run agents."
}

variable "request_timeout" {
  type        = number
  description = "Cloud Run request timeout of an agent, in seconds (>= the subscription's ack deadline)."
  default     = 900
}

variable "concurrency" {
  type        = number
  description = "Concurrent push requests per agent instance."
  default     = 16
}

variable "min_instances" {
  type        = number
  description = "Minimum instances of a Cloud Run agent (1 keeps its heartbeat going)."
  default     = 1
}

variable "max_instances" {
  type        = number
  description = "Maximum instances of a Cloud Run agent (1: its command journal is per instance)."
  default     = 1
}

variable "cpu" {
  type        = string
  description = "CPU limit of a Cloud Run agent."
  default     = "1"
}

variable "memory" {
  type        = string
  description = "Memory limit of a Cloud Run agent."
  default     = "512Mi"
}

variable "heartbeat_interval" {
  type        = number
  description = "Seconds between agent heartbeats (TETHER_HEARTBEAT_INTERVAL)."
  default     = 10
}

variable "push_path" {
  type        = string
  description = "Path of the agent's push receiver, appended to the service URL."
  default     = "/"
}

variable "labels" {
  type        = map(string)
  description = "Labels on the agent services."
  default     = {}
}
