# Service accounts (one per workload) and the few grants that cannot be scoped to a single
# resource. Grants on a topic, bucket, secret or service live in the module that owns that
# resource; this module only hands out identities.
#
# Keys of every for_each below are static names ("api", "agent-gke", ...), never emails:
# emails are only known after apply.

locals {
  workloads = merge(
    {
      api       = "Tether API functions (every API surface, health)"
      events    = "Tether agent_events function and its Eventarc trigger"
      sweeper   = "Tether sweeper function"
      scheduler = "Cloud Scheduler: invokes the sweeper"
      relay     = "Tether WebSocket relay (Cloud Run)"
      push      = "Pub/Sub push identity: invokes the Cloud Run agents"
      build     = "Cloud Build identity for building the functions"
    },
    { for id, agent in var.agents : "agent-${id}" => "Tether agent ${id} (${agent.platform})" },
  )

  cloud_run_agents = [for id, agent in var.agents : "agent-${id}" if agent.platform == "cloud_run"]
  # The workloads that serve requests or commands.
  serving = concat(["api", "events", "sweeper", "relay"], [for id, _ in var.agents : "agent-${id}"])

  # Project-level roles. Everything here either has no narrower resource (Firestore has no
  # per-collection IAM) or targets resources created at runtime (see the comments).
  project_roles = concat(
    # Agents too: their journal (exactly-once across instances) is in Firestore.
    [for sa in local.serving : { sa = sa, role = "roles/datastore.user" }],
    # Every workload writes its spans to Cloud Trace (tether.tracing; a trace has no
    # narrower resource).
    [for sa in local.serving : { sa = sa, role = "roles/cloudtrace.agent" }],
    # The Eventarc trigger of agent_events receives events as this identity.
    [{ sa = "events", role = "roles/eventarc.eventReceiver" }],
    [
      # Building a function: write logs, push the image, read the uploaded source.
      { sa = "build", role = "roles/logging.logWriter" },
      { sa = "build", role = "roles/artifactregistry.writer" },
      { sa = "build", role = "roles/storage.objectViewer" },
    ],
    # A Cloud Run agent creates, scales and deletes one Cloud Run service per workspace at
    # runtime (names unknown to Terraform, so no resource-level binding is possible) and calls
    # each with an ID token. roles/run.developer cannot set a service's IAM policy, which the
    # agent needs to let the relay invoke the workspace; hence roles/run.admin, on this
    # project only. Tighten with an IAM condition on the service name prefix if your org
    # policy allows it.
    [for sa in local.cloud_run_agents : { sa = sa, role = "roles/run.admin" }],
    # A Cloud Run agent makes one service account per workspace and runs the workspace as it
    # (tether.provision.cloudrun): exactly the permissions of the role below.
    [for sa in local.cloud_run_agents : { sa = sa, role = google_project_iam_custom_role.workspace_identities.id }],
    # The relay splices WebSockets to workspace services that agents create at runtime.
    # Set relay_project_invoker = false when the agent grants run.invoker per service.
    var.relay_project_invoker ? [{ sa = "relay", role = "roles/run.invoker" }] : [],
    # SentinelStacks' chat turns call Gemini on Vertex AI (a model endpoint has no IAM of its
    # own): the sentinelstacks function (api) and the chat WebSocket (relay).
    [for sa in var.vertex_ai_users : { sa = sa, role = "roles/aiplatform.user" }],
  )

  # Grants on the service accounts themselves.
  sa_roles = concat(
    # Pub/Sub mints OIDC tokens for push subscriptions (the Cloud Run agents) and for the
    # Eventarc trigger of agent_events. Needed explicitly on projects created before 2021-04.
    [for sa in ["push", "events"] : {
      target = sa, role = "roles/iam.serviceAccountTokenCreator", key = "pubsub-agent"
      member = "serviceAccount:service-${var.project_number}@gcp-sa-pubsub.iam.gserviceaccount.com"
    }],
    # GKE and cluster agents: Workload Identity, the Kubernetes service account acts as the
    # Google one (a cluster agent's: tether-cluster-agent/agent-<cluster id>, one per cluster).
    [for id, agent in var.agents : {
      target = "agent-${id}", role = "roles/iam.workloadIdentityUser", key = "k8s"
      member = "serviceAccount:${var.project_id}.svc.id.goog[${agent.k8s_service_account}]"
    } if contains(["gke", "cluster"], agent.platform) && agent.k8s_service_account != null],
  )
}

# What a Cloud Run agent needs to give each workspace an identity of its own
# (tether-ws-<hash>, no role but its storage prefix, granted on the prefix) and deploy the
# workspace as it, and nothing else: no key, no policy, no role on the project. actAs cannot
# be scoped to those accounts (IAM conditions do not apply to service accounts), so in this
# project it reaches every service account; the agent already holds roles/run.admin here.
# Workspace identities have no shared one to fall back on: GKE workspaces have none at all.
resource "google_project_iam_custom_role" "workspace_identities" {
  project     = var.project_id
  role_id     = "tetherWorkspaceIdentities"
  title       = "Tether workspace identities"
  description = "Create and delete per-workspace service accounts, and run workspaces as them."
  permissions = [
    "iam.serviceAccounts.actAs",
    "iam.serviceAccounts.create",
    "iam.serviceAccounts.delete",
    "iam.serviceAccounts.get",
  ]
}

# Each API and relay instance makes its own reply inbox on agent-events at start and deletes
# it when it stops (tether.bus.pubsub): subscriptions whose names Terraform cannot know, so
# the grant is on the project, held by a condition to the inboxes' name prefix.
resource "google_project_iam_custom_role" "reply_inboxes" {
  project     = var.project_id
  role_id     = "tetherReplyInboxes"
  title       = "Tether reply inboxes"
  description = "Make, read from and delete a process's own reply inbox subscription."
  permissions = [
    "pubsub.subscriptions.consume",
    "pubsub.subscriptions.create",
    "pubsub.subscriptions.delete",
  ]
}

resource "google_project_iam_member" "reply_inboxes" {
  for_each = toset(["api", "relay"])

  project = var.project_id
  role    = google_project_iam_custom_role.reply_inboxes.id
  member  = "serviceAccount:${google_service_account.this[each.value].email}"

  condition {
    title      = "tether-inbox subscriptions only"
    expression = "resource.name.startsWith(\"projects/${var.project_id}/subscriptions/tether-inbox-\")"
  }
}

resource "google_service_account" "this" {
  for_each = local.workloads

  project      = var.project_id
  account_id   = "tether-${each.key}"
  display_name = each.value
}

resource "google_project_iam_member" "this" {
  for_each = { for g in local.project_roles : "${g.sa}/${g.role}" => g }

  project = var.project_id
  role    = each.value.role
  member  = "serviceAccount:${google_service_account.this[each.value.sa].email}"
}

resource "google_service_account_iam_member" "this" {
  for_each = { for g in local.sa_roles : "${g.target}/${g.role}/${g.key}" => g }

  service_account_id = google_service_account.this[each.value.target].name
  role               = each.value.role
  member             = each.value.member
}
