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
