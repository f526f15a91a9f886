"""Python SDK for Tether's OnMemOS-compatible API and Kubently's debug sessions: sync
`Client`, async `AsyncClient`."""

from tether.sdk.aio import AsyncClient, AsyncDebugSession, AsyncSession
from tether.sdk.client import Client, DebugSession, Session

OnMemOSClient = Client  # the name OnMemOS's own SDK uses

__all__ = [
    "AsyncClient",
    "AsyncDebugSession",
    "AsyncSession",
    "Client",
    "DebugSession",
    "OnMemOSClient",
    "Session",
]
