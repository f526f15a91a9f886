"""The local stack: every target, the agent and the sweeper in one process."""
