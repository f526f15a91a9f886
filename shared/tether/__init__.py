"""Tether: a serverless control plane for remote sessions."""

__version__ = "0.1.0"
