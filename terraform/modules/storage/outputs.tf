output "sessions_bucket" {
  description = "Name of the session storage bucket."
  value       = google_storage_bucket.this["sessions"].name
}

output "sources_bucket" {
  description = "Name of the function sources bucket."
  value       = google_storage_bucket.this["sources"].name
}
