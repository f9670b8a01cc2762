"""The scan scope policy: which addresses and names a task may touch.

Pure and without I/O. Checked twice: when a task is created (every target, by
:func:`ScopePolicy.target_reason`) and by the worker after DNS resolution,
for every name and every address it is about to connect to (the recon
pipeline's ``ReconContext.scope_check``), so a domain that resolves to a
denied address is never scanned::

    policy = ScopePolicy.from_config(config)
    ctx = ReconContext(..., scope_check=policy.check)   # check("a.example") / check("192.0.2.7")

Rules, first match wins:

1. always denied, whatever the configuration: cloud metadata endpoints
   (169.254.169.254, fd00:ec2::254, 100.100.100.200, 192.0.0.192,
   ``metadata.google.internal``, ``metadata.goog``), link-local
   (169.254.0.0/16, fe80::/10), unspecified, multicast and reserved ranges;
   IPv4 addresses embedded in IPv6 (``::ffff:a.b.c.d``, 6to4, NAT64
   ``64:ff9b::/96``) are judged as the IPv4 address they reach;
2. ``scope.denied_cidrs`` / ``scope.denied_domains`` (a suffix denies the
   name and every name under it);
3. when ``scope.allowed_cidrs`` / ``scope.allowed_domains`` is non-empty,
   only addresses / names inside one of them (an explicit allowed CIDR also
   enables private or loopback addresses inside it);
4. loopback (127.0.0.0/8, ::1, ``localhost``) only with
   ``scope.allow_loopback``; other non-global addresses (RFC 1918, CGNAT,
   ULA, documentation ranges) only with ``scope.allow_private``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from controlplane.config import Config, ScopeConfig

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _nets(*items: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(i) for i in items)


METADATA_ADDRESSES = _nets("169.254.169.254/32", "fd00:ec2::254/128", "100.100.100.200/32", "192.0.0.192/32")
METADATA_NAMES = ("metadata.google.internal", "metadata.goog", "instance-data.ec2.internal")
ALWAYS_DENIED = METADATA_ADDRESSES + _nets(
    "169.254.0.0/16",  # IPv4 link-local (every cloud's metadata service lives here)
    "fe80::/10",  # IPv6 link-local
    "0.0.0.0/8",  # "this network"
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, broadcast
    "::/128",
    "ff00::/8",  # IPv6 multicast
)
LOOPBACK = _nets("127.0.0.0/8", "::1/128")
PRIVATE = _nets(
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "fc00::/7",
    "2001:db8::/32",
    "100::/64",
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_v4(addr: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address reaches directly (mapped, 6to4, NAT64), if any."""
    if isinstance(addr, ipaddress.IPv4Address):
        return None
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr in _NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def _overlaps(net: IPNetwork, nets: Iterable[IPNetwork]) -> IPNetwork | None:
    return next((n for n in nets if n.version == net.version and net.overlaps(n)), None)  # type: ignore[arg-type]


def normalize_name(name: str) -> str:
    """Lower case, no trailing dot, IDN labels in their ASCII (punycode) form."""
    name = name.strip().rstrip(".").lower()
    if not name.isascii():
        try:
            import idna

            name = str(idna.encode(name, uts46=True).decode("ascii"))
        except (UnicodeError, ValueError, ImportError):
            name = name.encode("idna", errors="strict").decode("ascii") if name else name
    return name


def _under(name: str, suffix: str) -> bool:
    return name == suffix or name.endswith("." + suffix)


@dataclass(frozen=True)
class ScopePolicy:
    """What may be scanned; build it with :meth:`from_config`."""

    allow_private: bool = False
    allow_loopback: bool = False
    allowed_cidrs: tuple[IPNetwork, ...] = ()
    denied_cidrs: tuple[IPNetwork, ...] = ()
    allowed_domains: tuple[str, ...] = ()
    denied_domains: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_scope_config(cls, scope: ScopeConfig) -> ScopePolicy:
        """Parse the ``scope`` section; a bad CIDR raises ValueError naming it."""

        def nets(values: list[str], key: str) -> tuple[IPNetwork, ...]:
            out = []
            for value in values:
                try:
                    out.append(ipaddress.ip_network(value.strip(), strict=False))
                except ValueError:
                    raise ValueError(f"scope.{key}: {value!r} is not a CIDR network") from None
            return tuple(out)

        return cls(
            allow_private=scope.allow_private,
            allow_loopback=scope.allow_loopback,
            allowed_cidrs=nets(scope.allowed_cidrs, "allowed_cidrs"),
            denied_cidrs=nets(scope.denied_cidrs, "denied_cidrs"),
            allowed_domains=tuple(normalize_name(d).lstrip("*.") for d in scope.allowed_domains if d.strip()),
            denied_domains=tuple(normalize_name(d).lstrip("*.") for d in scope.denied_domains if d.strip()),
        )

    @classmethod
    def from_config(cls, config: Config) -> ScopePolicy:
        """The policy of a deployment's ``scope`` section."""
        return cls.from_scope_config(config.scope)

    # -- addresses ---------------------------------------------------------------

    def ip_reason(self, ip: str | IPAddress) -> str | None:
        """Why ``ip`` may not be scanned, or None when it may."""
        try:
            addr = ip if not isinstance(ip, str) else ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            return f"{str(ip)[:64]!r} is not an IP address"
        inner = _embedded_v4(addr)
        if inner is not None:
            reason = self.ip_reason(inner)
            return None if reason is None else f"{addr} reaches {inner}: {reason}"
        net = ipaddress.ip_network(addr)
        return self.network_reason(net)

    def allows_ip(self, ip: str | IPAddress) -> bool:
        """Whether ``ip`` may be scanned."""
        return self.ip_reason(ip) is None

    def network_reason(self, net: IPNetwork) -> str | None:
        """Why some address of ``net`` may not be scanned, or None when all may."""
        hit = _overlaps(net, METADATA_ADDRESSES)
        if hit is not None:
            return f"{net} includes the cloud metadata address {hit.network_address}, which is never scanned"
        hit = _overlaps(net, ALWAYS_DENIED)
        if hit is not None:
            return f"{net} overlaps {hit} (link-local, multicast or reserved), which is never scanned"
        hit = _overlaps(net, self.denied_cidrs)
        if hit is not None:
            return f"{net} overlaps the denied range {hit} (scope.denied_cidrs)"
        if self.allowed_cidrs:
            if any(net.version == a.version and net.subnet_of(a) for a in self.allowed_cidrs):  # type: ignore[arg-type]
                return None
            return f"{net} is outside scope.allowed_cidrs"
        hit = _overlaps(net, LOOPBACK)
        if hit is not None:
            return None if self.allow_loopback else f"{net} is loopback ({hit}); enable scope.allow_loopback"
        hit = _overlaps(net, PRIVATE)
        if hit is None and not (net.network_address.is_global and net.broadcast_address.is_global):
            hit = net
        if hit is not None and not self.allow_private:
            return f"{net} is a private or non-global range ({hit}); enable scope.allow_private"
        return None

    # -- names -------------------------------------------------------------------

    def host_reason(self, host: str) -> str | None:
        """Why a host (a name or an IP literal) may not be scanned, or None when it may.

        For a name only the name is judged; the addresses it resolves to must be
        checked too (:meth:`ip_reason`) before connecting.
        """
        text = host.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        try:
            return self.ip_reason(ipaddress.ip_address(text))
        except ValueError:
            pass
        try:
            name = normalize_name(text)
        except UnicodeError:
            return f"{host[:64]!r} is not a valid host name"
        if not name:
            return "empty host name"
        for meta in METADATA_NAMES:
            if _under(name, meta):
                return f"{name} is a cloud metadata endpoint, which is never scanned"
        for denied in self.denied_domains:
            if _under(name, denied):
                return f"{name} is under the denied domain {denied} (scope.denied_domains)"
        if self.allowed_domains:
            if any(_under(name, allowed) for allowed in self.allowed_domains):
                return None
            return f"{name} is outside scope.allowed_domains"
        if _under(name, "localhost") and not self.allow_loopback:
            return f"{name} is loopback; enable scope.allow_loopback"
        return None

    def allows_host(self, host: str) -> bool:
        """Whether a host (name or IP literal) may be scanned; for a name, check its addresses too."""
        return self.host_reason(host) is None

    def check(self, host: str) -> bool:
        """``scope_check`` for workers: a name or an address, True when it may be scanned."""
        return self.host_reason(host) is None

    __call__ = check

    # -- targets -----------------------------------------------------------------

    def target_reason(self, target: str) -> str | None:
        """Why a normalized target (IP, CIDR, IP range, host:port, URL or domain) may not be scanned."""
        text = target.strip()
        try:
            return self.ip_reason(ipaddress.ip_address(text))
        except ValueError:
            pass
        if "://" in text:
            try:
                host = urlsplit(text).hostname
            except ValueError:
                host = None
            return self.host_reason(host) if host else f"{text[:64]!r} has no host"
        if "/" in text:
            try:
                return self.network_reason(ipaddress.ip_network(text, strict=False))
            except ValueError:
                return f"{text[:64]!r} is not a CIDR network"
        first, dash, last = text.partition("-")
        if dash:
            try:
                bounds: tuple[IPAddress, IPAddress] | None = (
                    ipaddress.ip_address(first),
                    ipaddress.ip_address(last),
                )
            except ValueError:
                bounds = None
            if bounds is not None:
                start, end = bounds
                for net in ipaddress.summarize_address_range(start, end):  # type: ignore[arg-type]
                    reason = self.network_reason(net)
                    if reason is not None:
                        return reason
                return None
        host, colon, port = text.rpartition(":")
        if colon and port.isdigit():
            return self.host_reason(host)
        return self.host_reason(text)

    def check_targets(self, targets: Iterable[Any]) -> tuple[int, str] | None:
        """The index and reason of the first target out of scope, or None."""
        for index, target in enumerate(targets):
            reason = self.target_reason(str(target))
            if reason is not None:
                return index, reason
        return None
