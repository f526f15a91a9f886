# The Firestore database of the Store (tether.store.firestore), its composite indexes and the
# TTL policies of the records that are worthless once expired.

locals {
  # Must list exactly tether.store.indexes.COMPOSITE_INDEXES: the Firestore adapter refuses a
  # query whose composite index is not declared there, and Firestore refuses it without this.
  # One entry per index; fields in order.
  composite_indexes = [
    {
      collection = "users" # Users.page: role == ?, order by username
      fields = [
        { field_path = "role", order = "ASCENDING" },
        { field_path = "username", order = "ASCENDING" },
      ]
    },
    {
      collection = "sessions" # Sessions.expire: state in (live states), expires_at <= now
      fields = [
        { field_path = "state", order = "ASCENDING" },
        { field_path = "expires_at", order = "ASCENDING" },
      ]
    },
  ]

  # tether.service.sweeper.EXPIRING_KINDS and tether.agent.journal.EXPIRING: Firestore deletes
  # these documents once their `expires_at` has passed (the sweeper purges the first ones too,
  # for the local store).
  ttl_field       = "expires_at"
  ttl_collections = ["revoked_tokens", "rate_limits", "tickets", "commands", "idempotency", "agent_journal", "agent_stopped"]
  # tether.service.sweeper.RETAINED: kept a while after they end, until this field's time.
  retained = { sessions = "purge_at" }

  database = var.create_database ? google_firestore_database.this[0].name : var.database_name
}

resource "google_firestore_database" "this" {
  count = var.create_database ? 1 : 0

  project                           = var.project_id
  name                              = var.database_name
  location_id                       = var.location
  type                              = "FIRESTORE_NATIVE"
  app_engine_integration_mode       = "DISABLED"
  point_in_time_recovery_enablement = var.point_in_time_recovery ? "POINT_IN_TIME_RECOVERY_ENABLED" : "POINT_IN_TIME_RECOVERY_DISABLED"
  delete_protection_state           = var.delete_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"
  deletion_policy                   = var.delete_protection ? "ABANDON" : "DELETE"
}

resource "google_firestore_index" "composite" {
  for_each = {
    for index in local.composite_indexes :
    "${index.collection}:${join(",", [for f in index.fields : "${f.field_path}:${f.order}"])}" => index
  }

  project     = var.project_id
  database    = local.database
  collection  = each.value.collection
  query_scope = "COLLECTION"

  dynamic "fields" {
    for_each = each.value.fields
    content {
      field_path = fields.value.field_path
      order      = fields.value.order
    }
  }
}

resource "google_firestore_field" "ttl" {
  for_each = merge({ for c in local.ttl_collections : c => local.ttl_field }, local.retained)

  project    = var.project_id
  database   = local.database
  collection = each.key
  field      = each.value

  # An empty block turns the TTL policy on for this field.
  ttl_config {}

  # Keep the automatic single-field indexes: the sweeper queries `<field> <= now`.
  index_config {
    indexes {
      order       = "ASCENDING"
      query_scope = "COLLECTION"
    }
    indexes {
      order       = "DESCENDING"
      query_scope = "COLLECTION"
    }
  }
}
