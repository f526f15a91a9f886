output "api_url" {
  description = "Base URL of every API surface (TETHER_URL for the CLI and SDK)."
  value       = local.public_url
}

output "websocket_url" {
  description = "Origin of the relay's WebSockets (same host as the API)."
  value       = "wss://${local.host}"
}

output "relay_url" {
  description = "The relay's own Cloud Run URL (load-balancer ingress only; clients use websocket_url)."
  value       = module.relay.url
}

output "lb_ip_address" {
  description = "IPv4 address of the load balancer: point the domain's DNS A record at it."
  value       = module.lb.ip_address
}

output "function_urls" {
  description = "URL of each HTTP function by entry point (ingress: internal + load balancer)."
  value       = module.functions.urls
}

output "sessions_bucket" {
  description = "Session storage bucket."
  value       = module.storage.sessions_bucket
}

output "registry_bucket" {
  description = "SentinelStacks' image registry bucket (the sentinelstacks function's TETHER_REGISTRY_URL is gs://<it>/images)."
  value       = module.storage.registry_bucket
}

output "registry_url" {
  description = "TETHER_REGISTRY_URL of the sentinelstacks function."
  value       = local.registry_url
}

output "model" {
  description = "The language model SentinelStacks' agents call, as the sentinelstacks function and the relay are told (TETHER_MODEL_*; api_key_secret: the Secret Manager id of TETHER_MODEL_API_KEY, null: none; add its value before the full apply, see README.md)."
  value = {
    env            = local.model_env
    api_key_secret = module.secrets.model_api_key_secret_id
  }

  precondition {
    condition     = var.model_provider != "openai" || var.model_base_url != ""
    error_message = "model_provider = \"openai\" needs model_base_url (the OpenAI-compatible endpoint)."
  }
}

output "function_source_bucket" {
  description = "Bucket holding the function source archives."
  value       = module.storage.sources_bucket
}

output "topics" {
  description = "Pub/Sub topics: commands, events, dead_letter."
  value       = module.pubsub.topic_names
}

output "agent_subscriptions" {
  description = "The agent-commands-<agent_id> subscription of each agent (and of each Kubently executor cluster)."
  value       = module.pubsub.agent_subscriptions
}

output "cloud_run_agent_urls" {
  description = "Service URL of each Cloud Run agent."
  value       = module.agents.cloud_run_urls
}

output "gke_agents" {
  description = "What a GKE agent's Deployment needs: its Google service account (annotate the Kubernetes one with it), its subscription and its environment."
  value = {
    for id in module.agents.gke_agent_ids : id => {
      google_service_account = module.iam.emails["agent-${id}"]
      k8s_service_account    = var.agents[id].k8s_service_account
      subscription           = module.pubsub.agent_subscriptions[id]
      # Where its workspaces' Services are named (the relay resolves them there).
      env = merge(module.agents.env[id], { TETHER_GKE_CLUSTER_DOMAIN = var.gke_cluster.dns_domain })
    }
  }
}

output "gke" {
  description = "The GKE workspaces' cluster (null when Terraform makes none) and what infra/k8s needs of it: CONTROL_PLANE_IP (endpoint), RELAY_CIDR (relay_cidr), the agent's TETHER_GKE_CLUSTER_DOMAIN (dns_domain) and the secret holding TETHER_RUNTIME_KEY."
  value = length(module.gke) == 0 ? null : {
    cluster            = module.gke[0].cluster
    endpoint           = module.gke[0].endpoint
    dns_domain         = module.gke[0].dns_domain
    relay_cidr         = module.gke[0].relay_cidr
    runtime_key_secret = module.secrets.runtime_key_secret_id
  }
}

output "kubently_cluster_agents" {
  description = "What each Kubently cluster's agent Deployment (infra/k8s/cluster-agent/) needs, by cluster id: its Google service account (the Kubernetes one's iam.gke.io/gcp-service-account), its Kubernetes service account, its subscription and its environment."
  value = {
    for id in var.kubently_clusters : id => {
      google_service_account = module.iam.emails["agent-${id}"]
      k8s_service_account    = local.cluster_agents[id].k8s_service_account
      subscription           = module.pubsub.agent_subscriptions[id]
      env                    = module.agents.env[id]
    }
  }

  # A cluster's agent id is the cluster id: one that is also an id of `agents` would be the
  # same agent twice (one subscription, one identity).
  precondition {
    condition     = length(setintersection(keys(var.agents), var.kubently_clusters)) == 0
    error_message = "A kubently_clusters id is an agent id: it must not also be a key of agents."
  }
}

output "kubently_executor_clusters" {
  description = "The subscription of each Kubently executor cluster, by cluster id: the kubently function (GET /agent/commands) and the relay (GET /executor/stream) pull it for the cluster's executors."
  value       = { for id in var.kubently_executor_clusters : id => module.pubsub.agent_subscriptions[id] }

  # An executor cluster has no agent: an id that is also an agent's would be one subscription
  # read both by that agent and for the executors, each taking the other's commands.
  precondition {
    condition     = length(setintersection(var.kubently_executor_clusters, setunion(keys(var.agents), var.kubently_clusters))) == 0
    error_message = "A kubently_executor_clusters id must not also be a key of agents or a kubently_clusters id (one subscription per id: an agent's or its executors')."
  }
}

output "service_accounts" {
  description = "Service account emails by workload."
  value       = module.iam.emails
}

output "jwt_secret" {
  description = "Secret Manager id of the JWT secret (add a version before the first full apply, see README.md)."
  value       = module.secrets.jwt_secret_id
}

output "firestore_database" {
  description = "Firestore database id."
  value       = module.firestore.database_name
}

output "workspace_image" {
  description = "Workspace runtime image the agents give templates."
  value       = local.workspace_image
}

output "monitoring" {
  description = "The alert policies by concern, the agents-offline log metric's type, the dashboard's id and the Cloud Run services whose 5xx share is watched."
  value = {
    alert_policies   = module.monitoring.alert_policies
    log_metric       = module.monitoring.log_metric
    dashboard_id     = module.monitoring.dashboard_id
    watched_services = module.monitoring.watched_services
  }
}
