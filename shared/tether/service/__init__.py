"""Use cases on the ports: auth, sessions, agents, templates, commands, sweeper."""
