variable "project_id" {
  type        = string
  description = "Project of the secret."
}

variable "jwt_secret_id" {
  type        = string
  description = "Secret Manager id of the HS256 signing secret (TETHER_JWT_SECRET)."
  default     = "tether-jwt-secret"
}

variable "accessors" {
  type        = map(string)
  description = "Who may read the JWT secret: static name => IAM member."
  default     = {}
}

variable "labels" {
  type        = map(string)
  description = "Labels on the secret."
  default     = {}
}
