"""The guard on outbound requests to user-given URLs (webhooks): no way into the service's own network.

A URL is checked by resolving its host once and refusing it when any address it resolves to is
not a public unicast address: loopback, private (RFC 1918, unique-local), link-local, shared
(100.64/10), multicast, unspecified, reserved, documentation ranges, and the cloud metadata
addresses. The caller then connects to the *checked address* (``CheckedURL.ip``), never to the
name again, so a second, different DNS answer cannot redirect the request (DNS rebinding).
Only ``http`` and ``https``, no user-info in the URL, and the sender follows no redirects.

``allow_private=True`` (setting ``WEBHOOK_ALLOW_PRIVATE_NETWORKS``) admits loopback, private,
link-local and shared addresses, for receivers inside one's own network (and for tests); the
metadata endpoints, multicast and unspecified addresses stay refused even then.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlsplit

from i18n import messages

MAX_URL_LENGTH = 2048
SCHEMES = {"http": 80, "https": 443}
# Instance-metadata services of the common clouds (AWS, GCP, Azure, OpenStack: 169.254.169.254;
# AWS over IPv6; Alibaba; Oracle). Refused whatever the settings say.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "fd00:ec2::254",
        "100.100.100.200",
        "192.0.0.192",
    )
)
METADATA_HOSTNAMES = frozenset({"metadata.google.internal", "metadata", "instance-data"})

Resolver = Callable[[str, int], list[str]]

# Host names are resolved on threads of their own, with a time limit: slow DNS for a user-given
# host must not hold the default thread pool that database and file reads share.
RESOLVE_TIMEOUT_S = 5.0
_resolving = ThreadPoolExecutor(max_workers=4, thread_name_prefix="resolve")


class RefusedURL(ValueError):
    """The URL may not be called. ``message`` says why from the catalogue (safe to show the user, in
    their language); ``str()`` is its English text, for logs and the delivery log."""

    def __init__(self, message: messages.Message):
        super().__init__(message.render("en"))
        self.message = message


@dataclass(frozen=True)
class CheckedURL:
    """A URL that passed the guard, with the one address it may be called at."""

    url: str
    scheme: str
    host: str  # as written (what the Host header and TLS's SNI name carry)
    port: int
    ip: str  # the checked address to connect to
    target: str  # path and query

    def pinned_url(self) -> str:
        """The URL with the checked address in place of the host name."""
        address = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{self.scheme}://{address}:{self.port}{self.target}"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == SCHEMES[self.scheme] else f"{host}:{self.port}"


def system_resolver(host: str, port: int) -> list[str]:
    """All addresses ``host`` resolves to (blocking: call it from a thread in async code)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


# IPv6 ranges that carry an IPv4 address in their last 32 bits (RFC 4291 IPv4-compatible and
# IPv4-mapped, RFC 7915 SIIT, RFC 6052 and RFC 8215 NAT64). Checked in this order: the narrower first.
_EMBEDDING_LAST_32 = (
    (ipaddress.IPv6Network("::ffff:0:0/96"), True),  # IPv4-mapped: the IPv4 address itself
    (ipaddress.IPv6Network("::ffff:0:0:0/96"), False),  # SIIT IPv4-translated
    (ipaddress.IPv6Network("64:ff9b::/96"), True),  # well-known NAT64 prefix: routes to the public IPv4
    (ipaddress.IPv6Network("64:ff9b:1::/48"), False),  # local-use NAT64: inside someone's network
    (ipaddress.IPv6Network("::/96"), False),  # IPv4-compatible (deprecated)
)
_TEREDO = ipaddress.IPv6Network("2001::/32")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
# Ranges Python 3.11's ``is_global`` still calls global although no public host lives there.
_NOT_GLOBAL_V6 = (
    ipaddress.IPv6Network("64:ff9b:1::/48"),
    ipaddress.IPv6Network("::ffff:0:0:0/96"),
    ipaddress.IPv6Network("::/96"),
    ipaddress.IPv6Network("100::/64"),
    ipaddress.IPv6Network("2001::/23"),
    ipaddress.IPv6Network("2001:db8::/32"),
    ipaddress.IPv6Network("5f00::/16"),
    ipaddress.IPv6Network("3fff::/20"),
)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> Optional[tuple[list[ipaddress.IPv4Address], bool]]:
    """The IPv4 address(es) ``ip`` carries, and whether the IPv6 form itself is globally routable.

    None when ``ip`` embeds no IPv4 address. Teredo carries two (its server and the client, whose
    bits are inverted); 6to4 carries one in bits 16–48; the others in their last 32 bits.
    """
    if ip in _TEREDO:
        server, client = ip.teredo or (None, None)
        return [a for a in (server, client) if a is not None], False
    if ip in _SIX_TO_FOUR and ip.sixtofour is not None:
        return [ip.sixtofour], True
    for network, routable in _EMBEDDING_LAST_32:
        if ip in network:
            return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)], routable
    return None


def address_refusal(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_private: bool
) -> Optional[messages.Message]:
    """Why ``ip`` may not be called, or None when it may.

    An allow-rule: after unwrapping any IPv4 address carried inside an IPv6 one, only globally
    routable unicast passes (or, with ``allow_private``, the private kinds listed in the module's
    docstring); anything not known to be public is refused.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = embedded_ipv4(ip)
        if embedded is not None:
            addresses, routable = embedded
            for address in addresses:
                reason = address_refusal(address, allow_private)
                if reason is not None:
                    return reason
            if routable or allow_private:
                return None
            return messages.ADDRESS_TRANSLATION
    if ip in METADATA_ADDRESSES:
        return messages.ADDRESS_METADATA
    if ip.is_unspecified:
        return messages.ADDRESS_UNSPECIFIED
    if ip.is_multicast:
        return messages.ADDRESS_MULTICAST
    publicly_routed = ip.is_global and not (
        isinstance(ip, ipaddress.IPv6Address) and any(ip in network for network in _NOT_GLOBAL_V6)
    )
    if publicly_routed:
        return None
    if allow_private and (
        ip.is_private or ip.is_loopback or ip.is_link_local or ip in ipaddress.ip_network("100.64.0.0/10")
    ):
        return None
    if ip.is_loopback:
        return messages.ADDRESS_LOOPBACK
    if ip.is_link_local:
        return messages.ADDRESS_LINK_LOCAL
    if ip.is_private:
        return messages.ADDRESS_PRIVATE
    return messages.ADDRESS_RESERVED


def check_url(url: str, *, allow_private: bool = False, resolver: Resolver = system_resolver) -> CheckedURL:
    """Check ``url`` and pick the address to call; raises :class:`RefusedURL` with the reason."""
    if not isinstance(url, str) or not url:
        raise RefusedURL(messages.URL_EMPTY)
    if len(url) > MAX_URL_LENGTH:
        raise RefusedURL(messages.URL_TOO_LONG(limit=MAX_URL_LENGTH))
    if any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        raise RefusedURL(messages.URL_CONTROL_CHARACTERS)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise RefusedURL(messages.URL_UNPARSABLE(error=str(exc))) from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise RefusedURL(messages.URL_SCHEME)
    if parts.username is not None or parts.password is not None:
        raise RefusedURL(messages.URL_CREDENTIALS)
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise RefusedURL(messages.URL_NO_HOST)
    if host in METADATA_HOSTNAMES:
        raise RefusedURL(messages.HOST_NOT_ALLOWED(host=host))
    if (host == "localhost" or host.endswith(".localhost")) and not allow_private:
        raise RefusedURL(messages.HOST_LOOPBACK_NAME(host=host))
    port = port or SCHEMES[scheme]
    try:
        literal = ipaddress.ip_address(host)
        addresses = [str(literal)]
    except ValueError:
        try:
            addresses = resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise RefusedURL(messages.HOST_UNRESOLVED(host=host)) from exc
    if not addresses:
        raise RefusedURL(messages.HOST_UNRESOLVED(host=host))
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
        reason = address_refusal(ip, allow_private)
        if reason is not None:
            # Any refused answer refuses the URL: the name may be balanced across both kinds.
            raise RefusedURL(messages.HOST_RESOLVES_TO(host=host, reason=reason))
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return CheckedURL(url=url, scheme=scheme, host=host, port=port, ip=addresses[0].split("%", 1)[0], target=target)


async def check_url_async(
    url: str, *, allow_private: bool = False, resolver: Optional[Resolver] = None, timeout: Optional[float] = None
) -> CheckedURL:
    """:func:`check_url` from async code: on the resolving threads, refused after ``timeout`` seconds
    (``RESOLVE_TIMEOUT_S`` by default)."""
    timeout = RESOLVE_TIMEOUT_S if timeout is None else timeout

    def check() -> CheckedURL:
        if resolver is None:
            return check_url(url, allow_private=allow_private)
        return check_url(url, allow_private=allow_private, resolver=resolver)

    future = asyncio.get_running_loop().run_in_executor(_resolving, check)
    try:
        return await asyncio.wait_for(future, timeout)
    except asyncio.TimeoutError:
        raise RefusedURL(messages.HOST_RESOLVE_TIMEOUT(seconds=f"{timeout:g}")) from None


__all__ = [
    "RefusedURL",
    "CheckedURL",
    "check_url",
    "check_url_async",
    "address_refusal",
    "embedded_ipv4",
    "system_resolver",
    "METADATA_ADDRESSES",
]
