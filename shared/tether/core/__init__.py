"""Pure domain: models, state machines, ports. No I/O, no cloud imports."""
