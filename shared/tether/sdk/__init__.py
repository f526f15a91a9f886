"""Python SDK for Tether's OnMemOS-compatible API: sync `Client`, async `AsyncClient`."""

from tether.sdk.aio import AsyncClient, AsyncSession
from tether.sdk.client import Client, Session

OnMemOSClient = Client  # the name OnMemOS's own SDK uses

__all__ = ["AsyncClient", "AsyncSession", "Client", "OnMemOSClient", "Session"]
