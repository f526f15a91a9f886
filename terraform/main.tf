# Tether on Google Cloud: functions (the API surfaces), the relay (WebSockets), agents, the
# Store (Firestore), the Bus (Pub/Sub), session storage, SentinelStacks' image registry, one
# HTTPS origin in front.
#
#   client ─HTTPS─> load balancer ─┬─> functions: onmemos, streamspace, kubently, openctrol,
#                                  │              sentinelstacks, health
#                                  ├─> relay (Cloud Run) ──> workspace runtimes
#                                  └─> desktop relay (one instance) <── Openctrol's desktops
#   functions ─> agent-commands ─> agent-commands-<agent_id> ─> agents ─> agent-events ─> agent_events
#   Cloud Scheduler ─> sweeper (every minute)
#   sentinelstacks ─> registry bucket (images, write-once); sentinelstacks + relay (chat) ─> model
#   (Vertex AI Gemini, or an OpenAI-compatible endpoint with its key in Secret Manager)

locals {
  registry        = "${var.region}-docker.pkg.dev/${var.project_id}/${var.artifact_repository}"
  relay_image     = coalesce(var.relay_image, "${local.registry}/relay:${var.image_tag}")
  agent_image     = coalesce(var.agent_image, "${local.registry}/agent:${var.image_tag}")
  workspace_image = coalesce(var.workspace_image, "${local.registry}/workspace:${var.image_tag}")
  host            = var.domain != "" ? var.domain : "${module.lb.ip_address}.nip.io"
  public_url      = "https://${local.host}"

  apis = [
    "aiplatform.googleapis.com", # SentinelStacks' agents' model (model_provider = "vertex")
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "cloudscheduler.googleapis.com",
    "cloudtrace.googleapis.com", # spans of every workload (tether.tracing)
    "compute.googleapis.com",
    "container.googleapis.com", # GKE workspaces' cluster (modules/gke)
    "dns.googleapis.com",       # its Services' names, published to the VPC (Cloud DNS)
    "eventarc.googleapis.com",
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com", # alert policies and the dashboard (modules/monitoring)
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ]

  # SentinelStacks' language model, for the chat turns both the sentinelstacks function
  # (POST .../conversations/{id}/messages) and the relay (the chat WebSocket) run; CORS for its
  # web UI's REST calls and WebSockets. Empty values are left out (the code's defaults).
  model_env = {
    for name, value in {
      TETHER_MODEL_PROVIDER  = var.model_provider
      TETHER_MODEL_BASE_URL  = var.model_base_url
      TETHER_MODEL           = var.model_name
      TETHER_VERTEX_LOCATION = coalesce(var.vertex_location, var.region)
      TETHER_CORS_ORIGINS    = join(",", [for o in var.cors_origins : trimsuffix(o, "/")])
    } : name => value if value != ""
  }
  registry_url = "gs://${module.storage.registry_bucket}/images"
  # Terminal recordings (tether.service.recordings): the relay writes their parts, the onmemos
  # function reads them; records kept as long as the bucket keeps parts, less a day.
  recordings_env = {
    TETHER_RECORDINGS_URL      = "gs://${module.storage.recordings_bucket}/casts"
    TETHER_RECORDING_RETENTION = "${var.recording_retention_days}d"
  }

  # The public routing table, first match wins. The functions' part mirrors
  # tether.targets.ROUTES; the relay's part is every route of
  # tether.relay.app.add_routes (WebSockets, the VNC viewer page, the vendored noVNC files),
  # listed first because its paths sit inside the functions' trees.
  routes = [
    { path = "/v1/sessions/*/shell", backend = "relay" },
    { path = "/v1/sessions/*/terminal", backend = "relay" },
    { path = "/v1/cloudrun/workspaces/*/shell", backend = "relay" },
    { path = "/v1/gke/shell/*", backend = "relay" },         # OnMemOS's GKE shell path (starbase, onmemos-sdk)
    { path = "/api/v1/sessions/*/logs", backend = "relay" }, # ?follow=true upgrades; a plain read is served by the relay's fallback to the same target
    { path = "/api/v1/vnc/*", backend = "relay" },           # StreamSpace's own desktop path; a plain request too, by the same fallback
    { path = "/api/v1/ws/sessions", backend = "relay" },     # the web UI's session list (a WebSocket)
    { path = "/executor/stream", backend = "relay" },        # Kubently's executors' event stream (SSE, held open)
    { path = "/vnc-viewer/*", backend = "relay" },
    # Openctrol's desktop agents dial in here, and their viewers meet them here: one instance
    # (the desktop relay), as a tunnel and its viewers must meet in one process.
    { path = "/openctrol/*/tunnel", backend = "desktop_relay" },
    { path = "/openctrol/*/ws/desktop", backend = "desktop_relay" },
    # SentinelStacks' agents' chat and events WebSockets (tether.relay.agentchat).
    { path = "/v1/agents/*/chat", backend = "relay" },
    { path = "/v1/agents/*/events", backend = "relay" },
    # A session's live calls (tether.relay.passthrough): streamed commands, processes, files,
    # its ports, and preview links to them.
    { path = "/v1/sessions/*/exec/stream", backend = "relay" },
    { path = "/v1/sessions/*/exec/ws", backend = "relay" },
    { path = "/v1/sessions/*/processes", backend = "relay" },
    { path = "/v1/sessions/*/processes/**", backend = "relay" },
    { path = "/v1/sessions/*/files", backend = "relay" },
    { path = "/v1/sessions/*/files/**", backend = "relay" },
    { path = "/v1/sessions/*/ports/**", backend = "relay" },
    { path = "/preview/*", backend = "relay" },
    # Prometheus' scrape: the relay's own figures and the store's gauges (tether.origin).
    { path = "/metrics", backend = "relay" },
    { path = "/novnc/*", backend = "relay" },
    { path = "/v1/sessions", backend = "onmemos" },
    { path = "/v1/sessions/*", backend = "onmemos" },
    { path = "/v1/cloudrun", backend = "onmemos" },
    { path = "/v1/cloudrun/*", backend = "onmemos" },
    # SentinelStacks' registry clients' package paths, inside StreamSpace's tree.
    { path = "/api/v1/packages", backend = "sentinelstacks" },
    { path = "/api/v1/packages/*", backend = "sentinelstacks" },
    { path = "/api/v1", backend = "streamspace" },
    { path = "/api/v1/*", backend = "streamspace" },
    { path = "/debug", backend = "kubently" },
    { path = "/debug/*", backend = "kubently" },
    { path = "/agent", backend = "kubently" },
    { path = "/agent/*", backend = "kubently" },
    { path = "/executor", backend = "kubently" },
    { path = "/executor/*", backend = "kubently" },
    { path = "/admin", backend = "kubently" },
    { path = "/admin/*", backend = "kubently" },
    { path = "/audit", backend = "kubently" },
    { path = "/audit/*", backend = "kubently" },
    { path = "/healthz", backend = "kubently" },
    { path = "/healthz/*", backend = "kubently" },
    { path = "/v1/auth", backend = "sentinelstacks" },
    { path = "/v1/auth/*", backend = "sentinelstacks" },
    { path = "/v1/agents", backend = "sentinelstacks" },
    { path = "/v1/agents/*", backend = "sentinelstacks" },
    { path = "/v1/images", backend = "sentinelstacks" },
    { path = "/v1/images/*", backend = "sentinelstacks" },
    { path = "/v1/registry", backend = "sentinelstacks" },
    { path = "/v1/registry/*", backend = "sentinelstacks" },
    { path = "/v1/health", backend = "sentinelstacks" },
    { path = "/v1/health/*", backend = "sentinelstacks" },
    { path = "/v1/packages", backend = "sentinelstacks" },
    { path = "/v1/packages/*", backend = "sentinelstacks" },
    { path = "/openctrol", backend = "openctrol" },
    { path = "/openctrol/*", backend = "openctrol" },
    { path = "/openapi/openctrol", backend = "openctrol" },
    { path = "/openapi/openctrol.json", backend = "openctrol" },
    { path = "/openapi/openctrol/*", backend = "openctrol" },
    { path = "/openapi/onmemos", backend = "onmemos" },
    { path = "/openapi/onmemos.json", backend = "onmemos" },
    { path = "/openapi/onmemos/*", backend = "onmemos" },
    { path = "/openapi/streamspace", backend = "streamspace" },
    { path = "/openapi/streamspace.json", backend = "streamspace" },
    { path = "/openapi/streamspace/*", backend = "streamspace" },
    { path = "/openapi/kubently", backend = "kubently" },
    { path = "/openapi/kubently.json", backend = "kubently" },
    { path = "/openapi/kubently/*", backend = "kubently" },
    { path = "/openapi/sentinelstacks", backend = "sentinelstacks" },
    { path = "/openapi/sentinelstacks.json", backend = "sentinelstacks" },
    { path = "/openapi/sentinelstacks/*", backend = "sentinelstacks" },
    { path = "/health", backend = "health" },
    { path = "/health/*", backend = "health" },
  ]

  # Kubently's cluster agents are agents like the others, their ids the clusters' ids: each
  # pulls its own subscription from a Deployment in its cluster (infra/k8s/cluster-agent/),
  # as the Kubernetes service account below, and runs kubectl there with a read-only role.
  cluster_agent_namespace = "tether-cluster-agent"
  cluster_agents = {
    for id in var.kubently_clusters : id => {
      platform            = "cluster"
      k8s_service_account = "${local.cluster_agent_namespace}/agent-${id}"
    }
  }
  agents = merge(var.agents, local.cluster_agents) # ids are distinct (output kubently_cluster_agents)

  # Kubently's executor clusters have no agent: their third-party executors take commands from
  # the kubently function (GET /agent/commands, as the api account) or the relay
  # (GET /executor/stream), which pull the cluster's agent-commands-<id> for them.
  executor_subscribers = {
    api   = module.iam.members["api"]
    relay = module.iam.members["relay"]
  }

  agent_members           = { for id, agent in local.agents : "agent-${id}" => module.iam.members["agent-${id}"] }
  cloud_run_agent_members = { for id, agent in local.agents : "agent-${id}" => module.iam.members["agent-${id}"] if agent.platform == "cloud_run" }
}

data "google_project" "this" {
  project_id = var.project_id
}

resource "google_project_service" "this" {
  for_each = var.enable_apis ? toset(local.apis) : toset([])

  project            = var.project_id
  service            = each.key
  disable_on_destroy = false
}

module "iam" {
  source = "./modules/iam"

  project_id            = var.project_id
  project_number        = data.google_project.this.number
  agents                = local.agents
  relay_project_invoker = var.relay_project_invoker
  # Chat turns call Gemini on Vertex AI as these accounts.
  vertex_ai_users = var.model_provider == "vertex" ? ["api", "relay"] : []

  depends_on = [google_project_service.this]
}

module "network" {
  source = "./modules/network"

  project_id = var.project_id
  region     = var.region
  cidr       = var.vpc_cidr

  depends_on = [google_project_service.this]
}

# GKE workspaces' cluster, when an agent of `agents` runs there and Terraform is to make it:
# VPC-native in the relay's VPC, its Services' names published to it (modules/gke).
module "gke" {
  source = "./modules/gke"
  count  = var.gke_cluster.create && length([for a in var.agents : a if a.platform == "gke"]) > 0 ? 1 : 0

  project_id          = var.project_id
  region              = var.region
  network             = module.network.network
  relay_cidr          = var.vpc_cidr
  dns_domain          = var.gke_cluster.dns_domain
  nodes_cidr          = var.gke_cluster.nodes_cidr
  pods_cidr           = var.gke_cluster.pods_cidr
  services_cidr       = var.gke_cluster.services_cidr
  control_plane_cidr  = var.gke_cluster.control_plane_cidr
  authorized_networks = var.gke_cluster.authorized_networks
  machine_type        = var.gke_cluster.machine_type
  max_nodes           = var.gke_cluster.max_nodes
  sandbox_max_nodes   = var.gke_cluster.sandbox_max_nodes
  labels              = var.labels

  depends_on = [google_project_service.this]
}

module "storage" {
  source = "./modules/storage"

  project_id              = var.project_id
  location                = var.region
  sessions_bucket_name    = var.sessions_bucket_name
  sources_bucket_name     = var.sources_bucket_name
  registry_bucket_name    = var.registry_bucket_name
  sessions_versioning     = var.sessions_versioning
  sessions_retention_days = var.sessions_retention_days
  access_log_bucket       = var.access_log_bucket
  force_destroy           = var.force_destroy_buckets

  # Parts outlive their records by a day: a recording never plays with a part gone.
  recordings_bucket_name    = var.recordings_bucket_name
  recordings_retention_days = var.recording_retention_days + 1

  # No workspace holds a role on the bucket: each Cloud Run workspace's identity holds one on
  # its own prefix, a managed folder its agent makes (GKE workspaces mount no storage).
  iam = concat(
    [{ bucket = "sources", role = "roles/storage.objectViewer", key = "build", member = module.iam.members["build"] }],
    # SentinelStacks' registry (the sentinelstacks function, as the api account): create and
    # read blobs, never delete or overwrite one (a digest's bytes never change).
    [
      { bucket = "registry", role = "roles/storage.objectCreator", key = "api", member = module.iam.members["api"] },
      { bucket = "registry", role = "roles/storage.objectViewer", key = "api", member = module.iam.members["api"] },
    ],
    # Terminal recordings: the relay writes parts (and reads, to see one is there already),
    # the onmemos function (the api account) reads them; nobody deletes one but the lifecycle
    # rule, and no workspace holds a role on the bucket.
    [
      { bucket = "recordings", role = "roles/storage.objectCreator", key = "relay", member = module.iam.members["relay"] },
      { bucket = "recordings", role = "roles/storage.objectViewer", key = "relay", member = module.iam.members["relay"] },
      { bucket = "recordings", role = "roles/storage.objectViewer", key = "api", member = module.iam.members["api"] },
    ],
    # Cloud Run agents create and remove each session's prefix and its managed folder.
    flatten([for key, member in local.cloud_run_agent_members : [
      { bucket = "sessions", role = "roles/storage.objectAdmin", key = key, member = member },
      { bucket = "sessions", role = "roles/storage.folderAdmin", key = key, member = member },
    ]]),
  )

  depends_on = [google_project_service.this]
}

module "secrets" {
  source = "./modules/secrets"

  project_id              = var.project_id
  jwt_secret_id           = var.jwt_secret_id
  runtime_key_secret_id   = var.runtime_key_secret_id
  model_api_key_secret_id = var.model_api_key_secret_id
  accessors = {
    api   = module.iam.members["api"]
    relay = module.iam.members["relay"]
  }
  runtime_key_accessors = { relay = module.iam.members["relay"] }

  depends_on = [google_project_service.this]
}

module "firestore" {
  source = "./modules/firestore"

  project_id        = var.project_id
  database_name     = var.firestore_database
  location          = coalesce(var.firestore_location, var.region)
  create_database   = var.create_firestore_database
  delete_protection = var.firestore_delete_protection

  depends_on = [google_project_service.this]
}

module "pubsub" {
  source = "./modules/pubsub"

  project_id                 = var.project_id
  project_number             = data.google_project.this.number
  push_service_account_email = module.iam.emails["push"]

  # Each agent (a pull agent reads its own subscription), and each Kubently executor cluster as a
  # pull agent with no identity (ids are distinct: output kubently_executor_clusters).
  agents = merge(
    {
      for id, agent in local.agents : id => {
        push          = agent.platform == "cloud_run"
        push_endpoint = lookup(module.agents.push_endpoints, id, null)
        push_audience = lookup(module.agents.push_audiences, id, null)
        subscribers   = { agent = module.iam.members["agent-${id}"] }
      }
    },
    { for id in var.kubently_executor_clusters : id => { push = false, subscribers = local.executor_subscribers } },
  )

  # Whoever issues or re-issues commands: the API functions, the relay (a shell's exec), the
  # agent_events function (register_ack) and the sweeper (republish).
  command_publishers = {
    api     = module.iam.members["api"]
    relay   = module.iam.members["relay"]
    events  = module.iam.members["events"]
    sweeper = module.iam.members["sweeper"]
  }
  command_viewers = { api = module.iam.members["api"] } # the health check looks the topic up
  # The agents, and the agent_events function: a dead-lettered command's failure goes to the
  # caller waiting on it as an agent's result would.
  event_publishers = merge(local.agent_members, { events = module.iam.members["events"] })
  # Whoever waits for an exec's result: each instance's reply inbox (tether.bus.pubsub).
  event_subscribers = {
    api   = module.iam.members["api"]
    relay = module.iam.members["relay"]
  }
  # Dead-lettered commands go to agent_events as its Eventarc trigger's identity (which holds
  # run.invoker on it).
  dead_letter_push = {
    endpoint              = module.functions.event_urls["agent_events"]
    service_account_email = module.iam.emails["events"]
  }

  depends_on = [google_project_service.this]
}

module "agents" {
  source = "./modules/agents"

  project_id                 = var.project_id
  region                     = var.region
  agents                     = local.agents
  agent_service_accounts     = { for id, agent in local.agents : id => module.iam.emails["agent-${id}"] }
  agent_image                = local.agent_image
  workspace_image            = local.workspace_image
  sessions_bucket            = module.storage.sessions_bucket
  push_service_account_email = module.iam.emails["push"]
  min_instances              = var.agent_min_instances
  push_path                  = var.agent_push_path
  vpc_network                = module.network.network
  vpc_subnetwork             = module.network.subnetwork

  depends_on = [google_project_service.this]
}

module "functions" {
  source = "./modules/functions"

  project_id               = var.project_id
  region                   = var.region
  source_root              = "${path.root}/.."
  source_bucket            = module.storage.sources_bucket
  service_accounts         = module.iam.emails
  build_service_account_id = module.iam.ids["build"]
  jwt_secret_id            = module.secrets.jwt_secret_id
  topic_ids                = module.pubsub.topic_ids
  public_url               = local.public_url
  firestore_database       = module.firestore.database_name
  sweeper_schedule         = var.sweeper_schedule
  overrides                = var.function_overrides
  registry_url             = local.registry_url
  registry_max_bytes       = var.registry_max_bytes
  recordings_env           = local.recordings_env
  model_env                = local.model_env
  model_api_key_secret_id  = module.secrets.model_api_key_secret_id

  depends_on = [google_project_service.this]
}

module "relay" {
  source = "./modules/relay"

  project_id              = var.project_id
  region                  = var.region
  image                   = local.relay_image
  service_account_email   = module.iam.emails["relay"]
  jwt_secret_id           = module.secrets.jwt_secret_id
  runtime_key_secret_id   = module.secrets.runtime_key_secret_id
  public_url              = local.public_url
  firestore_database      = module.firestore.database_name
  model_env               = local.model_env # the chat WebSocket runs chat turns
  recordings_env          = local.recordings_env
  model_api_key_secret_id = module.secrets.model_api_key_secret_id
  concurrency             = var.relay_concurrency
  min_instances           = var.relay_min_instances
  max_instances           = var.relay_max_instances
  vpc_network             = module.network.network
  vpc_subnetwork          = module.network.subnetwork

  depends_on = [google_project_service.this]
}

# The relay's code again, as one instance: desktop agents' tunnels live in its memory, so they
# and their viewers must reach the same process (a Cloud Run instance cannot be addressed).
# An instance holds `relay_concurrency` connections, tunnels and viewers together; a restart
# (a deploy, the hourly request limit) drops them, and the agents dial again at once.
module "desktop_relay" {
  source = "./modules/relay"

  name                  = "tether-desktop-relay"
  description           = "Tether desktop relay: Openctrol's desktop agents and their viewers"
  project_id            = var.project_id
  region                = var.region
  image                 = local.relay_image
  service_account_email = module.iam.emails["relay"]
  jwt_secret_id         = module.secrets.jwt_secret_id
  public_url            = local.public_url
  firestore_database    = module.firestore.database_name
  concurrency           = var.relay_concurrency
  min_instances         = 1
  max_instances         = 1
  vpc_network           = module.network.network
  vpc_subnetwork        = module.network.subnetwork

  depends_on = [google_project_service.this]
}

module "lb" {
  source = "./modules/lb"

  project_id = var.project_id
  region     = var.region
  domains    = [local.host]
  backends = merge(module.functions.lb_services, {
    relay         = module.relay.service_name
    desktop_relay = module.desktop_relay.service_name
  })
  routes          = local.routes
  default_backend = "onmemos"
  security_policy = var.security_policy

  depends_on = [google_project_service.this]
}

# Alerts and the dashboard. The services watched are every function (a 2nd gen function runs
# as the Cloud Run service of its name) and both relays; the subscriptions, the pubsub
# module's own.
module "monitoring" {
  source = "./modules/monitoring"

  project_id               = var.project_id
  notification_channels    = var.notification_channels
  function_services        = module.functions.function_names
  relay_services           = { relay = module.relay.service_name, desktop_relay = module.desktop_relay.service_name }
  dead_letter_subscription = module.pubsub.dead_letter_subscription
  command_subscriptions    = module.pubsub.agent_subscriptions
  error_ratio              = var.alert_thresholds.error_ratio
  error_window_minutes     = var.alert_thresholds.error_window_minutes
  dead_letter_minutes      = var.alert_thresholds.dead_letter_minutes
  command_age_seconds      = var.alert_thresholds.command_age_seconds
  offline_window_minutes   = var.alert_thresholds.offline_window_minutes
  labels                   = var.labels

  depends_on = [google_project_service.this]
}
