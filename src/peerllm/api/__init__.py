"""The node's local HTTP API (ASGI, served by hypercorn's trio worker in the node's loop)."""
