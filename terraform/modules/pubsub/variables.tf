variable "project_id" {
  type        = string
  description = "Project of the topics and subscriptions."
}

variable "project_number" {
  type        = string
  description = "Project number, to name the Pub/Sub service agent (dead-lettering)."
}

variable "agents" {
  type = map(object({
    push          = bool                      # true: push to push_endpoint; false: pulled by subscribers
    push_endpoint = optional(string)          # URL Pub/Sub posts each command to
    push_audience = optional(string)          # audience of the OIDC token (the service URL)
    subscribers   = optional(map(string), {}) # who reads a pull subscription: static name => IAM member
  }))
  description = "Agents by id: one agent-commands-<id> subscription each, filtered on attributes.agent_id. A pull agent's subscribers are the agent; a Kubently executor cluster's (an agent with no identity of its own) are whoever serves its executors."
}

variable "push_service_account_email" {
  type        = string
  description = "Identity whose OIDC token Pub/Sub sends to push endpoints (it holds run.invoker on the Cloud Run agents)."
}

variable "command_publishers" {
  type        = map(string)
  description = "Who may publish to agent-commands: static name => IAM member."
  default     = {}
}

variable "command_viewers" {
  type        = map(string)
  description = "Who may read agent-commands' metadata (the health check's topic lookup): static name => IAM member."
  default     = {}
}

variable "event_publishers" {
  type        = map(string)
  description = "Who may publish to agent-events (the agents): static name => IAM member."
  default     = {}
}

variable "event_subscribers" {
  type        = map(string)
  description = "Who may attach a reply inbox of their own to agent-events (the processes that wait for an exec's result): static name => IAM member."
  default     = {}
}

variable "ack_deadline_seconds" {
  type        = number
  description = "Ack deadline of the agent subscriptions; for a push subscription, how long Pub/Sub waits for the agent's answer (max 600)."
  default     = 600
}

variable "message_retention" {
  type        = string
  description = "How long an agent subscription keeps unacked commands (e.g. while its agent is down)."
  default     = "604800s"
}

variable "topic_retention" {
  type        = string
  description = "Topic-level retention (lets a new subscription seek back); null: none."
  default     = null
}

variable "max_delivery_attempts" {
  type        = number
  description = "Deliveries of a command before it goes to the dead-letter topic (5-100)."
  default     = 10
}

variable "labels" {
  type        = map(string)
  description = "Labels on topics and subscriptions."
  default     = {}
}

variable "dead_letter_push" {
  description = "Where the dead-letter subscription pushes dead-lettered commands (the agent_events function's URL), and the identity whose OIDC token it sends (one with run.invoker there). null: they are kept for pulling."
  type = object({
    endpoint              = string
    service_account_email = string
  })
  default = null
}
