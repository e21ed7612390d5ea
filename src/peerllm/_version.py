"""The installed peerllm version (single source of truth for packaging)."""

__version__ = "0.1.0"
