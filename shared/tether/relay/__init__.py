"""The WebSocket relay: authenticates, checks ownership in the Store, relays bytes to the runtime."""
