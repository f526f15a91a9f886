# The WebSocket relay (`python -m tether.relay`, infra/docker/relay.Dockerfile) on Cloud Run,
# reached only through the load balancer.

locals {
  env = merge(
    {
      TETHER_STORE              = "firestore"
      TETHER_BUS                = "pubsub"
      GOOGLE_CLOUD_PROJECT      = var.project_id
      TETHER_PUBLIC_URL         = var.public_url
      TETHER_HOME               = "/tmp/tether"
      TETHER_FIRESTORE_DATABASE = var.firestore_database
    },
    # SentinelStacks' chat WebSocket runs chat turns: the language model's settings.
    var.model_env,
    # Terminal streams are recorded here, while their session's recording is on.
    var.recordings_env,
  )
}

resource "google_cloud_run_v2_service" "relay" {
  project             = var.project_id
  name                = var.name
  location            = var.region
  description         = var.description
  labels              = var.labels
  deletion_protection = false # stateless
  ingress             = "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"

  template {
    service_account = var.service_account_email
    # A WebSocket lives as long as the request: Cloud Run's maximum.
    timeout                          = "3600s"
    session_affinity                 = true
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
      min_instance_count = var.min_instances
      max_instance_count = var.max_instances
    }

    containers {
      image = var.image

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = var.cpu
          memory = var.memory
        }
        cpu_idle          = true # an open WebSocket is a request: CPU is allocated while it lasts
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = local.env
        content {
          name  = env.key
          value = env.value
        }
      }

      env {
        name = "TETHER_JWT_SECRET"
        value_source {
          secret_key_ref {
            secret  = var.jwt_secret_id
            version = "latest"
          }
        }
      }

      # What a GKE workspace's runtime asks of the relay (its session's token derives from it).
      dynamic "env" {
        for_each = var.runtime_key_secret_id == null ? [] : [var.runtime_key_secret_id]
        content {
          name = "TETHER_RUNTIME_KEY"
          value_source {
            secret_key_ref {
              secret  = env.value
              version = "latest"
            }
          }
        }
      }

      dynamic "env" {
        for_each = var.model_api_key_secret_id == null ? [] : [var.model_api_key_secret_id]
        content {
          name = "TETHER_MODEL_API_KEY"
          value_source {
            secret_key_ref {
              secret  = env.value
              version = "latest"
            }
          }
        }
      }
    }
  }

  traffic {
    type    = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
    percent = 100
  }
}

resource "google_cloud_run_v2_service_iam_member" "public" {
  # checkov:skip=CKV_GCP_102: public by design behind the load balancer (ingress is LB-only); the relay authenticates every connection itself (API key, JWT or ticket) before the upgrade.
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.relay.name
  role     = "roles/run.invoker"
  member   = "allUsers"
}
