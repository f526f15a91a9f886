"""The WebSocket relay: authenticates, checks ownership in the Store, relays to the runtime."""
