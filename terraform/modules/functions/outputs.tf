output "entry_points" {
  description = "Entry points deployed (the keys of local.functions)."
  value       = keys(local.functions)
}

output "urls" {
  description = "URL of each HTTP function, by entry point (ingress is internal + load balancer)."
  value       = { for name, f in local.http_functions : name => google_cloudfunctions2_function.this[name].service_config[0].uri }
}

output "event_urls" {
  description = "URL of each CloudEvent function, by entry point (a push subscription's endpoint)."
  value       = { for name, f in local.event_functions : name => google_cloudfunctions2_function.this[name].service_config[0].uri }
}

output "lb_services" {
  description = "Cloud Run service name of each function served by the load balancer, by entry point."
  value       = { for name, f in local.lb_functions : name => google_cloudfunctions2_function.this[name].name }
}

output "function_names" {
  description = "Cloud Function name of every target, by entry point."
  value       = { for name, f in google_cloudfunctions2_function.this : name => f.name }
}

output "source_object" {
  description = "gs:// path of the source archive the functions were built from."
  value       = "gs://${google_storage_bucket_object.source.bucket}/${google_storage_bucket_object.source.name}"
}
