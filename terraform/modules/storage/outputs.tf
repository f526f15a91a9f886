output "sessions_bucket" {
  description = "Name of the session storage bucket."
  value       = google_storage_bucket.this["sessions"].name
}

output "sources_bucket" {
  description = "Name of the function sources bucket."
  value       = google_storage_bucket.this["sources"].name
}

output "registry_bucket" {
  description = "Name of SentinelStacks' image registry bucket (TETHER_REGISTRY_URL = gs://<name>/images)."
  value       = google_storage_bucket.this["registry"].name
}

output "recordings_bucket" {
  description = "Name of the terminal recordings' bucket (TETHER_RECORDINGS_URL = gs://<name>/casts)."
  value       = google_storage_bucket.this["recordings"].name
}
