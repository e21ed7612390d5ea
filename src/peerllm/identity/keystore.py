"""The node's private key on disk: create it once, atomically and 0600; never overwrite it.

File format: the Ed25519 private key as unencrypted PKCS#8 PEM
(``-----BEGIN PRIVATE KEY-----``), readable by ``openssl pkey -in node.key``.

Invariants:

* An existing key file is never written to, whatever its state. If it cannot be used
  (unreadable, empty, truncated, not an Ed25519 key) loading fails with IdentityError:
  silently making a new key would silently change the node's peer ID.
* A key file is either absent or complete: it is written to a temporary file in the
  same directory, fsynced, then linked into place, and the directory is fsynced.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
from pathlib import Path
from typing import Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..config.keyfiles import read_up_to
from ..errors import IdentityError
from .keys import generate_private_key

logger = logging.getLogger(__name__)

KEY_FILE_NAME: Final = "node.key"
MAX_KEY_FILE_BYTES: Final = 64 * 1024  # a PEM Ed25519 key is 119 bytes; more is not a key
REFUSAL: Final = (
    "; refusing to start — restore the file or remove it to create a NEW identity "
    "(this changes the peer ID)"
)
_POSIX: Final = os.name == "posix"


def load_or_create_key(path: Path, *, what: str = "node key", refusal: str = REFUSAL
                       ) -> tuple[Ed25519PrivateKey, bool]:
    """Load the node's private key from ``path``, creating it if the file does not exist.

    Args:
        path: the key file (conventionally ``<data dir>/node.key``). Missing parent
            directories are created with mode 0700.
        what: what the key is, for the log line when it is created ("issuer key").
        refusal: appended to every "cannot use this file" error: what a new key would
            change (the default says: the peer ID).

    Returns:
        ``(key, created)``; ``created`` is True when a new key (a new peer ID) was made.

    Raises:
        IdentityError: the file exists but cannot be used; it is left untouched.
            Also raised if the key cannot be written.

    Error handling: a key file readable by group or others is only logged as a warning.
    """
    key = _load_existing(path, refusal)
    if key is not None:
        return key, False
    key = generate_private_key()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        atomic_write(path, pem, exclusive=True)
    except FileExistsError:
        # Another process created the key between our read and our write: use theirs.
        theirs = _load_existing(path, refusal)
        if theirs is not None:
            return theirs, False
        raise IdentityError(path, "the key file vanished while being created" + refusal) from None
    except OSError as exc:
        raise IdentityError(path, f"cannot create the key file ({_reason(exc)})") from exc
    logger.info("created a new %s at %s", what, path)
    return key, True


def atomic_write(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix.

    The file gets mode 0600 and its parent directory is created with 0700 if missing.

    Args:
        exclusive: if True, fail with FileExistsError rather than replace an existing
            ``path`` (a hard link is used, which cannot clobber). On file systems without
            hard links this falls back to a replace.

    Raises:
        FileExistsError: ``exclusive`` and ``path`` already exists.
        OSError: the file or directory could not be written.
    """
    directory = path.parent
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = directory / f".{path.name}.{secrets.token_hex(6)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        try:
            if _POSIX:
                os.fchmod(fd, 0o600)  # exact mode whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            _link_exclusive(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_directory(directory)


def _link_exclusive(tmp: Path, path: Path) -> None:
    try:
        os.link(tmp, path)  # atomic and never replaces an existing file
    except FileExistsError:
        raise
    except OSError:
        # No hard links here (FAT, some network mounts): a replace is still atomic,
        # it only loses the guarantee against a concurrent creator.
        if os.path.lexists(path):
            raise FileExistsError(str(path)) from None
        os.replace(tmp, path)


def _fsync_directory(directory: Path) -> None:
    if not _POSIX:  # Windows cannot open a directory for fsync
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_existing(path: Path, refusal: str) -> Ed25519PrivateKey | None:
    """Return the key stored at ``path``, or None if there is no file there at all."""
    # O_NONBLOCK: opening a FIFO planted at the key path must not hang the node.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        if os.path.lexists(path):
            raise IdentityError(
                path, "the key path is a symlink to a missing file" + refusal
            ) from None
        return None
    except PermissionError as exc:
        raise IdentityError(path, "cannot read the key file (permission denied)" + refusal) from exc
    except OSError as exc:
        raise IdentityError(path, f"cannot open the key file ({_reason(exc)})" + refusal) from exc
    try:
        mode = os.fstat(fd).st_mode
        data = read_up_to(fd, MAX_KEY_FILE_BYTES + 1) if stat.S_ISREG(mode) else b""
    except OSError as exc:
        raise IdentityError(path, f"cannot read the key file ({_reason(exc)})" + refusal) from exc
    finally:
        os.close(fd)
    if not stat.S_ISREG(mode):
        raise IdentityError(path, "the key path is not a regular file" + refusal)
    if _POSIX and stat.S_IMODE(mode) & 0o077:
        logger.warning(
            "key file %s has mode %04o; only its owner should read it (chmod 600 %s)",
            path, stat.S_IMODE(mode), path,
        )
    return _parse_key(path, data, refusal)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _parse_key(path: Path, data: bytes, refusal: str) -> Ed25519PrivateKey:
    if not data.strip():
        raise IdentityError(path, "the key file is empty" + refusal)
    if len(data) > MAX_KEY_FILE_BYTES:
        raise IdentityError(path, f"the key file is over {MAX_KEY_FILE_BYTES} bytes" + refusal)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:  # the PEM is encrypted
        raise IdentityError(path, "the key file is encrypted; it must not be" + refusal) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise IdentityError(
            path, "the key file is not a valid PEM private key (corrupt or truncated)" + refusal
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise IdentityError(
            path, f"the key file holds a {type(key).__name__}, not an Ed25519 key" + refusal
        )
    return key
