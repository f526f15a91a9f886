"""Adapters of the ArtifactStore port: where SentinelStacks' agent images are kept (a directory,
Cloud Storage, an S3-compatible store; `bootstrap.make_artifacts` picks one from
TETHER_REGISTRY_URL).

Each module imports its cloud client lazily, so importing an adapter does no I/O and loads no
cloud library.
"""
