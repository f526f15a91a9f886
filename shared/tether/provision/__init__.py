"""Provisioners: local (sandboxed processes); cloudrun and gke come with the cloud issue."""
