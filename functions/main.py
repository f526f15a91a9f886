"""Cloud Functions entry points. Each is a thin target defined in `tether.targets`.

Deploy with e.g. `--entry-point onmemos`; importing this module builds no cloud client.
"""

from tether.targets import agent_events, health, onmemos, sweeper

__all__ = ["agent_events", "health", "onmemos", "sweeper"]
