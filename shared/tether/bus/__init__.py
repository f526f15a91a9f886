"""Bus adapters: local (in-process) and pubsub."""

COMMANDS_TOPIC = "agent-commands"
EVENTS_TOPIC = "agent-events"
# Where Pub/Sub moves a command after its last delivery attempt (Terraform's dead-letter
# policy); its subscription pushes them to the agent_events function.
DEAD_LETTER_TOPIC = "agent-commands-dead-letter"


def commands_subscription(agent_id: str) -> str:
    return f"{COMMANDS_TOPIC}-{agent_id}"


def events_subscription(name: str) -> str:
    return f"{EVENTS_TOPIC}-{name}"
