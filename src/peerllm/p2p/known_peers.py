"""Last-known peers: our own small JSON file, redialled at start (not libp2p's sqlite store).

The sqlite peerstore stores our private key and restores addresses without expiry
(notes §3.7), so we keep just what a redial needs.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MAX_ADDRS_PER_PEER = 8


class KnownPeers:
    """Peers that answered node-info recently, newest first, at most ``limit``."""

    def __init__(self, path: Path, *, limit: int) -> None:
        self.path = path
        self.limit = limit
        self._peers: dict[str, dict[str, Any]] = {}
        self._dirty = False

    def load(self) -> list[tuple[str, list[str]]]:
        """Read the file; a missing file is empty, a corrupt one is logged and ignored."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable known-peers file %s: %s", self.path, exc)
            return []
        peers = raw.get("peers") if isinstance(raw, dict) else None
        if not isinstance(peers, list):
            logger.warning("ignoring known-peers file %s: no 'peers' list", self.path)
            return []
        out: list[tuple[str, list[str]]] = []
        for p in peers[: self.limit]:
            if not isinstance(p, dict):
                continue
            pid, addrs = p.get("peer_id"), p.get("addrs")
            if isinstance(pid, str) and isinstance(addrs, list) \
                    and all(isinstance(a, str) for a in addrs):
                self._peers[pid] = p
                out.append((pid, addrs[:MAX_ADDRS_PER_PEER]))
        return out

    def remember(self, peer_id: str, addrs: list[str], name: str) -> None:
        if not addrs:
            return
        prev = self._peers.get(peer_id)
        if prev is not None and prev.get("addrs") == addrs[:MAX_ADDRS_PER_PEER] \
                and time.time() - float(prev.get("last_seen", 0)) < 300:
            return
        self._peers[peer_id] = {"peer_id": peer_id, "name": name,
                                "addrs": addrs[:MAX_ADDRS_PER_PEER], "last_seen": time.time()}
        self._dirty = True

    def save_if_dirty(self) -> None:
        if not self._dirty:
            return
        newest = sorted(self._peers.values(), key=lambda p: -float(p.get("last_seen", 0)))
        body = json.dumps({"version": 1, "peers": newest[: self.limit]}, indent=1)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".known_peers.", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            self._dirty = False
        except OSError as exc:
            logger.warning("cannot save known peers to %s: %s", self.path, exc)
