"""The client's address: the one place that decides it (audit, lockout, approvals, tokens).

A client can send any X-Forwarded-For it likes, so by default the address is REMOTE_ADDR and
the header is ignored. Behind a reverse proxy, LIFEBOAT["TRUSTED_PROXIES"] (addresses or
networks; `LIFEBOAT_TRUSTED_PROXIES`) names the proxies: only when REMOTE_ADDR is one of them
is the header read, from the right, skipping trusted proxies; the first address no trusted
proxy accounts for is the client (what the client wrote further left is ignored).

Only addresses come out: a value that is not one is None, so it never reaches an IP column.
"""

import ipaddress
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_address(value: object) -> Address | None:
    """The address in `value`, IPv4-mapped IPv6 as IPv4 and without a zone; else None."""
    try:
        addr = ipaddress.ip_address(str(value).strip())
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return addr.ipv4_mapped
        if addr.scope_id is not None:
            # The zone names an interface of the peer's host: meaningless to store.
            return ipaddress.IPv6Address(int(addr))
    return addr


@lru_cache(maxsize=8)
def parse_networks(
    entries: tuple[str, ...], setting: str = "LIFEBOAT_TRUSTED_PROXIES"
) -> tuple[Network, ...]:
    networks: list[Network] = []
    for entry in (e.strip() for e in entries):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ImproperlyConfigured(
                f"{setting}: {entry!r} is not an IP address or network."
            ) from None
    return tuple(networks)


def trusted_proxies() -> tuple[Network, ...]:
    return parse_networks(tuple(settings.LIFEBOAT.get("TRUSTED_PROXIES") or ()))


def _trusted(addr: Address, proxies: tuple[Network, ...]) -> bool:
    return any(addr in net for net in proxies)


def client_ip(request: HttpRequest | None) -> str | None:
    """The address of the client that sent `request` (None without a request or address)."""
    if request is None:
        return None
    peer = parse_address(request.META.get("REMOTE_ADDR", ""))
    proxies = trusted_proxies()
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if peer is None or not forwarded.strip() or not _trusted(peer, proxies):
        return str(peer) if peer is not None else None
    client = peer
    for hop in reversed(forwarded.split(",")):
        addr = parse_address(hop)
        if addr is None:
            return None  # a trusted proxy passed on something that is not an address
        client = addr
        if not _trusted(addr, proxies):
            break
    return str(client)
