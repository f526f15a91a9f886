variable "project_id" {
  type        = string
  description = "Project of the load balancer."
}

variable "region" {
  type        = string
  description = "Region of the serverless backends (their NEGs are regional)."
}

variable "domains" {
  type        = list(string)
  description = "Domains of the managed certificate; their DNS A records must point at the load balancer's address."

  validation {
    condition     = length(var.domains) > 0
    error_message = "At least one domain is needed for the managed certificate."
  }
}

variable "backends" {
  type        = map(string)
  description = "Backends by name => Cloud Run service name (a 2nd gen function's service has the function's name)."
}

variable "routes" {
  type = list(object({
    path    = string
    backend = string
  }))
  description = "Routing table, first match wins: path (\"/exact\", \"/prefix/*\" or \"/a/*/b\") => backend name."
}

variable "default_backend" {
  type        = string
  description = "Backend of every path no route matches."
}

variable "http_redirect" {
  type        = bool
  description = "Answer plain HTTP on port 80 with a redirect to HTTPS."
  default     = true
}

variable "security_policy" {
  type        = string
  description = "Cloud Armor security policy attached to every backend service; null: none."
  default     = null
}

variable "log_sample_rate" {
  type        = number
  description = "Fraction of requests the load balancer logs (0-1)."
  default     = 1
}
