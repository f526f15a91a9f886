# The JWT signing secret (HS256). Terraform owns the secret container and who may read it;
# the value is added outside Terraform so it never lands in the state:
#
#   python3 -c 'import secrets; print(secrets.token_hex(32), end="")' \
#     | gcloud secrets versions add tether-jwt-secret --data-file=-
#
# (cloudbuild.yaml does this once, when the secret has no version yet.)
#
# The same for the key workspace runtimes' tokens are derived from (TETHER_RUNTIME_KEY):
# the relay holds it, and GKE agents get a copy as a Kubernetes Secret (infra/k8s/README.md).
# It is not the JWT secret, which the agents must not hold.
#
# And, when var.model_api_key_secret_id is set, the API key of SentinelStacks' model endpoint
# (TETHER_MODEL_API_KEY), its value added the same way (the key, with no newline).

resource "google_secret_manager_secret" "jwt" {
  project   = var.project_id
  secret_id = var.jwt_secret_id
  labels    = var.labels

  replication {
    auto {}
  }
}

resource "google_secret_manager_secret_iam_member" "jwt_accessor" {
  for_each = var.accessors

  project   = var.project_id
  secret_id = google_secret_manager_secret.jwt.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = each.value
}

resource "google_secret_manager_secret" "runtime_key" {
  project   = var.project_id
  secret_id = var.runtime_key_secret_id
  labels    = var.labels

  replication {
    auto {}
  }
}

resource "google_secret_manager_secret_iam_member" "runtime_key_accessor" {
  for_each = var.runtime_key_accessors

  project   = var.project_id
  secret_id = google_secret_manager_secret.runtime_key.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = each.value
}

resource "google_secret_manager_secret" "model_api_key" {
  count = var.model_api_key_secret_id == null ? 0 : 1

  project   = var.project_id
  secret_id = var.model_api_key_secret_id
  labels    = var.labels

  replication {
    auto {}
  }
}

resource "google_secret_manager_secret_iam_member" "model_api_key_accessor" {
  for_each = { for name, member in var.accessors : name => member if var.model_api_key_secret_id != null }

  project   = var.project_id
  secret_id = google_secret_manager_secret.model_api_key[0].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = each.value
}
