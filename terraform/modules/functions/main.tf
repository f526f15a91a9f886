# The function targets of functions/main.py, one Cloud Function (2nd gen) each, all built from
# one source archive: functions/*.py and shared/tether at the archive's root (so `main.py`
# imports `tether`), plus requirements.txt. Adding a target is one line in `local.functions`.

locals {
  # Key = entry point (build_config.entry_point) = the name registered in functions/main.py.
  #   identity: the service account group (api | events | sweeper)
  #   lb:       served through the load balancer (public; the app authenticates)
  #   jwt:      gets TETHER_JWT_SECRET
  #   topic:    CloudEvent target triggered by this Pub/Sub topic (null: an HTTP target)
  #   schedule: Cloud Scheduler calls it on this cron schedule (null: never)
  functions = {
    onmemos     = { memory = "512Mi", cpu = "1", timeout = 3600, concurrency = 40, identity = "api", lb = true, jwt = true, topic = null, schedule = null }
    streamspace = { memory = "512Mi", cpu = "1", timeout = 300, concurrency = 40, identity = "api", lb = true, jwt = true, topic = null, schedule = null }
    kubently    = { memory = "512Mi", cpu = "1", timeout = 300, concurrency = 80, identity = "api", lb = true, jwt = true, topic = null, schedule = null }
    openctrol   = { memory = "512Mi", cpu = "1", timeout = 60, concurrency = 80, identity = "api", lb = true, jwt = true, topic = null, schedule = null }
    # A chat turn (POST /v1/agents/{id}/conversations/{id}/messages) waits for the model and
    # the tools it calls; an image push holds up to TETHER_REGISTRY_MAX_BYTES in memory.
    sentinelstacks = { memory = "1Gi", cpu = "1", timeout = 300, concurrency = 40, identity = "api", lb = true, jwt = true, topic = null, schedule = null }
    health         = { memory = "256Mi", cpu = "1", timeout = 30, concurrency = 80, identity = "api", lb = true, jwt = true, topic = null, schedule = null }
    sweeper        = { memory = "256Mi", cpu = "1", timeout = 300, concurrency = 1, identity = "sweeper", lb = false, jwt = false, topic = null, schedule = var.sweeper_schedule }
    agent_events   = { memory = "256Mi", cpu = "1", timeout = 120, concurrency = 8, identity = "events", lb = false, jwt = false, topic = "agent-events", schedule = null }
  }

  # Per-target overrides from the caller (memory, timeout, instance counts).
  settings = {
    for name, f in local.functions : name => merge(
      { min_instances = 0, max_instances = var.max_instances },
      f,
      try({ for k, v in var.overrides[name] : k => v if v != null }, {}),
    )
  }

  http_functions  = { for name, f in local.settings : name => f if f.topic == null }
  event_functions = { for name, f in local.settings : name => f if f.topic != null }
  lb_functions    = { for name, f in local.settings : name => f if f.lb }
  scheduled       = { for name, f in local.settings : name => f if f.schedule != null }

  env = {
    TETHER_STORE              = "firestore"
    TETHER_BUS                = "pubsub"
    GOOGLE_CLOUD_PROJECT      = var.project_id
    TETHER_PUBLIC_URL         = var.public_url
    TETHER_HOME               = "/tmp/tether" # the only writable place; nothing is kept there
    TETHER_FIRESTORE_DATABASE = var.firestore_database
  }

  # What only some targets get, by entry point: SentinelStacks' registry (Cloud Storage) and
  # language model; OnMemOS's terminal recordings (Cloud Storage).
  extra_env = {
    onmemos = var.recordings_env
    sentinelstacks = merge(
      var.model_env,
      { TETHER_REGISTRY_URL = var.registry_url },
      var.registry_max_bytes == null ? {} : { TETHER_REGISTRY_MAX_BYTES = tostring(var.registry_max_bytes) },
    )
  }
  # Targets that call the language model, hence get its API key (when there is one).
  model_functions = ["sentinelstacks"]

  # The archive: path inside the zip => file in the repository.
  source_files = merge(
    { for f in fileset("${var.source_root}/functions", "*.py") : f => "${var.source_root}/functions/${f}" },
    { for f in fileset("${var.source_root}/shared", "tether/**/*.py") : f => "${var.source_root}/shared/${f}" },
    # The reference pages' script, vendored from npm by `make install` (run before an apply).
    { for f in fileset("${var.source_root}/shared", "tether/surfaces/static/*") : f => "${var.source_root}/shared/${f}" },
    { "requirements.txt" = "${var.source_root}/requirements.txt" },
  )
  # Named by content, so a change of any file (and only that) redeploys the functions.
  source_hash = substr(sha256(join("\n", [for path in sort(keys(local.source_files)) : "${path}=${filesha256(local.source_files[path])}"])), 0, 16)
}

data "archive_file" "source" {
  type        = "zip"
  output_path = "${path.root}/.build/functions-${local.source_hash}.zip"

  dynamic "source" {
    for_each = local.source_files
    content {
      filename = source.key
      content  = file(source.value)
    }
  }
}

resource "google_storage_bucket_object" "source" {
  name         = "functions/${local.source_hash}.zip"
  bucket       = var.source_bucket
  source       = data.archive_file.source.output_path
  content_type = "application/zip"
}

resource "google_cloudfunctions2_function" "this" {
  for_each = local.settings

  project     = var.project_id
  location    = var.region
  name        = "tether-${replace(each.key, "_", "-")}"
  description = "Tether target ${each.key} (functions/main.py)"
  labels      = var.labels

  build_config {
    runtime         = "python311"
    entry_point     = each.key
    service_account = var.build_service_account_id
    source {
      storage_source {
        bucket = google_storage_bucket_object.source.bucket
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    available_memory                 = each.value.memory
    available_cpu                    = each.value.cpu
    timeout_seconds                  = each.value.timeout
    max_instance_request_concurrency = each.value.concurrency
    min_instance_count               = each.value.min_instances
    max_instance_count               = each.value.max_instances
    # HTTP targets: through the load balancer (lb = true) or Google-internal callers (Cloud
    # Scheduler for the sweeper), never directly from the internet; event targets: Eventarc.
    ingress_settings               = each.value.topic == null ? "ALLOW_INTERNAL_AND_GCLB" : "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision = true
    service_account_email          = var.service_accounts[each.value.identity]
    environment_variables          = merge(local.env, lookup(local.extra_env, each.key, {}))

    dynamic "secret_environment_variables" {
      for_each = each.value.jwt ? [var.jwt_secret_id] : []
      content {
        key        = "TETHER_JWT_SECRET"
        project_id = var.project_id
        secret     = secret_environment_variables.value
        version    = "latest"
      }
    }

    dynamic "secret_environment_variables" {
      for_each = contains(local.model_functions, each.key) && var.model_api_key_secret_id != null ? [var.model_api_key_secret_id] : []
      content {
        key        = "TETHER_MODEL_API_KEY"
        project_id = var.project_id
        secret     = secret_environment_variables.value
        version    = "latest"
      }
    }
  }

  # Event targets: Eventarc creates the push subscription on the topic; raising in the
  # target redelivers.
  dynamic "event_trigger" {
    for_each = each.value.topic == null ? [] : [each.value.topic]
    content {
      trigger_region        = var.region
      event_type            = "google.cloud.pubsub.topic.v1.messagePublished"
      pubsub_topic          = var.topic_ids[event_trigger.value]
      retry_policy          = "RETRY_POLICY_RETRY"
      service_account_email = var.service_accounts[each.value.identity]
    }
  }
}

# A 2nd gen function is a Cloud Run service of the same name: invocation is run.invoker on it.
resource "google_cloud_run_v2_service_iam_member" "public" {
  # checkov:skip=CKV_GCP_102: the API functions are public by design behind the load balancer (ingress internal + GCLB); they authenticate every request themselves (API key or JWT).
  for_each = local.lb_functions

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.this[each.key].name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

# The sweeper: only Cloud Scheduler's identity may call it.
resource "google_cloud_run_v2_service_iam_member" "scheduler" {
  for_each = local.scheduled

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.this[each.key].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${var.service_accounts["scheduler"]}"
}

# CloudEvent targets: the trigger's identity delivers the events.
resource "google_cloud_run_v2_service_iam_member" "trigger" {
  for_each = local.event_functions

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.this[each.key].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${var.service_accounts[each.value.identity]}"
}

resource "google_cloud_scheduler_job" "this" {
  for_each = local.scheduled

  project          = var.project_id
  region           = var.region
  name             = "tether-${replace(each.key, "_", "-")}"
  description      = "Calls the ${each.key} function (expire sessions, republish commands, mark agents offline)"
  schedule         = each.value.schedule
  time_zone        = "Etc/UTC"
  attempt_deadline = "${each.value.timeout}s"

  retry_config {
    retry_count = 0 # the next run comes within the minute
  }

  http_target {
    http_method = "POST"
    uri         = google_cloudfunctions2_function.this[each.key].service_config[0].uri

    oidc_token {
      service_account_email = var.service_accounts["scheduler"]
      audience              = google_cloudfunctions2_function.this[each.key].service_config[0].uri
    }
  }

  depends_on = [google_cloud_run_v2_service_iam_member.scheduler]
}
