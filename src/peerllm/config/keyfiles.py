"""Secrets and key material given as files: the network key file, the API's TLS files.

A secret on the command line is visible to every local user (``ps``), so every secret
setting also takes a file. Only this module opens those files. The rules:

* A secret is never echoed: an error about the network key file says what is wrong
  (length, format, line) but never shows the content; a log line shows the path only.
* A file readable by group or others is used, with a WARNING naming it (as
  ``identity.keystore`` does for ``node.key``): refusing would break setups where a
  group-readable secrets mount is intended, and staying silent would hide a leak.
* Files are opened non-blocking and must be regular files, so a FIFO planted at the
  path cannot hang the node, and at most ``MAX_SECRET_FILE_BYTES`` are read.

Network key file formats (both hold the same 32-byte key):

* plain: the key as 64 hex characters, surrounding whitespace ignored (what
  ``openssl rand -hex 32 > network.key`` writes);
* libp2p ``swarm.key``: three lines, ``/key/swarm/psk/1.0.0/``, ``/base16/``, then the
  64 hex characters, as go-libp2p, kubo and js-libp2p write and read it. ``/base64/``
  (which go-libp2p also reads) is accepted too; ``/bin/`` is not, since a raw binary
  key cannot be trimmed of whitespace safely — rewrite it as ``/base16/``.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import stat
from pathlib import Path
from typing import Final

from ..errors import ConfigError

logger = logging.getLogger(__name__)

MAX_SECRET_FILE_BYTES: Final = 64 * 1024  # a PEM chain is a few KiB; a swarm.key 88 bytes
SWARM_KEY_HEADER: Final = "/key/swarm/psk/1.0.0/"
HEX64: Final = re.compile(r"[0-9a-fA-F]{64}")
KEY_FILE_FORMS: Final = ("64 hex characters, or a libp2p swarm.key (/key/swarm/psk/1.0.0/, "
                         "/base16/, then 64 hex characters)")
_POSIX: Final = os.name == "posix"


def read_secret_file(key: str, path: Path, *, what: str) -> bytes:
    """The bytes of a secret file, or ConfigError ``key`` naming ``path`` and the problem.

    ``what`` names the file in messages ("network key file", "TLS key").
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ConfigError(key, f"{what} {path} does not exist") from None
    except PermissionError:
        raise ConfigError(key, f"cannot read {what} {path} (permission denied)") from None
    except OSError as exc:
        raise ConfigError(key, f"cannot open {what} {path} ({exc.strerror or exc})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError(key, f"{what} {path} is not a regular file")
        data = read_up_to(fd, MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(key, f"cannot read {what} {path} ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise ConfigError(key, f"{what} {path} is larger than {MAX_SECRET_FILE_BYTES} bytes")
    return data


def warn_if_shared(path: Path, *, what: str) -> None:
    """Log a WARNING when ``path`` is readable or writable by group or others (POSIX)."""
    if not _POSIX:
        return
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:  # the read that follows reports it, with the setting's name
        return
    if mode & 0o077:
        logger.warning("%s %s has mode %04o; only its owner should read it (chmod 600 %s)",
                       what, path, mode, path)


def parse_network_key(text: str) -> str:
    """The key in a network key file's text, as 64 lowercase hex characters.

    Raises:
        ValueError: the text is neither form (see the module docstring); the message
            never contains the text itself.
    """
    lines = [line.strip() for line in text.strip().splitlines()]
    if not lines:
        raise ValueError(f"the file is empty; expected {KEY_FILE_FORMS}")
    if len(lines) == 1:
        if HEX64.fullmatch(lines[0]):
            return lines[0].lower()
        raise ValueError(f"expected {KEY_FILE_FORMS}; found one line of {len(lines[0])} "
                         "characters")
    if lines[0] != SWARM_KEY_HEADER:
        raise ValueError(f"expected {KEY_FILE_FORMS}; found {len(lines)} lines, the first "
                         f"of which is not {SWARM_KEY_HEADER}")
    if len(lines) != 3:
        raise ValueError(f"a swarm.key has 3 lines ({SWARM_KEY_HEADER}, the encoding, the "
                         f"key); found {len(lines)}")
    encoding, body = lines[1], lines[2]
    if encoding == "/base16/":
        if not HEX64.fullmatch(body):
            raise ValueError(f"line 3 must be 64 hex characters; found {len(body)} characters")
        return body.lower()
    if encoding == "/base64/":
        try:
            raw = base64.b64decode(body, validate=True)
        except binascii.Error:
            raise ValueError("line 3 is not valid base64") from None
        if len(raw) != 32:
            raise ValueError(f"line 3 must decode to 32 bytes; found {len(raw)}")
        return raw.hex()
    if encoding == "/bin/":
        raise ValueError("/bin/ swarm keys are not supported; write the key as /base16/ hex")
    raise ValueError("line 2 must be /base16/ (or /base64/)")


def read_network_key_file(key: str, path: Path, *, warn: bool) -> str:
    """The network key held in ``path`` (either form), as 64 lowercase hex characters.

    Args:
        key: the setting to blame in errors (``p2p.network_key_file``).
        warn: log a WARNING if the file is readable by others (once, where it is used).

    Raises:
        ConfigError: ``key``; the file is missing, unreadable, too big, not text, or
            holds no key. The message names the file, never its content.
    """
    data = read_secret_file(key, path, what="network key file")
    if warn:
        warn_if_shared(path, what="network key file")
    try:
        return parse_network_key(data.decode("ascii"))
    except UnicodeDecodeError:
        raise ConfigError(key, f"network key file {path} is not text; expected "
                          f"{KEY_FILE_FORMS}") from None
    except ValueError as exc:
        raise ConfigError(key, f"network key file {path}: {exc}") from None


def read_up_to(fd: int, limit: int) -> bytes:
    """At most ``limit`` bytes from ``fd`` (a bounded read of a file that may be huge)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit and (chunk := os.read(fd, limit - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
