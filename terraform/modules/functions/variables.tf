variable "project_id" {
  type        = string
  description = "Project of the functions."
}

variable "region" {
  type        = string
  description = "Region of the functions, their Eventarc trigger and the scheduler job."
}

variable "source_root" {
  type        = string
  description = "Path of the repository root (holding functions/, shared/ and requirements.txt)."
}

variable "source_bucket" {
  type        = string
  description = "Bucket the source archive is uploaded to."
}

variable "service_accounts" {
  type        = map(string)
  description = "Service account emails by identity: api, events, sweeper, scheduler."
}

variable "build_service_account_id" {
  type        = string
  description = "Fully qualified name (projects/<p>/serviceAccounts/<email>) of the service account Cloud Build uses to build the functions."
}

variable "jwt_secret_id" {
  type        = string
  description = "Secret Manager id of TETHER_JWT_SECRET."
}

variable "model_api_key_secret_id" {
  type        = string
  description = "Secret Manager id of TETHER_MODEL_API_KEY for the targets that call the language model (sentinelstacks); null: none."
  default     = null
}

variable "model_env" {
  type        = map(string)
  description = "The language model's settings for the targets that call it (TETHER_MODEL_PROVIDER, TETHER_MODEL_BASE_URL, TETHER_MODEL, TETHER_VERTEX_LOCATION, TETHER_CORS_ORIGINS)."
  default     = {}
}

variable "recordings_env" {
  type        = map(string)
  description = "Where terminal recordings are read from and how long they are kept (TETHER_RECORDINGS_URL, TETHER_RECORDING_RETENTION), for the onmemos target."
  default     = {}
}

variable "registry_url" {
  type        = string
  description = "SentinelStacks' registry (TETHER_REGISTRY_URL), gs://<bucket>/<prefix>."

  validation {
    condition     = startswith(var.registry_url, "gs://")
    error_message = "registry_url is gs://<bucket>/<prefix>."
  }
}

variable "registry_max_bytes" {
  type        = number
  description = "The largest image a push takes (TETHER_REGISTRY_MAX_BYTES); null: the code's default."
  default     = null
}

variable "topic_ids" {
  type        = map(string)
  description = "Pub/Sub topic ids by topic name (for CloudEvent triggers)."
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

variable "sweeper_schedule" {
  type        = string
  description = "Cron schedule (UTC) of the sweeper."
  default     = "* * * * *"
}

variable "max_instances" {
  type        = number
  description = "Default maximum instances of each function."
  default     = 20
}

variable "overrides" {
  type = map(object({
    memory        = optional(string)
    cpu           = optional(string)
    timeout       = optional(number)
    concurrency   = optional(number)
    min_instances = optional(number)
    max_instances = optional(number)
  }))
  description = "Per-target overrides of the defaults in local.functions, by entry point (e.g. { onmemos = { min_instances = 1 } })."
  default     = {}
}

variable "labels" {
  type        = map(string)
  description = "Labels on the functions."
  default     = {}
}
