"""Cloud Functions entry points: the thin targets of `tether.targets`, registered by name.

Deploy with e.g. `--entry-point onmemos`; importing this module builds no cloud client.
"""

import functions_framework
from tether import logs, targets, tracing

logs.configure()  # JSON lines in Cloud Logging's format (TETHER_LOG_FORMAT)
tracing.configure(service="tether-api")  # spans to Cloud Trace in the cloud (TETHER_TRACING)

onmemos = functions_framework.http(targets.onmemos)
streamspace = functions_framework.http(targets.streamspace)
kubently = functions_framework.http(targets.kubently)
openctrol = functions_framework.http(targets.openctrol)
sentinelstacks = functions_framework.http(targets.sentinelstacks)
health = functions_framework.http(targets.health)
sweeper = functions_framework.http(targets.sweeper)
agent_events = functions_framework.cloud_event(targets.agent_events)
