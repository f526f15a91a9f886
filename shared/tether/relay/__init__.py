"""The WebSocket relay: authenticates, checks ownership in the Store, splices to the runtime."""
