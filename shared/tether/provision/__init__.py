"""Provisioners: where workspaces run. local (sandboxed processes), cloudrun (a Cloud Run
service per session), gke (a pod, service and volume claim per session)."""
