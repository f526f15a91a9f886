variable "project_id" {
  type        = string
  description = "Project of the buckets."
}

variable "location" {
  type        = string
  description = "Bucket location (a region, e.g. europe-west1, keeps sessions next to the workspaces)."
}

variable "sessions_bucket_name" {
  type        = string
  description = "Name of the session storage bucket; null: <project_id>-tether-sessions."
  default     = null
}

variable "sources_bucket_name" {
  type        = string
  description = "Name of the function sources bucket; null: <project_id>-tether-function-sources."
  default     = null
}

variable "registry_bucket_name" {
  type        = string
  description = "Name of SentinelStacks' image registry bucket; null: <project_id>-tether-registry."
  default     = null
}

variable "sessions_versioning" {
  type        = bool
  description = "Keep previous versions of session files."
  default     = false
}

variable "sessions_retention_days" {
  type        = number
  description = "Delete session files older than this many days; 0 keeps them until the session's prefix is removed."
  default     = 0
}

variable "sessions_noncurrent_retention_days" {
  type        = number
  description = "With versioning, delete noncurrent versions after this many days; 0 keeps them."
  default     = 30
}

variable "access_log_bucket" {
  type        = string
  description = "Bucket that receives usage/access logs of the buckets; null: no access logs."
  default     = null
}

variable "force_destroy" {
  type        = bool
  description = "Let `terraform destroy` delete non-empty buckets."
  default     = false
}

variable "labels" {
  type        = map(string)
  description = "Labels on the buckets."
  default     = {}
}

variable "iam" {
  type = list(object({
    bucket = string # "sessions", "sources", "registry" or "recordings"
    role   = string
    key    = string # a static name for the member (for_each key)
    member = string
  }))
  description = "Bucket-level grants: who may use which bucket. On the registry and the recordings, only roles/storage.objectCreator and roles/storage.objectViewer: a blob is never deleted or overwritten (the recordings' lifecycle rule deletes them)."
  default     = []

  validation {
    condition     = alltrue([for g in var.iam : contains(["sessions", "sources", "registry", "recordings"], g.bucket)])
    error_message = "A grant's bucket is sessions, sources, registry or recordings."
  }

  validation {
    condition     = alltrue([for g in var.iam : g.bucket != "registry" || contains(["roles/storage.objectCreator", "roles/storage.objectViewer"], g.role)])
    error_message = "The registry bucket takes roles/storage.objectCreator and roles/storage.objectViewer only (no role that deletes or overwrites a blob)."
  }

  validation {
    condition     = alltrue([for g in var.iam : g.bucket != "recordings" || contains(["roles/storage.objectCreator", "roles/storage.objectViewer"], g.role)])
    error_message = "The recordings bucket takes roles/storage.objectCreator and roles/storage.objectViewer only (no role that deletes or overwrites a part)."
  }
}

variable "recordings_bucket_name" {
  type        = string
  description = "Name of the terminal recordings' bucket; null: <project_id>-tether-recordings."
  default     = null
}

variable "recordings_retention_days" {
  type        = number
  description = "Delete recording parts this many days after they were written (TETHER_RECORDING_RETENTION keeps the records as long)."
  default     = 31

  validation {
    condition     = var.recordings_retention_days >= 1 && floor(var.recordings_retention_days) == var.recordings_retention_days
    error_message = "recordings_retention_days is a whole number of days, at least 1."
  }
}
