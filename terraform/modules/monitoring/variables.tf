variable "project_id" {
  type        = string
  description = "Project of the alert policies, the log-based metric and the dashboard."
}

variable "notification_channels" {
  type        = list(string)
  description = "Notification channels every alert policy notifies (projects/<project>/notificationChannels/<id>). Empty: incidents open in the console only."
  default     = []

  validation {
    condition     = alltrue([for c in var.notification_channels : can(regex("^projects/[^/]+/notificationChannels/[^/]+$", c))])
    error_message = "A notification channel is its full name: projects/<project>/notificationChannels/<id>."
  }
}

variable "function_services" {
  type        = map(string)
  description = "Cloud Run service name of every function, by entry point (a 2nd gen function runs as the Cloud Run service of its name)."
}

variable "relay_services" {
  type        = map(string)
  description = "Cloud Run service name of each relay (relay, desktop_relay)."
  default     = {}
}

variable "dead_letter_subscription" {
  type        = string
  description = "The subscription of the commands' dead-letter topic (agent-commands-dead-letter)."
}

variable "command_subscriptions" {
  type        = map(string)
  description = "The agent-commands-<id> subscription of each agent and Kubently executor cluster, by id."
  default     = {}
}

variable "error_ratio" {
  type        = number
  description = "Share of a service's requests answered 5xx, over error_window_minutes, above which its alert opens (0.05: 5 %)."
  default     = 0.05

  validation {
    condition     = var.error_ratio > 0 && var.error_ratio < 1
    error_message = "error_ratio is a share between 0 and 1 (exclusive)."
  }
}

variable "error_window_minutes" {
  type        = number
  description = "Window over which a service's 5xx share is measured (whole minutes)."
  default     = 5

  validation {
    condition     = var.error_window_minutes >= 1 && floor(var.error_window_minutes) == var.error_window_minutes
    error_message = "error_window_minutes is a whole number of minutes, at least 1."
  }
}

variable "dead_letter_minutes" {
  type        = number
  description = "Minutes the dead-letter subscription may hold a command before its alert opens."
  default     = 5

  validation {
    condition     = var.dead_letter_minutes >= 1 && floor(var.dead_letter_minutes) == var.dead_letter_minutes
    error_message = "dead_letter_minutes is a whole number of minutes, at least 1."
  }
}

variable "command_age_seconds" {
  type        = number
  description = "Age (seconds) of the oldest unacknowledged command in an agent's subscription above which its alert opens."
  default     = 300

  validation {
    condition     = var.command_age_seconds >= 60
    error_message = "command_age_seconds is at least 60 (Pub/Sub reports the age once a minute)."
  }
}

variable "offline_window_minutes" {
  type        = number
  description = "Window (whole minutes) in which one agent_offline log entry opens the agents-offline alert; the incident closes once a window passes without one."
  default     = 10

  validation {
    condition     = var.offline_window_minutes >= 1 && floor(var.offline_window_minutes) == var.offline_window_minutes
    error_message = "offline_window_minutes is a whole number of minutes, at least 1."
  }
}

variable "labels" {
  type        = map(string)
  description = "User labels on the alert policies."
  default     = {}
}
