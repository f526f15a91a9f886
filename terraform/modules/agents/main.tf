# Agents. A `cloud_run` agent is a Cloud Run service here: Pub/Sub pushes its commands to it
# and it creates one Cloud Run service per workspace. A `gke` agent is a Deployment in a
# cluster, and so is a `cluster` agent (Kubently's kubectl, in the cluster it reads); their
# manifests live outside Terraform (infra/k8s/): this module only states their settings.

locals {
  cloud_run_agents = { for id, agent in var.agents : id => agent if agent.platform == "cloud_run" }
  gke_agents       = { for id, agent in var.agents : id => agent if agent.platform == "gke" }

  # What every agent (`python -m tether.agent`) gets, whatever its platform: tether.settings
  # reads them all. The store holds the agent's journal, shared by its instances.
  common_env = {
    TETHER_STORE              = "firestore"
    TETHER_BUS                = "pubsub"
    GOOGLE_CLOUD_PROJECT      = var.project_id
    TETHER_REGION             = var.region
    TETHER_HOME               = "/tmp/tether"
    TETHER_HEARTBEAT_INTERVAL = tostring(var.heartbeat_interval)
  }

  # What agents that start workspaces need besides; a cluster agent runs kubectl only.
  workspace_env = {
    TETHER_WORKSPACE_IMAGE = var.workspace_image
    TETHER_SESSIONS_BUCKET = var.sessions_bucket
  }

  env = {
    for id, agent in var.agents : id => merge(
      local.common_env,
      { for name, value in local.workspace_env : name => value if agent.platform != "cluster" },
      {
        TETHER_AGENT_ID = id
        TETHER_PLATFORM = agent.platform
      },
    )
  }
}

resource "google_cloud_run_v2_service" "agent" {
  for_each = local.cloud_run_agents

  project             = var.project_id
  name                = "tether-agent-${each.key}"
  location            = var.region
  description         = "Tether agent ${each.key}: receives agent-commands-${each.key} by Pub/Sub push"
  labels              = var.labels
  deletion_protection = false # stateless: its journal is a cache, Pub/Sub holds the work

  # Only Google-internal callers (Pub/Sub push in this project), and of those only the push
  # identity has run.invoker (below).
  ingress = "INGRESS_TRAFFIC_INTERNAL_ONLY"

  template {
    service_account = var.agent_service_accounts[each.key]
    # A push request lasts as long as the command (a workspace start can take minutes); it
    # must outlive the subscription's ack deadline.
    timeout                          = "${var.request_timeout}s"
    max_instance_request_concurrency = var.concurrency

    # All its traffic through the VPC: workspace services take internal traffic only.
    vpc_access {
      network_interfaces {
        network    = var.vpc_network
        subnetwork = var.vpc_subnetwork
      }
      egress = "ALL_TRAFFIC"
    }

    scaling {
      # The agent heartbeats between commands: one instance stays up with CPU always on, or
      # the control plane marks it offline. One at most: the command journal is per instance.
      min_instance_count = var.min_instances
      max_instance_count = var.max_instances
    }

    containers {
      image = var.agent_image

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = var.cpu
          memory = var.memory
        }
        cpu_idle          = false
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = local.env[each.key]
        content {
          name  = env.key
          value = env.value
        }
      }
    }
  }

  traffic {
    type    = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
    percent = 100
  }
}

# Only the push identity may invoke an agent.
resource "google_cloud_run_v2_service_iam_member" "push_invoker" {
  for_each = local.cloud_run_agents

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.agent[each.key].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${var.push_service_account_email}"
}
