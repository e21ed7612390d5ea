"""Identifier types shared by every layer."""

from __future__ import annotations

from typing import NewType

PeerId = NewType("PeerId", str)
"""A libp2p peer ID in its base58 text form (``12D3KooW...``)."""

NodeUUID = NewType("NodeUUID", str)
"""The node's UUID v4 in canonical text form; stable across restarts."""

ModelId = NewType("ModelId", str)
"""A model identifier as served and advertised (``gemma3-270m-q4_k_m``)."""
