"""Openctrol's surface: a desktop agent's REST API (docs/specs/openctrol-api.md), issue #17.
Its WebSocket (`/openctrol/{agent_id}/ws/desktop`) is the relay's."""

from tether.surfaces.openctrol.routes import handle, router

__all__ = ["handle", "router"]
