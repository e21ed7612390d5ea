"""Who this node is: key + peer ID, a persistent node UUID and name, and per-start metadata.

The data directory holds two files:

* ``node.key``  — the Ed25519 private key (see keystore.py); it *is* the peer ID.
* ``node.json`` — ``{"node_id": "<uuid>", "name": "<name>"}``, written atomically with
  mode 0600. Unknown fields in it are preserved. Location and tags are not stored: they
  come from the configuration on every start.
"""

from __future__ import annotations

import json
import logging
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .._types import NodeUUID, PeerId
from ..errors import ConfigError, IdentityError
from . import keys
from .keystore import KEY_FILE_NAME, atomic_write, load_or_create_key
from .names import generate_name, validate_name

logger = logging.getLogger(__name__)

PROFILE_FILE_NAME: Final = "node.json"
MAX_PROFILE_BYTES: Final = 64 * 1024


@dataclass(frozen=True, kw_only=True)
class Identity:
    """The node's identity for this run. ``peer_id`` is derived from ``public_key``."""

    private_key: Ed25519PrivateKey = field(repr=False, compare=False)
    public_key: bytes  # 32 raw bytes
    peer_id: PeerId
    node_id: NodeUUID
    name: str
    location: str | None
    tags: tuple[str, ...]

    def sign(self, message: bytes) -> bytes:
        """Return the Ed25519 signature of ``message`` by this node's key."""
        return keys.sign(self.private_key, message)


def load_identity(
    data_dir: Path,
    *,
    name: str | None = None,
    node_id: str | None = None,
    location: str | None = None,
    tags: Sequence[str] = (),
) -> Identity:
    """Load this node's identity from ``data_dir``, creating whatever is missing.

    On first start the key, a node UUID (``node_id`` or a new uuid4) and a name (``name``
    or a generated one) are created and saved. Later starts reuse them; an explicitly
    given ``name`` or ``node_id`` replaces the stored one and is saved.

    Raises:
        ConfigError: ``name`` (key ``node.name``) or ``node_id`` (``node.id``) is invalid.
        IdentityError: ``node.key`` or ``node.json`` exists but cannot be used; the
            file is left untouched.
    """
    # Check arguments before touching the disk: a typo must not create files.
    wanted_name = _config_name(name) if name is not None else None
    wanted_id = _config_uuid(node_id) if node_id is not None else None
    if isinstance(tags, str):
        raise ConfigError("node.tags", "expected a list of strings, got one string")

    key, _created = load_or_create_key(data_dir / KEY_FILE_NAME)
    profile_path = data_dir / PROFILE_FILE_NAME
    stored = _read_profile(profile_path)
    profile: dict[str, Any] = dict(stored) if stored is not None else {}
    profile["node_id"] = wanted_id or profile.get("node_id") or str(uuid.uuid4())
    profile["name"] = wanted_name or profile.get("name") or generate_name()
    if profile != stored:
        _write_profile(profile_path, profile)
        if stored is None:
            logger.info("new node identity: name %s, node id %s", profile["name"],
                        profile["node_id"])
        elif stored["name"] != profile["name"]:
            logger.info("node name changed from %s to %s", stored["name"], profile["name"])

    public = keys.public_key_bytes(key)
    return Identity(
        private_key=key,
        public_key=public,
        peer_id=keys.peer_id_of(public),
        node_id=NodeUUID(profile["node_id"]),
        name=profile["name"],
        location=location,
        tags=tuple(tags),
    )


def default_data_dir(
    environ: Mapping[str, str] | None = None, *, platform: str | None = None
) -> Path:
    """Return the platform's per-user data directory for peerllm.

    Linux and other Unixes: ``$XDG_DATA_HOME/peerllm`` (if set to an absolute path) else
    ``~/.local/share/peerllm``; macOS: ``~/Library/Application Support/peerllm``;
    Windows: ``%LOCALAPPDATA%\\peerllm``.

    Args:
        environ: the environment to read ``XDG_DATA_HOME``/``LOCALAPPDATA`` from; the
            process environment is never read implicitly (None means an empty one).
        platform: a ``sys.platform`` value; defaults to the running platform.
    """
    env = environ if environ is not None else {}
    plat = platform if platform is not None else sys.platform
    if plat == "win32":
        local = env.get("LOCALAPPDATA")
        return Path(local) / "peerllm" if local else Path.home() / "AppData" / "Local" / "peerllm"
    if plat == "darwin":
        return Path.home() / "Library" / "Application Support" / "peerllm"
    xdg = env.get("XDG_DATA_HOME", "")
    if xdg and Path(xdg).is_absolute():  # the XDG spec says relative values are ignored
        return Path(xdg) / "peerllm"
    return Path.home() / ".local" / "share" / "peerllm"


def _config_name(name: str) -> str:
    try:
        return validate_name(name)
    except ValueError as exc:
        raise ConfigError("node.name", str(exc)) from exc


def _config_uuid(text: str) -> str:
    try:
        return _canonical_uuid(text)
    except ValueError as exc:
        raise ConfigError("node.id", str(exc)) from exc


def _canonical_uuid(text: object) -> str:
    if not isinstance(text, str):
        raise ValueError(f"node id must be a UUID string, not {type(text).__name__}")  # noqa: TRY004
    try:
        return str(uuid.UUID(text.strip()))
    except ValueError:
        raise ValueError(f"node id {text!r} is not a UUID") from None


def _read_profile(path: Path) -> dict[str, Any] | None:
    """Return the stored profile with its values checked and normalised, or None if absent."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_PROFILE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _unusable(path, f"cannot read the identity file ({exc.strerror or exc})") from exc
    if len(raw) > MAX_PROFILE_BYTES:
        raise _unusable(path, f"the identity file is over {MAX_PROFILE_BYTES} bytes")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _unusable(path, "the identity file is not UTF-8 text") from exc
    except (json.JSONDecodeError, RecursionError) as exc:
        raise _unusable(path, f"the identity file is not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise _unusable(path, "the identity file is not a JSON object")
    missing = [k for k in ("node_id", "name") if k not in doc]
    if missing:
        raise _unusable(path, f"the identity file has no {' or '.join(missing)}")
    try:
        doc["node_id"] = _canonical_uuid(doc["node_id"])
        doc["name"] = validate_name(doc["name"])
    except ValueError as exc:
        raise _unusable(path, f"the identity file is invalid: {exc}") from exc
    return doc


def _unusable(path: Path, reason: str) -> IdentityError:
    return IdentityError(
        path,
        f"{reason}; refusing to start — fix or restore the file, or remove it to get a new "
        "node id and name (the peer ID stays the same)",
    )


def _write_profile(path: Path, profile: Mapping[str, Any]) -> None:
    data = (json.dumps(profile, indent=2, sort_keys=True) + "\n").encode("utf-8")
    try:
        atomic_write(path, data)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise IdentityError(path, f"cannot write the identity file ({reason})") from exc
