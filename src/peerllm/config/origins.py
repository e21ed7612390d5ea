"""How web origins and host names are written and compared (``api.cors_origins``,
``api.allowed_hosts``, and the ``Origin``/``Host`` headers the API checks against them).

One canonical form for each, used both when the settings are validated and when a
request's headers are compared with them, so that ``HTTP://LocalHost:80`` in the config
matches the ``http://localhost`` a browser sends:

* an origin is ``scheme://host[:port]``: lowercase, the scheme's default port dropped
  (browsers never send it), IPv6 in brackets, no path;
* a host is a lowercase name without a trailing dot, or an IP address in its
  ``ipaddress`` form (IPv6 without brackets).

The two settings are checked here too (``cors_origins_setting``, ``allowed_hosts_setting``),
so ``ApiConfig`` only stores what they return.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

from ..errors import ConfigError
from .validate import str_tuple

ANY: Final = "*"
DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_SCHEME: Final = re.compile(r"[a-z][a-z0-9+.-]*")
_NAME: Final = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")


def split_host_port(text: str) -> tuple[str, int | None]:
    """``host[:port]`` or ``[v6][:port]`` -> (canonical host, port or None).

    Raises:
        ValueError: not a host (with an optional port).
    """
    if text.startswith("["):
        inside, bracket, rest = text[1:].partition("]")
        if not bracket:
            raise ValueError("an IPv6 address is missing its closing ']'")
        host = canonical_host(inside, ipv6=True)
        port_text = rest.removeprefix(":") if rest.startswith(":") else None
        if rest and port_text is None:
            raise ValueError(f"unexpected {rest!r} after the IPv6 address")
    else:
        host_text, colon, port_text_or_empty = text.rpartition(":")
        if colon and ":" in host_text:
            raise ValueError("put IPv6 addresses in brackets, e.g. [::1]")
        host = canonical_host(host_text if colon else text)
        port_text = port_text_or_empty if colon else None
    if port_text is None:
        return host, None
    if not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
        raise ValueError(f"port {port_text!r} is not a number from 0 to 65535")
    return host, int(port_text)


def canonical_host(text: str, *, ipv6: bool = False) -> str:
    """A host name or IP address in canonical form (see the module docstring).

    Raises:
        ValueError: neither a DNS-style name nor an IP address (``ipv6``: not IPv6).
    """
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        if ipv6:
            raise ValueError(f"{text!r} is not an IPv6 address") from None
    else:
        if ipv6 and address.version != 6:
            raise ValueError(f"{text!r} in brackets is not an IPv6 address")
        return str(address)
    name = text.lower().removesuffix(".")
    if not _NAME.fullmatch(name):
        raise ValueError(f"{text!r} is not a host name or IP address")
    return name


def is_ip_literal(host: str) -> bool:
    """Whether a canonical host is an IP address rather than a name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def canonical_origin(text: str) -> str:
    """``scheme://host[:port]`` in canonical form; a single trailing ``/`` is forgiven.

    Raises:
        ValueError: not an origin (no scheme, a path, user info, a bad host or port).
    """
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep or not _SCHEME.fullmatch(scheme):
        raise ValueError("an origin starts with a scheme, like http://")
    rest = rest.removesuffix("/")
    if not rest:
        raise ValueError("an origin needs a host after the scheme")
    if any(c in rest for c in "/?#@") or any(c.isspace() for c in rest):
        raise ValueError("an origin is only scheme://host[:port], without a path")
    host, port = split_host_port(rest)
    shown = f"[{host}]" if ":" in host else host
    if port is None or DEFAULT_PORTS.get(scheme) == port:
        return f"{scheme}://{shown}"
    return f"{scheme}://{shown}:{port}"


def cors_origins_setting(value: object) -> tuple[str, ...]:
    """Check and normalise ``api.cors_origins``: canonical origins or ``*``, no duplicates."""
    items = str_tuple("api.cors_origins", value)
    out: list[str] = []
    for item in items:
        if item == ANY:
            out.append(item)
            continue
        try:
            out.append(canonical_origin(item))
        except ValueError as exc:
            raise ConfigError("api.cors_origins", f"{item!r} is not a web origin: {exc}; "
                              "write scheme://host[:port], e.g. http://localhost:3000"
                              ) from None
    return tuple(dict.fromkeys(out))


def allowed_hosts_setting(value: object) -> tuple[str, ...]:
    """Check and normalise ``api.allowed_hosts``: canonical names or ``*``, no ports."""
    items = str_tuple("api.allowed_hosts", value)
    out: list[str] = []
    for item in items:
        if item == ANY:
            out.append(item)
            continue
        try:
            out.append(canonical_host(item.removeprefix("[").removesuffix("]")))
        except ValueError:
            raise ConfigError("api.allowed_hosts", _host_problem(item)) from None
    return tuple(dict.fromkeys(out))


def _host_problem(item: str) -> str:
    try:
        split_host_port(item)
    except ValueError:
        return f"{item!r} is not a host name, e.g. node-1.lan"
    return f"{item!r}: give the name without a port (the Host check compares names only)"

