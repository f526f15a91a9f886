variable "project_id" {
  type        = string
  description = "Project of the secret."
}

variable "jwt_secret_id" {
  type        = string
  description = "Secret Manager id of the HS256 signing secret (TETHER_JWT_SECRET)."
  default     = "tether-jwt-secret"
}

variable "runtime_key_secret_id" {
  type        = string
  description = "Secret Manager id of the key workspace runtimes' tokens are derived from (TETHER_RUNTIME_KEY)."
  default     = "tether-runtime-key"
}

variable "runtime_key_accessors" {
  type        = map(string)
  description = "Who may read the runtime key: static name => IAM member (the relay)."
  default     = {}
}

variable "model_api_key_secret_id" {
  type        = string
  description = "Secret Manager id of the model endpoint's API key (TETHER_MODEL_API_KEY); null: no such secret."
  default     = null
}

variable "accessors" {
  type        = map(string)
  description = "Who may read the JWT secret and the model API key secret: static name => IAM member."
  default     = {}
}

variable "labels" {
  type        = map(string)
  description = "Labels on the secret."
  default     = {}
}
