# Consumers deploy only once the grants below exist (a service that starts before its
# identity may read Firestore would fail its first requests).

output "emails" {
  description = "Service account emails by workload key (api, events, sweeper, scheduler, relay, push, build, agent-<id>)."
  value       = { for k, sa in google_service_account.this : k => sa.email }
  depends_on  = [google_project_iam_member.this, google_service_account_iam_member.this]
}

output "members" {
  description = "IAM members (serviceAccount:<email>) by workload key."
  value       = { for k, sa in google_service_account.this : k => "serviceAccount:${sa.email}" }
  depends_on  = [google_project_iam_member.this, google_service_account_iam_member.this]
}

output "ids" {
  description = "Fully qualified service account names (projects/<p>/serviceAccounts/<email>) by workload key."
  value       = { for k, sa in google_service_account.this : k => sa.name }
  depends_on  = [google_project_iam_member.this, google_service_account_iam_member.this]
}
