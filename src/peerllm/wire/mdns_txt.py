"""The TXT record a PeerLLM node publishes over mDNS/DNS-SD: encode ours, decode theirs.

TXT record (each ``key=value`` string <= 255 bytes, all utf-8):
    peer_id   base58 libp2p peer id
    name      node name (the instance label is ``<name>-<peer_id[-8:]>``)
    models    comma-joined model ids; truncated to fit
    addrs     comma-joined full multiaddrs (ending in ``/p2p/<peer_id>``), or, when
              too long, split over ``addr0``, ``addr1``, ... (at most MAX_ADDR_KEYS)

TXT data from the network is untrusted: a record that is not valid utf-8, lacks a key,
or has an out-of-range value raises ValueError (the caller drops that service). A forged
record can only point at addresses ending in the claimed peer id, and the libp2p
handshake verifies that id when dialling. Pure: p2p/mdns.py does the zeroconf I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

MAX_TXT_ENTRY_BYTES: Final = 255  # one TXT string is length-prefixed by a single byte
MAX_ADDR_KEYS: Final = 4  # addr0..addr3: keeps the whole TXT record near 1.4 KB
MAX_NAME_BYTES: Final = 63 - 9  # "<name>-<8 chars>" must fit one 63-byte DNS label
MAX_PEER_ID_CHARS: Final = 128
_PEER_ID_RE: Final = re.compile(r"[1-9A-HJ-NP-Za-km-z]+")  # base58btc alphabet


@dataclass(frozen=True, kw_only=True)
class MdnsAnnouncement:
    """What this node publishes.

    ``addrs`` are full multiaddrs ending in ``/p2p/<peer_id>``. ``port`` goes into the
    SRV record only (0 is allowed: peers dial ``addrs``). Models that cannot be
    published (empty, a comma in the id, not utf-8, or past the 255-byte TXT limit) are
    left out (``TxtRecord.models_left_out``); everything else that is unpublishable
    raises ValueError here.
    """

    peer_id: str
    name: str
    port: int
    addrs: tuple[str, ...]
    models: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_peer_id(self.peer_id)
        _check_name(self.name)
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} out of range")
        for addr in self.addrs:
            _check_addr(addr, self.peer_id)


@dataclass(frozen=True, kw_only=True)
class MdnsPeer:
    """A PeerLLM node seen on the LAN (possibly again, after its record changed)."""

    peer_id: str
    name: str
    addrs: tuple[str, ...]
    models: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class TxtRecord:
    """The TXT properties of an announcement, and what did not fit in them."""

    properties: Mapping[str, str]
    models_left_out: int = 0
    addrs_left_out: int = 0


def instance_label(announcement: MdnsAnnouncement) -> str:
    """The DNS-SD instance label ``<name>-<peer_id[-8:]>``: unique even when names collide."""
    return f"{announcement.name}-{announcement.peer_id[-8:]}"


def encode_txt(announcement: MdnsAnnouncement) -> TxtRecord:
    """The TXT properties for ``announcement``, each ``key=value`` within 255 bytes."""
    props = {"peer_id": announcement.peer_id, "name": announcement.name}
    publishable = [m for m in announcement.models if m and "," not in m and _is_utf8(m)]
    models = _fit(publishable, MAX_TXT_ENTRY_BYTES - len("models="))
    props["models"] = ",".join(models)
    models_left_out = len(announcement.models) - len(models)
    addrs = list(announcement.addrs)
    if _entry_len("addrs", ",".join(addrs)) <= MAX_TXT_ENTRY_BYTES:
        props["addrs"] = ",".join(addrs)
        return TxtRecord(properties=props, models_left_out=models_left_out)
    budget = MAX_TXT_ENTRY_BYTES - len("addr0=")
    for i in range(MAX_ADDR_KEYS):
        if not addrs:
            break
        chunk = _fit(addrs, budget)
        props[f"addr{i}"] = ",".join(chunk)
        addrs = addrs[len(chunk) :]
    return TxtRecord(properties=props, models_left_out=models_left_out,
                     addrs_left_out=len(addrs))


def decode_txt(properties: Mapping[bytes, bytes | None]) -> MdnsPeer:
    """Parse TXT properties received from the network.

    Raises:
        ValueError: (including UnicodeDecodeError) the record is not a usable PeerLLM
            record; callers drop the service.
    """
    peer_id = _required(properties, "peer_id")
    _check_peer_id(peer_id)
    name = _required(properties, "name")
    _check_name(name)
    models = tuple(m for m in (_optional(properties, "models") or "").split(",") if m)
    parts = [_optional(properties, "addrs")]
    for i in range(MAX_ADDR_KEYS):
        part = _optional(properties, f"addr{i}")
        if part is None:
            break
        parts.append(part)
    addrs = tuple(a for part in parts if part for a in part.split(",") if a)
    if not addrs:
        raise ValueError("no addrs")
    for addr in addrs:
        _check_addr(addr, peer_id)
    return MdnsPeer(peer_id=peer_id, name=name, addrs=addrs, models=models)


def _is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def _entry_len(key: str, value: str) -> int:
    return len(key.encode()) + 1 + len(value.encode())


def _fit(items: Iterable[str], budget: int) -> list[str]:
    """The longest prefix of ``items`` whose comma-join is at most ``budget`` bytes."""
    out: list[str] = []
    used = -1  # no comma before the first item
    for item in items:
        used += 1 + len(item.encode())
        if used > budget:
            break
        out.append(item)
    return out


def _required(properties: Mapping[bytes, bytes | None], key: str) -> str:
    value = _optional(properties, key)
    if not value:
        raise ValueError(f"missing {key}")
    return value


def _optional(properties: Mapping[bytes, bytes | None], key: str) -> str | None:
    raw = properties.get(key.encode())
    return None if raw is None else raw.decode("utf-8")


def _check_peer_id(peer_id: str) -> None:
    if len(peer_id) > MAX_PEER_ID_CHARS or not _PEER_ID_RE.fullmatch(peer_id):
        raise ValueError(f"peer_id {peer_id[:MAX_PEER_ID_CHARS]!r} is not a base58 peer id")


def _check_name(name: str) -> None:
    # isprintable() first: it refuses lone surrogates, which encode() would raise on.
    if not name or "." in name or not name.isprintable() or len(name.encode()) > MAX_NAME_BYTES:
        raise ValueError(f"name {name[:80]!r}: need 1-{MAX_NAME_BYTES} bytes, no '.'")


def _check_addr(addr: str, peer_id: str) -> None:
    ok = (
        addr.startswith("/")
        and addr.endswith(f"/p2p/{peer_id}")
        and addr.isascii()
        and addr.isprintable()
        and not any(c in addr for c in ", ")
        and _entry_len("addr0", addr) <= MAX_TXT_ENTRY_BYTES
    )
    if not ok:
        raise ValueError(f"addr {addr[:300]!r} is not a multiaddr ending in /p2p/{peer_id}")
