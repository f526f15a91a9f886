# Four buckets: session storage (one prefix per session, tether.provision.storage), the
# function source archives, SentinelStacks' image registry (tether.registry.gcs: one object
# per digest, made once with if_generation_match=0, never rewritten or deleted by Tether: its
# grants below create and read objects only), and terminal recordings' parts
# (tether.service.recordings: the same kind of store, written by the relay, out of every
# workspace's reach; deleted by age, the records' retention).

locals {
  buckets = {
    sessions = {
      name               = coalesce(var.sessions_bucket_name, "${var.project_id}-tether-sessions")
      versioning         = var.sessions_versioning
      delete_after_days  = var.sessions_retention_days
      noncurrent_after   = var.sessions_noncurrent_retention_days
      log_bucket_enabled = var.access_log_bucket != null
    }
    sources = {
      name               = coalesce(var.sources_bucket_name, "${var.project_id}-tether-function-sources")
      versioning         = false
      delete_after_days  = 0
      noncurrent_after   = 0
      log_bucket_enabled = var.access_log_bucket != null
    }
    registry = {
      name               = coalesce(var.registry_bucket_name, "${var.project_id}-tether-registry")
      versioning         = false
      delete_after_days  = 0
      noncurrent_after   = 0
      log_bucket_enabled = var.access_log_bucket != null
    }
    recordings = {
      name               = coalesce(var.recordings_bucket_name, "${var.project_id}-tether-recordings")
      versioning         = false
      delete_after_days  = var.recordings_retention_days
      noncurrent_after   = 0
      log_bucket_enabled = var.access_log_bucket != null
    }
  }

  iam = { for g in var.iam : "${g.bucket}/${g.role}/${g.key}" => g }
}

resource "google_storage_bucket" "this" {
  # checkov:skip=CKV_GCP_62: access logs are optional (var.access_log_bucket); Cloud Audit Logs data-access logs are the recommended record on GCS.
  # checkov:skip=CKV_GCP_78: versioning is a choice for sessions (var.sessions_versioning); source archives and registry blobs are content-addressed, each version is its own object (and nobody may overwrite a registry blob).
  for_each = local.buckets

  project                     = var.project_id
  name                        = each.value.name
  location                    = var.location
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy
  labels                      = var.labels

  versioning {
    enabled = each.value.versioning
  }

  dynamic "logging" {
    for_each = each.value.log_bucket_enabled ? [var.access_log_bucket] : []
    content {
      log_bucket        = logging.value
      log_object_prefix = each.key
    }
  }

  dynamic "lifecycle_rule" {
    for_each = each.value.delete_after_days > 0 ? [each.value.delete_after_days] : []
    content {
      condition {
        age = lifecycle_rule.value
      }
      action {
        type = "Delete"
      }
    }
  }

  dynamic "lifecycle_rule" {
    for_each = each.value.versioning && each.value.noncurrent_after > 0 ? [each.value.noncurrent_after] : []
    content {
      condition {
        days_since_noncurrent_time = lifecycle_rule.value
        with_state                 = "ARCHIVED"
      }
      action {
        type = "Delete"
      }
    }
  }
}

resource "google_storage_bucket_iam_member" "this" {
  for_each = local.iam

  bucket = google_storage_bucket.this[each.value.bucket].name
  role   = each.value.role
  member = each.value.member
}
