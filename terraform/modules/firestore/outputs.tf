output "database_name" {
  description = "Firestore database id the Store uses."
  value       = local.database
}

output "composite_indexes" {
  description = "Composite indexes declared (collection => fields), to compare with tether.store.indexes."
  value       = local.composite_indexes
}

output "ttl_collections" {
  description = "Collections with a TTL policy on expires_at."
  value       = local.ttl_collections
}

output "retained_collections" {
  description = "Collections with a TTL policy on another field (purge_at), by collection: what the sweeper keeps a while after it ends."
  value       = local.retained
}
