# -- where -----------------------------------------------------------------------------------

variable "project_id" {
  type        = string
  description = "Google Cloud project to deploy Tether into."
}

variable "region" {
  type        = string
  description = "Region of the functions, the relay, the agents, the workspaces and the buckets."
  default     = "europe-west1"
}

variable "domain" {
  type        = string
  description = "Public host name of the API (e.g. tether.example.com). Its DNS A record must point at the `lb_ip_address` output for the managed certificate to provision. Empty: <lb_ip_address>.nip.io, which resolves to the load balancer with no DNS to set up (to try Tether out; use your own domain for real work)."
  default     = ""

  validation {
    condition     = var.domain == "" || (can(regex("^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$", var.domain)) && !strcontains(var.domain, "://"))
    error_message = "domain is a bare host name such as tether.example.com (no scheme, no path)."
  }
}

variable "enable_apis" {
  type        = bool
  description = "Enable the Google APIs Tether uses (never disabled on destroy)."
  default     = true
}

variable "labels" {
  type        = map(string)
  description = "Labels on every resource that takes labels."
  default     = { app = "tether" }
}

# -- images (built by cloudbuild.yaml from infra/docker/) ---------------------------------

variable "artifact_repository" {
  type        = string
  description = "Artifact Registry Docker repository (in var.region) holding the images."
  default     = "tether"
}

variable "image_tag" {
  type        = string
  description = "Tag of the relay, agent and workspace images in the repository (cloudbuild.yaml passes the commit's short SHA)."
  default     = "latest"
}

variable "relay_image" {
  type        = string
  description = "Full relay image reference; null: <region>-docker.pkg.dev/<project>/<repository>/relay:<image_tag>."
  default     = null
}

variable "agent_image" {
  type        = string
  description = "Full agent image reference; null: <region>-docker.pkg.dev/<project>/<repository>/agent:<image_tag>."
  default     = null
}

variable "workspace_image" {
  type        = string
  description = "Full workspace runtime image reference used by templates (TETHER_WORKSPACE_IMAGE); null: <region>-docker.pkg.dev/<project>/<repository>/workspace:<image_tag>."
  default     = null
}

# -- agents ----------------------------------------------------------------------------------

variable "agents" {
  type = map(object({
    platform            = string           # cloud_run | gke
    k8s_service_account = optional(string) # gke: "namespace/name" bound by Workload Identity (needs a WI-enabled cluster in the project)
  }))
  description = "Agents by id. Each gets a service account and the subscription agent-commands-<id> (filter attributes.agent_id = \"<id>\"): a cloud_run agent is a Cloud Run service fed by Pub/Sub push; a gke agent pulls from a Deployment in a cluster with Workload Identity."
  default = {
    "cloud-run" = { platform = "cloud_run" }
    "gke"       = { platform = "gke", k8s_service_account = "tether/tether-agent" }
  }

  validation {
    condition     = alltrue([for id, agent in var.agents : contains(["cloud_run", "gke"], agent.platform)])
    error_message = "An agent's platform is cloud_run or gke."
  }

  validation {
    condition     = alltrue([for id, agent in var.agents : can(regex("^[a-z][a-z0-9-]{0,15}$", id))])
    error_message = "An agent id is 1-16 lowercase letters, digits or dashes, starting with a letter (it names a service account and a Cloud Run service)."
  }
}

variable "kubently_clusters" {
  type        = set(string)
  description = "Kubently clusters by id, each with its cluster agent (TETHER_PLATFORM=cluster, agent id = cluster id; manifests in infra/k8s/cluster-agent/). Each gets the service account tether-agent-<id> (subscriber on its own subscription only, publisher on agent-events, Firestore for its journal), bound by Workload Identity to the Kubernetes service account tether-cluster-agent/agent-<id>, and the subscription agent-commands-<id> (filter attributes.agent_id = \"<id>\"). The cluster is a GKE cluster with Workload Identity in this project."
  default     = []

  validation {
    condition     = alltrue([for id in var.kubently_clusters : can(regex("^[a-z][a-z0-9-]{0,15}$", id))])
    error_message = "A cluster id is 1-16 lowercase letters, digits or dashes, starting with a letter (it is an agent id: it names a service account and a subscription)."
  }
}

variable "kubently_executor_clusters" {
  type        = set(string)
  description = "Kubently clusters served by third-party executors (no Tether agent), by id: each gets the pull subscription agent-commands-<id> (filter attributes.agent_id = \"<id>\", as an agent's), read, with roles/pubsub.subscriber on that subscription only, by the kubently function's account (api: GET /agent/commands) and the relay's (GET /executor/stream), which take the cluster's commands for its executors. An id is neither a key of agents nor a kubently_clusters id."
  default     = []

  validation {
    condition     = alltrue([for id in var.kubently_executor_clusters : can(regex("^[a-z][a-z0-9-]{0,15}$", id))])
    error_message = "An executor cluster id is 1-16 lowercase letters, digits or dashes, starting with a letter (as a cluster agent's id: it names a subscription)."
  }
}

variable "agent_min_instances" {
  type        = number
  description = "Minimum instances of each Cloud Run agent (1 keeps it heartbeating, hence online, between commands)."
  default     = 1
}

variable "agent_push_path" {
  type        = string
  description = "Path of the Cloud Run agent's Pub/Sub push receiver."
  default     = "/"
}

variable "gke_cluster" {
  type = object({
    create              = optional(bool, true) # false: bring your own (VPC-native, in the tether VPC, Cloud DNS VPC scope)
    dns_domain          = optional(string, "tether.internal")
    nodes_cidr          = optional(string, "10.20.0.0/22")
    pods_cidr           = optional(string, "10.24.0.0/14")
    services_cidr       = optional(string, "10.28.0.0/20")
    control_plane_cidr  = optional(string, "172.16.0.32/28")
    authorized_networks = optional(map(string), {})
    machine_type        = optional(string, "e2-standard-4")
    max_nodes           = optional(number, 10)
    sandbox_max_nodes   = optional(number, 4)
  })
  description = "The GKE cluster of the gke agents' workspaces (made when an agent's platform is gke): VPC-native in the relay's VPC with its Services' names published to it (Cloud DNS VPC scope under dns_domain), so the relay reaches each workspace's runtime at the name its agent reports."
  default     = {}
}

variable "vpc_cidr" {
  type        = string
  description = "Range of the subnet the Cloud Run agents and the relay send through (Direct VPC egress), the only way to the workspaces' internal-only ingress. /26 or larger."
  default     = "10.10.0.0/24"
}

variable "relay_project_invoker" {
  type        = bool
  description = "Give the relay roles/run.invoker on the project, to reach workspace services created at runtime. Set false once agents grant it per workspace service."
  default     = true
}

# -- functions and relay ---------------------------------------------------------------------

variable "function_overrides" {
  type = map(object({
    memory        = optional(string)
    cpu           = optional(string)
    timeout       = optional(number)
    concurrency   = optional(number)
    min_instances = optional(number)
    max_instances = optional(number)
  }))
  description = "Per-target overrides of the functions' defaults (terraform/modules/functions), by entry point, e.g. { onmemos = { min_instances = 1 } }."
  default     = {}
}

variable "sweeper_schedule" {
  type        = string
  description = "Cron schedule (UTC) on which Cloud Scheduler calls the sweeper."
  default     = "* * * * *"
}

variable "runtime_key_secret_id" {
  type        = string
  description = "Secret Manager id of the key GKE workspaces' runtime tokens derive from (TETHER_RUNTIME_KEY: the relay's, and a Kubernetes Secret for the GKE agent); its value is added outside Terraform, as the JWT secret's."
  default     = "tether-runtime-key"
}

variable "jwt_secret_id" {
  type        = string
  description = "Secret Manager id of the JWT signing secret (its value is added outside Terraform, see README.md)."
  default     = "tether-jwt-secret"
}

variable "relay_concurrency" {
  type        = number
  description = "Open WebSockets per relay instance."
  default     = 250
}

variable "relay_min_instances" {
  type        = number
  description = "Minimum relay instances."
  default     = 0
}

variable "relay_max_instances" {
  type        = number
  description = "Maximum relay instances."
  default     = 20
}

variable "security_policy" {
  type        = string
  description = "Cloud Armor security policy (self link or name) for every backend of the load balancer; null: none."
  default     = null
}

# -- SentinelStacks: AI agents ----------------------------------------------------------------

variable "model_provider" {
  type        = string
  description = "The language model SentinelStacks' agents call (TETHER_MODEL_PROVIDER) in the sentinelstacks function and the relay: vertex (Gemini on Vertex AI, as the api and relay service accounts, which get roles/aiplatform.user), openai (any OpenAI-compatible endpoint: model_base_url, and model_api_key_secret_id for its key) or offline (a fixed stand-in, no model)."
  default     = "vertex"

  validation {
    condition     = contains(["offline", "openai", "vertex"], var.model_provider)
    error_message = "model_provider is offline, openai or vertex."
  }
}

variable "model_base_url" {
  type        = string
  description = "openai: the endpoint (TETHER_MODEL_BASE_URL), e.g. https://api.openai.com/v1. Empty: unset."
  default     = ""

  validation {
    condition     = var.model_base_url == "" || can(regex("^https?://", var.model_base_url))
    error_message = "model_base_url is an http(s) URL, or empty."
  }
}

variable "model_name" {
  type        = string
  description = "The model every agent uses (TETHER_MODEL), e.g. gemini-2.5-flash. Empty: each image's own base model."
  default     = ""
}

variable "vertex_location" {
  type        = string
  description = "vertex: the Vertex AI location of the model (TETHER_VERTEX_LOCATION), e.g. global or us-central1; null: var.region."
  default     = null
}

variable "model_api_key_secret_id" {
  type        = string
  description = "Secret Manager id of the model endpoint's API key (TETHER_MODEL_API_KEY, openai), e.g. tether-model-api-key; null: no key. Terraform makes the secret and lets the api and relay accounts read it; add its value outside Terraform, before the full apply (as the JWT secret's, see README.md)."
  default     = null

  validation {
    condition     = var.model_api_key_secret_id == null || can(regex("^[A-Za-z0-9_-]{1,255}$", var.model_api_key_secret_id))
    error_message = "model_api_key_secret_id is a Secret Manager id: letters, digits, - and _."
  }
}

variable "cors_origins" {
  type        = list(string)
  description = "Browser origins allowed to call SentinelStacks' API and open its WebSockets from another origin (TETHER_CORS_ORIGINS), e.g. [\"https://ui.example.com\"]; \"*\": any origin. Empty: same origin only."
  default     = []

  validation {
    condition     = alltrue([for o in var.cors_origins : o == "*" || can(regex("^https?://[^/,]+$", trimsuffix(o, "/")))])
    error_message = "A CORS origin is scheme://host[:port] (no path, no comma), or \"*\" (any origin)."
  }
}

variable "recordings_bucket_name" {
  type        = string
  description = "Terminal recordings' bucket name (TETHER_RECORDINGS_URL = gs://<name>/casts); null: <project_id>-tether-recordings."
  default     = null
}

variable "recording_retention_days" {
  type        = number
  description = "Days a terminal recording is kept after it starts (TETHER_RECORDING_RETENTION; its parts in the bucket a day longer)."
  default     = 30

  validation {
    condition     = var.recording_retention_days >= 1 && floor(var.recording_retention_days) == var.recording_retention_days
    error_message = "recording_retention_days is a whole number of days, at least 1."
  }
}

variable "registry_bucket_name" {
  type        = string
  description = "SentinelStacks' image registry bucket name (TETHER_REGISTRY_URL = gs://<name>/images); null: <project_id>-tether-registry."
  default     = null
}

variable "registry_max_bytes" {
  type        = number
  description = "The largest image a push takes (TETHER_REGISTRY_MAX_BYTES); null: the code's default (8 MiB). At most 32 MiB, Cloud Run's request size limit."
  default     = null

  validation {
    condition     = var.registry_max_bytes == null || try(var.registry_max_bytes > 0 && var.registry_max_bytes <= 33554432, false)
    error_message = "registry_max_bytes is between 1 and 33554432 (32 MiB)."
  }
}

# -- monitoring (modules/monitoring) -----------------------------------------------------------

variable "notification_channels" {
  type        = list(string)
  description = "Cloud Monitoring notification channels every Tether alert notifies, by full name: projects/<project>/notificationChannels/<id> (`gcloud beta monitoring channels list`). Empty: incidents open in the console only."
  default     = []

  validation {
    condition     = alltrue([for c in var.notification_channels : can(regex("^projects/[^/]+/notificationChannels/[^/]+$", c))])
    error_message = "A notification channel is its full name: projects/<project>/notificationChannels/<id>."
  }
}

variable "alert_thresholds" {
  type = object({
    error_ratio            = optional(number, 0.05) # share of a service's requests answered 5xx
    error_window_minutes   = optional(number, 5)    # over this window
    dead_letter_minutes    = optional(number, 5)    # a dead-lettered command waiting this long
    command_age_seconds    = optional(number, 300)  # oldest unacked command in an agent's subscription
    offline_window_minutes = optional(number, 10)   # an agent marked offline within this window
  })
  description = "When the alerts of modules/monitoring open (see terraform/README.md, Monitoring); each left out keeps its default."
  default     = {}
}

# -- data ------------------------------------------------------------------------------------

variable "firestore_database" {
  type        = string
  description = "Firestore database id. The code reads \"(default)\"; another id needs TETHER_FIRESTORE_DATABASE support in tether.settings."
  default     = "(default)"
}

variable "firestore_location" {
  type        = string
  description = "Firestore location (e.g. eur3 or europe-west1); null: var.region. Fixed once created."
  default     = null
}

variable "create_firestore_database" {
  type        = bool
  description = "Create the Firestore database (false if the project has one already; indexes and TTL policies are managed either way)."
  default     = true
}

variable "firestore_delete_protection" {
  type        = bool
  description = "Protect the Firestore database from deletion."
  default     = true
}

variable "sessions_bucket_name" {
  type        = string
  description = "Session storage bucket name; null: <project_id>-tether-sessions."
  default     = null
}

variable "sources_bucket_name" {
  type        = string
  description = "Function sources bucket name; null: <project_id>-tether-function-sources."
  default     = null
}

variable "sessions_versioning" {
  type        = bool
  description = "Keep previous versions of session files."
  default     = false
}

variable "sessions_retention_days" {
  type        = number
  description = "Delete session files older than this many days; 0: never (agents remove a session's prefix when it ends)."
  default     = 0
}

variable "access_log_bucket" {
  type        = string
  description = "Bucket receiving access logs of the Tether buckets; null: none."
  default     = null
}

variable "force_destroy_buckets" {
  type        = bool
  description = "Let `terraform destroy` delete non-empty buckets."
  default     = false
}
