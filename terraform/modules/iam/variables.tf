variable "project_id" {
  type        = string
  description = "Project that holds every service account."
}

variable "project_number" {
  type        = string
  description = "Project number, to name the Pub/Sub service agent (service-<number>@gcp-sa-pubsub.iam.gserviceaccount.com)."
}

variable "agents" {
  type = map(object({
    platform            = string
    k8s_service_account = optional(string)
  }))
  description = "Agents by id (the root variable `agents` and one cluster agent per `kubently_clusters` entry): each gets its own service account; a gke or cluster agent's k8s_service_account (\"namespace/name\") is bound to it by Workload Identity."
}

variable "relay_project_invoker" {
  type        = bool
  description = "Grant the relay roles/run.invoker on the project so it can reach workspace services created at runtime. False when the agent grants it per workspace service."
  default     = true
}

variable "vertex_ai_users" {
  type        = list(string)
  description = "Workloads (keys of the service accounts, e.g. api, relay) granted roles/aiplatform.user on the project, to call Gemini on Vertex AI."
  default     = []
}
