"""The node's local HTTP API (ASGI, served by hypercorn's trio worker in the node's loop)."""

from .server import open_api as open_api
from .server import serve_api as serve_api

__all__ = ["open_api", "serve_api"]
