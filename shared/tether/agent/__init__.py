"""The agent daemon: receives commands on the bus, runs them on a provisioner, reports back."""
