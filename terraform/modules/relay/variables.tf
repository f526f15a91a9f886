variable "name" {
  type        = string
  description = "Cloud Run service name."
  default     = "tether-relay"
}

variable "description" {
  type        = string
  description = "What the service carries."
  default     = "Tether WebSocket relay: shells, terminals, VNC, live logs, AI agents' chat and events"
}

variable "project_id" {
  type        = string
  description = "Project of the relay."
}

variable "region" {
  type        = string
  description = "Region of the relay service."
}

variable "image" {
  type        = string
  description = "Relay image (infra/docker/relay.Dockerfile)."
}

variable "service_account_email" {
  type        = string
  description = "Identity the relay runs as."
}

variable "jwt_secret_id" {
  type        = string
  description = "Secret Manager id of TETHER_JWT_SECRET."
}

variable "model_env" {
  type        = map(string)
  description = "The language model's settings (TETHER_MODEL_PROVIDER, TETHER_MODEL_BASE_URL, TETHER_MODEL, TETHER_VERTEX_LOCATION, TETHER_CORS_ORIGINS), for SentinelStacks' chat WebSocket; empty: the code's defaults."
  default     = {}
}

variable "recordings_env" {
  type        = map(string)
  description = "Where terminal recordings are written and for how long they are kept (TETHER_RECORDINGS_URL, TETHER_RECORDING_RETENTION); empty: the code's defaults."
  default     = {}
}

variable "model_api_key_secret_id" {
  type        = string
  description = "Secret Manager id of TETHER_MODEL_API_KEY; null: none."
  default     = null
}

variable "public_url" {
  type        = string
  description = "Public origin (TETHER_PUBLIC_URL), e.g. https://tether.example.com."
}

variable "firestore_database" {
  type        = string
  description = "Firestore database id (TETHER_FIRESTORE_DATABASE)."
  default     = "(default)"
}

variable "concurrency" {
  type        = number
  description = "Concurrent requests (open WebSockets) per relay instance."
  default     = 250
}

variable "min_instances" {
  type        = number
  description = "Minimum relay instances."
  default     = 0
}

variable "max_instances" {
  type        = number
  description = "Maximum relay instances."
  default     = 20
}

variable "cpu" {
  type        = string
  description = "CPU limit of a relay instance."
  default     = "1"
}

variable "memory" {
  type        = string
  description = "Memory limit of a relay instance."
  default     = "512Mi"
}

variable "labels" {
  type        = map(string)
  description = "Labels on the relay service."
  default     = {}
}

variable "vpc_network" {
  type        = string
  description = "VPC network the relay sends all its traffic through."
}

variable "vpc_subnetwork" {
  type        = string
  description = "Subnet (Private Google Access on) of the relay's Direct VPC egress."
}

variable "runtime_key_secret_id" {
  type        = string
  description = "Secret Manager id of TETHER_RUNTIME_KEY (GKE workspaces' runtimes); null: the relay derives runtime tokens from the JWT secret (no GKE workspaces)."
  default     = null
}
