"""SentinelStacks' surface: AI agents from images, their conversations, and the image
registry (docs/specs/sentinelstacks-api.md), issue #18. Its WebSockets are the relay's."""

from tether.surfaces.sentinelstacks import registry  # noqa: F401  (its routes, on the router)
from tether.surfaces.sentinelstacks.routes import handle, router

__all__ = ["handle", "router"]
