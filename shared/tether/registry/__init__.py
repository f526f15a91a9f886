"""Adapters of the ArtifactStore port: where SentinelStacks' agent images are kept.

Each module imports its cloud client lazily, so importing an adapter does no I/O and loads no
cloud library. `open_artifacts` picks one from a registry URL (settings.registry_url).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from tether.core.ports import ArtifactStore
from tether.errors import Invalid


def open_artifacts(url: str, default_root: Path, project: str | None = None) -> ArtifactStore:
    """The store `url` names: `file:///dir`, `gs://bucket/prefix`, `s3://bucket/prefix`, or
    "" for a directory at `default_root`. Builds no client yet."""
    if not url:
        from tether.registry.local import DirectoryArtifacts

        return DirectoryArtifacts(default_root)
    parts = urlsplit(url)
    prefix = parts.path.strip("/")
    if parts.scheme == "file" and parts.path:
        from tether.registry.local import DirectoryArtifacts

        return DirectoryArtifacts(Path(parts.path))
    if parts.scheme == "gs" and parts.netloc:
        from tether.registry.gcs import GcsArtifacts

        return GcsArtifacts(parts.netloc, prefix, project=project)
    if parts.scheme == "s3" and parts.netloc:
        from tether.registry.s3 import S3Artifacts

        return S3Artifacts(parts.netloc, prefix)
    raise Invalid(
        "The registry URL is file:///dir, gs://bucket/prefix or s3://bucket/prefix",
        field="registry_url",
    )
