# The Firestore database of the Store (tether.store.firestore), its composite indexes and the
# TTL policies of the records that are worthless once expired.

locals {
  # tether.store.indexes.COMPOSITE_INDEXES, written by `python -m tether.store.indexes` (a test
  # keeps the file equal to the code): the Firestore adapter refuses a query whose composite
  # index is not declared there, and Firestore refuses it without this.
  composite_indexes = jsondecode(file("${path.module}/indexes.json"))

  # tether.service.sweeper.EXPIRING_KINDS and tether.agent.journal.EXPIRING: Firestore deletes
  # these documents once their `expires_at` has passed (the sweeper purges the first ones too,
  # for the local store).
  ttl_field       = "expires_at"
  ttl_collections = ["revoked_tokens", "rate_limits", "tickets", "commands", "idempotency", "agent_journal", "agent_stopped", "kubectl_runs"]
  # tether.service.sweeper.RETAINED: kept a while after they end, until this field's time
  # (the ai_* kinds: SentinelStacks' agents and their conversations, messages and events;
  # audit_log: every surface's audit log, kept for TETHER_AUDIT_RETENTION; session_events and
  # webhook_deliveries: expiry warnings and their webhooks' outbox).
  retained = {
    sessions           = "purge_at"
    audit_log          = "purge_at"
    debug_sessions     = "purge_at"
    desktop_sessions   = "purge_at"
    ai_agents          = "purge_at"
    ai_conversations   = "purge_at"
    ai_messages        = "purge_at"
    ai_events          = "purge_at"
    session_events     = "purge_at"
    webhook_deliveries = "purge_at"
    # Terminal recordings, their parts' index and the pointer to the one recording now.
    recordings      = "purge_at"
    recording_parts = "purge_at"
    recording_on    = "purge_at"
  }

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
    "${index.collection}:${join(",", [for f in index.fields : "${f.field_path}:${lookup(f, "order", lookup(f, "array_config", ""))}"])}" => index
  }

  project     = var.project_id
  database    = local.database
  collection  = each.value.collection
  query_scope = "COLLECTION"

  dynamic "fields" {
    for_each = each.value.fields
    content {
      field_path   = fields.value.field_path
      order        = lookup(fields.value, "order", null)
      array_config = lookup(fields.value, "array_config", null)
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
