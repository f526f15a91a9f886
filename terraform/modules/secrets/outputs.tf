output "jwt_secret_id" {
  description = "Secret id of the JWT secret (available once its accessors are granted, so consumers deploy after the grant)."
  value       = google_secret_manager_secret.jwt.secret_id
  depends_on  = [google_secret_manager_secret_iam_member.jwt_accessor]
}

output "jwt_secret_name" {
  description = "Full resource name of the JWT secret (projects/<number>/secrets/<id>)."
  value       = google_secret_manager_secret.jwt.name
}

output "model_api_key_secret_id" {
  description = "Secret id of the model API key (null: none), available once its accessors are granted."
  value       = one(google_secret_manager_secret.model_api_key[*].secret_id)
  depends_on  = [google_secret_manager_secret_iam_member.model_api_key_accessor]
}

output "runtime_key_secret_id" {
  description = "Id of the runtime key's secret, once its accessors may read it."
  value       = google_secret_manager_secret.runtime_key.secret_id
  depends_on  = [google_secret_manager_secret_iam_member.runtime_key_accessor]
}
