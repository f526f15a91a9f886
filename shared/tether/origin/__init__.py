"""One origin on one port, as the cloud's load balancer gives: the function targets, the
relay's byte streams and its aiohttp app. `tether up` and the relay service serve it."""
