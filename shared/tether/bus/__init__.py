"""Bus adapters: local (in-process) and pubsub."""

COMMANDS_TOPIC = "agent-commands"
EVENTS_TOPIC = "agent-events"


def commands_subscription(agent_id: str) -> str:
    return f"{COMMANDS_TOPIC}-{agent_id}"


def events_subscription(name: str) -> str:
    return f"{EVENTS_TOPIC}-{name}"
