# The public origin: a global external Application Load Balancer (EXTERNAL_MANAGED) with a
# Google-managed certificate, one serverless NEG + backend service per backend (the function
# targets and the relay), and a URL map generated from var.routes.
#
# Routing is done with route rules, first match wins (ordered by their place in var.routes),
# because the relay's WebSocket paths sit in the middle of the functions' trees
# (/v1/sessions/{id}/shell vs /v1/sessions/{id}) and path rules cannot express that. A path in
# var.routes is read as:
#   "/a/b"     exactly /a/b                       (full_path_match)
#   "/a/*"     anything under /a/                 (prefix_match "/a/")
#   "/a/*/b"   one segment in place of the *      (path_template_match)
#   "/a/*/**"  ... and any segments after         (path_template_match: ** comes last)

locals {
  rules = [
    for i, route in var.routes : {
      priority = (i + 1) * 10
      backend  = route.backend
      prefix   = endswith(route.path, "/*") && length(split("*", route.path)) == 2 ? trimsuffix(route.path, "*") : null
      template = strcontains(trimsuffix(route.path, "/*"), "*") ? route.path : null
      full     = strcontains(route.path, "*") ? null : route.path
    }
  ]

  cert_name = "tether-${substr(sha1(join(",", var.domains)), 0, 8)}"
}

resource "google_compute_global_address" "this" {
  project      = var.project_id
  name         = "tether-lb"
  address_type = "EXTERNAL"
  ip_version   = "IPV4"
}

resource "google_compute_managed_ssl_certificate" "this" {
  project = var.project_id
  name    = local.cert_name

  managed {
    domains = var.domains
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "google_compute_ssl_policy" "this" {
  project         = var.project_id
  name            = "tether-tls"
  profile         = "MODERN"
  min_tls_version = "TLS_1_2"
}

# One serverless NEG per backend. 2nd gen functions are Cloud Run services, so they use the
# cloud_run form too (the cloud_function form is for 1st gen).
resource "google_compute_region_network_endpoint_group" "this" {
  for_each = var.backends

  project               = var.project_id
  name                  = "tether-${replace(each.key, "_", "-")}"
  region                = var.region
  network_endpoint_type = "SERVERLESS"

  cloud_run {
    service = each.value
  }
}

resource "google_compute_backend_service" "this" {
  for_each = var.backends

  project               = var.project_id
  name                  = "tether-${replace(each.key, "_", "-")}"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  protocol              = "HTTPS"
  security_policy       = var.security_policy
  # No timeout_sec or health check: serverless NEGs use the service's own request timeout
  # (3600 s for the relay's WebSockets).

  backend {
    group = google_compute_region_network_endpoint_group.this[each.key].id
  }

  log_config {
    enable      = true
    sample_rate = var.log_sample_rate
  }
}

resource "google_compute_url_map" "https" {
  project         = var.project_id
  name            = "tether-https"
  default_service = google_compute_backend_service.this[var.default_backend].id

  host_rule {
    hosts        = ["*"]
    path_matcher = "tether"
  }

  path_matcher {
    name            = "tether"
    default_service = google_compute_backend_service.this[var.default_backend].id

    dynamic "route_rules" {
      for_each = local.rules
      content {
        priority = route_rules.value.priority
        service  = google_compute_backend_service.this[route_rules.value.backend].id

        match_rules {
          full_path_match     = route_rules.value.full
          prefix_match        = route_rules.value.prefix
          path_template_match = route_rules.value.template
        }
      }
    }
  }
}

resource "google_compute_target_https_proxy" "this" {
  project          = var.project_id
  name             = "tether-https"
  url_map          = google_compute_url_map.https.id
  ssl_certificates = [google_compute_managed_ssl_certificate.this.id]
  ssl_policy       = google_compute_ssl_policy.this.id
}

resource "google_compute_global_forwarding_rule" "https" {
  project               = var.project_id
  name                  = "tether-https"
  target                = google_compute_target_https_proxy.this.id
  ip_address            = google_compute_global_address.this.address
  port_range            = "443"
  ip_protocol           = "TCP"
  load_balancing_scheme = "EXTERNAL_MANAGED"
}

# Plain HTTP only redirects to HTTPS.
resource "google_compute_url_map" "redirect" {
  count = var.http_redirect ? 1 : 0

  project = var.project_id
  name    = "tether-http-redirect"

  default_url_redirect {
    https_redirect         = true
    redirect_response_code = "MOVED_PERMANENTLY_DEFAULT"
    strip_query            = false
  }
}

resource "google_compute_target_http_proxy" "redirect" {
  count = var.http_redirect ? 1 : 0

  project = var.project_id
  name    = "tether-http-redirect"
  url_map = google_compute_url_map.redirect[0].id
}

resource "google_compute_global_forwarding_rule" "http" {
  count = var.http_redirect ? 1 : 0

  project               = var.project_id
  name                  = "tether-http-redirect"
  target                = google_compute_target_http_proxy.redirect[0].id
  ip_address            = google_compute_global_address.this.address
  port_range            = "80"
  ip_protocol           = "TCP"
  load_balancing_scheme = "EXTERNAL_MANAGED"
}
