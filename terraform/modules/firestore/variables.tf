variable "project_id" {
  type        = string
  description = "Project of the database."
}

variable "database_name" {
  type        = string
  description = "Firestore database id. The code uses \"(default)\" unless told otherwise (see TETHER_FIRESTORE_DATABASE in the README of terraform/)."
  default     = "(default)"
}

variable "location" {
  type        = string
  description = "Firestore location (a region such as europe-west1, or a multi-region such as eur3). Cannot change after creation."
}

variable "create_database" {
  type        = bool
  description = "Create the database. False when it exists already (e.g. a project that used Firestore before); indexes and TTL policies are still managed."
  default     = true
}

variable "point_in_time_recovery" {
  type        = bool
  description = "Keep 7 days of point-in-time recovery."
  default     = true
}

variable "delete_protection" {
  type        = bool
  description = "Protect the database from deletion (and abandon it, rather than delete it, on `terraform destroy`)."
  default     = true
}
