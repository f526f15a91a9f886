"""Kubently's surface: cluster debug sessions with safe kubectl (docs/specs/kubently-api.md)."""

from tether.surfaces.kubently.routes import handle, router

__all__ = ["handle", "router"]
