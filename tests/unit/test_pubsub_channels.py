"""The Pub/Sub clients' channels reconnect every few seconds after an outage, in the cloud as
on the emulator (the outage itself is tests/faults/test_pubsub_outage.py)."""

from __future__ import annotations

from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import pubsub_v1
from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
from tether.bus.pubsub import RECONNECT, _transport


class Recording(PublisherGrpcTransport):
    """The real transport, noting the options its channel is made with."""

    options: list[tuple[str, Any]] = []

    @classmethod
    def create_channel(cls, host: str, **kwargs: Any) -> Any:
        cls.options = list(kwargs["options"])
        return super().create_channel(host, **kwargs)


def test_a_cloud_client_keeps_the_librarys_channel_options_and_adds_the_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    client = pubsub_v1.PublisherClient(
        credentials=AnonymousCredentials(), transport=_transport(Recording)
    )
    assert client.api.transport.host == "pubsub.googleapis.com:443"
    assert set(RECONNECT) <= set(Recording.options)
    assert ("grpc.max_receive_message_length", -1) in Recording.options  # the library's own


def test_an_emulator_client_talks_to_the_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:9")
    client = pubsub_v1.PublisherClient(transport=_transport(PublisherGrpcTransport))
    assert client.api.transport.host == "127.0.0.1:9"
