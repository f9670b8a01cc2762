"""The scan scope policy: which addresses and names a task may touch.

Pure and without I/O. Checked twice: when a task is created (every target, by
:func:`ScopePolicy.target_reason`) and by the worker after DNS resolution,
for every name and every address (A and AAAA answers alike) it is about to
connect to (the recon pipeline's ``ReconContext.scope_check``), so a domain
that resolves to a denied address is never scanned::

    policy = ScopePolicy.from_config(config)
    ctx = ReconContext(..., scope_check=policy.check)   # check("a.example") / check("192.0.2.7")

Rules, first match wins:

1. always denied, whatever the configuration: cloud metadata endpoints
   (169.254.169.254, fd00:ec2::254, 100.100.100.200, 192.0.0.192,
   ``metadata.google.internal``, ``metadata.goog``), link-local
   (169.254.0.0/16, fe80::/10), unspecified, multicast and reserved ranges;
2. every IPv6 address when ``scope.allow_ipv6`` is false;
3. ``scope.denied_cidrs`` / ``scope.denied_domains`` (a suffix denies the
   name and every name under it);
4. an IPv6 address that embeds IPv4 addresses (see :data:`EMBEDDINGS`:
   IPv4-compatible, -mapped, -translated, 6to4, Teredo, NAT64) is judged as
   the IPv4 address(es) it reaches, and is denied if any of them is;
5. when ``scope.allowed_cidrs`` / ``scope.allowed_domains`` is non-empty,
   only addresses / names inside one of them (an explicit allowed CIDR also
   enables private or loopback addresses inside it);
6. loopback (127.0.0.0/8, ::1, ``localhost``) only with
   ``scope.allow_loopback``; other non-global addresses (RFC 1918, CGNAT,
   ULA, documentation and IETF protocol ranges) only with ``scope.allow_private``.

A CIDR network (or an IP range) is allowed exactly when every address it
covers is: it is cut at the edge of every range the rules name until each
piece is judged by one verdict, and an IPv6 piece inside an embedding prefix
is judged by the IPv4 range(s) it embeds.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

import idna

from controlplane.config import Config, ScopeConfig
from controlplane.core.targets import split_target_items

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# A denied piece of a network and what is wrong with it ("is loopback (...); enable ...").
Finding = tuple[IPNetwork, str]


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
    "2001::/23",  # IETF protocol assignments (Teredo, 2001::/32, is judged by what it embeds)
    "100::/64",
)

_ALL_ONES = 0xFFFFFFFF


@dataclass(frozen=True)
class Embedding:
    """An IPv6 prefix whose addresses carry IPv4 addresses, and where those bits are.

    ``readings`` lists, per embedded address, its bit fields ``(first bit, length)``
    (bit 0 is the most significant) and a XOR mask. ``alternatives``: the readings
    are the possible layouts of one address (an operator picks one), not several
    addresses; a reading of exactly 0.0.0.0 (zero padding) is then ignored while
    another reading is not 0.0.0.0.
    """

    prefix: ipaddress.IPv6Network
    name: str
    readings: tuple[tuple[tuple[tuple[int, int], ...], int], ...]
    alternatives: bool = False

    def ranges(self, block: ipaddress.IPv6Network) -> list[tuple[int, ipaddress.IPv4Network]]:
        """Each reading's index and the IPv4 range it covers over ``block`` (a network in :attr:`prefix`)."""
        value, plen = int(block.network_address), block.prefixlen
        out = []
        for index, (fields, xor) in enumerate(self.readings):
            bits = fixed = 0
            for start, length in fields:
                bits = (bits << length) | ((value >> (128 - start - length)) & ((1 << length) - 1))
                fixed += max(0, min(length, plen - start))
            mask = (_ALL_ONES << (32 - fixed)) & _ALL_ONES
            out.append((index, ipaddress.IPv4Network(((bits ^ xor) & mask, fixed))))
        if self.alternatives:
            real = [(i, r) for i, r in out if not (r.prefixlen == 32 and int(r.network_address) == 0)]
            out = real or out[:1]
        return out

    def piece(
        self, block: ipaddress.IPv6Network, index: int, reached: ipaddress.IPv4Network
    ) -> ipaddress.IPv6Network:
        """A network inside ``block`` whose every address has reading ``index`` in ``reached``.

        ``reached`` is part of that reading's range over ``block``; bits neither
        fixed by ``block`` nor by ``reached`` keep the value of ``block``'s first address.
        """
        fields, xor = self.readings[index]
        value, last = int(block.network_address), block.prefixlen
        raw = int(reached.network_address) ^ xor
        positions = [p for start, length in fields for p in range(start, start + length)]
        for i, position in enumerate(positions[: reached.prefixlen]):
            shift = 127 - position
            value = (value & ~(1 << shift)) | (((raw >> (31 - i)) & 1) << shift)
            last = max(last, position + 1)
        return ipaddress.IPv6Network(((value >> (128 - last)) << (128 - last), last))


_LOW32 = (((96, 32),), 0)
EMBEDDINGS: tuple[Embedding, ...] = (
    # ::/96 less :: and ::1, which are the IPv6 unspecified and loopback addresses.
    Embedding(ipaddress.IPv6Network("::/96"), "IPv4-compatible", (_LOW32,)),
    Embedding(ipaddress.IPv6Network("::ffff:0:0/96"), "IPv4-mapped", (_LOW32,)),
    Embedding(ipaddress.IPv6Network("::ffff:0:0:0/96"), "IPv4-translated", (_LOW32,)),
    Embedding(ipaddress.IPv6Network("2002::/16"), "6to4", ((((16, 32),), 0),)),
    # Teredo: the server (bits 32-63) and the client, whose address is stored inverted.
    Embedding(ipaddress.IPv6Network("2001::/32"), "Teredo", ((((32, 32),), 0), (((96, 32),), _ALL_ONES))),
    Embedding(ipaddress.IPv6Network("64:ff9b::/96"), "NAT64", (_LOW32,)),
    # RFC 8215 local-use NAT64: the RFC 6052 /48 layout (skipping the u octet) or a /96 inside it.
    Embedding(
        ipaddress.IPv6Network("64:ff9b:1::/48"),
        "local-use NAT64",
        ((((48, 16), (72, 16)), 0), _LOW32),
        alternatives=True,
    ),
)
_NOT_EMBEDDING = frozenset({0, 1})  # :: and ::1 inside ::/96


def _span(net: IPNetwork) -> tuple[int, int]:
    return int(net.network_address), int(net.broadcast_address)


def _holder(block: IPNetwork, nets: Iterable[IPNetwork]) -> IPNetwork | None:
    """The first of ``nets`` that contains ``block`` (a piece no range of the rules cuts)."""
    lo, hi = _span(block)
    for net in nets:
        if net.version == block.version:
            n_lo, n_hi = _span(net)
            if n_lo <= lo and hi <= n_hi:
                return net
    return None


def _embedding_of(block: IPNetwork) -> Embedding | None:
    if block.version != 6:
        return None
    if block.prefixlen == 128 and int(block.network_address) in _NOT_EMBEDDING:
        return None
    return next((e for e in EMBEDDINGS if _holder(block, (e.prefix,)) is not None), None)


def show(net: IPNetwork) -> str:
    """A network as text; a single address without its prefix length."""
    return str(net.network_address) if net.num_addresses == 1 else str(net)


def normalize_name(name: str) -> str:
    """Lower case, no trailing dot, IDN labels in their ASCII (punycode) form."""
    name = name.strip().rstrip(".").lower()
    if not name.isascii():
        try:
            name = str(idna.encode(name, uts46=True).decode("ascii"))
        except (UnicodeError, ValueError):
            name = name.encode("idna", errors="strict").decode("ascii") if name else name
    return name


def _under(name: str, suffix: str) -> bool:
    return name == suffix or name.endswith("." + suffix)


def _numeric_label(label: str) -> bool:
    """A label inet_aton reads as a number (decimal, octal or 0x hex): no top-level domain looks so."""
    if label.startswith("0x"):
        return all(c in "0123456789abcdef" for c in label[2:])
    return label.isdigit()


def custom_targets(data: Mapping[str, Any]) -> Iterator[tuple[str, int, str]]:
    """Every target item a custom type's ``data`` carries, as ``(field, index, item)``.

    Fields: every key of ``data`` and of ``data["options"]`` whose name starts
    with ``target`` (``target``, ``targets``, ``target_url``, ...), when it is a
    string (items separated by commas or whitespace) or a list of strings or
    integers (an integer may be an IPv4 address in numeric form); ``index``
    counts the items of the field. Other values (a number, an object) are not
    targets.
    """
    options = data.get("options")
    sources = [("data", data)] + ([("data.options", options)] if isinstance(options, Mapping) else [])
    for prefix, mapping in sources:
        for key, value in mapping.items():
            if not (isinstance(key, str) and key.lower().startswith("target")):
                continue
            entries = value if isinstance(value, list) else [value] if isinstance(value, str) else []
            items: list[str] = []
            for entry in entries:
                if isinstance(entry, str):
                    items.extend(split_target_items(entry))
                elif isinstance(entry, int) and not isinstance(entry, bool):
                    items.append(str(entry))
            for index, item in enumerate(items):
                yield f"{prefix}.{key}", index, item


@dataclass(frozen=True)
class ScopePolicy:
    """What may be scanned; build it with :meth:`from_config`."""

    allow_private: bool = False
    allow_loopback: bool = False
    allowed_cidrs: tuple[IPNetwork, ...] = ()
    denied_cidrs: tuple[IPNetwork, ...] = ()
    allowed_domains: tuple[str, ...] = ()
    denied_domains: tuple[str, ...] = field(default_factory=tuple)
    allow_ipv6: bool = True

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
            allow_ipv6=scope.allow_ipv6,
        )

    @classmethod
    def from_config(cls, config: Config) -> ScopePolicy:
        """The policy of a deployment's ``scope`` section."""
        return cls.from_scope_config(config.scope)

    # -- addresses ---------------------------------------------------------------

    @cached_property
    def _edges(self) -> dict[int, tuple[tuple[int, int], ...]]:
        """Per IP version, the spans of the ranges the rules name; a piece no span cuts has one verdict."""
        nets = (
            *ALWAYS_DENIED,
            *LOOPBACK,
            *PRIVATE,
            *self.denied_cidrs,
            *self.allowed_cidrs,
            *(e.prefix for e in EMBEDDINGS),
        )
        return {v: tuple(sorted({_span(n) for n in nets if n.version == v})) for v in (4, 6)}

    def find_denied(self, net: IPNetwork) -> Finding | None:
        """The first denied piece of ``net`` (all its addresses are denied) and why; None: all are allowed."""
        lo, hi = _span(net)
        for e_lo, e_hi in self._edges[net.version]:
            if e_lo <= hi and lo <= e_hi and not (e_lo <= lo and hi <= e_hi):
                for half in net.subnets(prefixlen_diff=1):
                    found = self.find_denied(half)
                    if found is not None:
                        return found
                return None
        return self._uniform(net)

    def _uniform(self, block: IPNetwork) -> Finding | None:
        """Judge ``block``, which no rule's range cuts: one verdict for all its addresses (but embeddings)."""
        if _holder(block, METADATA_ADDRESSES) is not None:
            return block, "is a cloud metadata address (never scanned)"
        hit = _holder(block, ALWAYS_DENIED)
        if hit is not None:
            return block, f"is in {hit} (unspecified, link-local, multicast or reserved: never scanned)"
        if block.version == 6 and not self.allow_ipv6:
            return block, "is IPv6, and scope.allow_ipv6 is false"
        hit = _holder(block, self.denied_cidrs)
        if hit is not None:
            return block, f"is in the denied range {hit} (scope.denied_cidrs)"
        embedding = _embedding_of(block)
        if embedding is not None:
            assert isinstance(block, ipaddress.IPv6Network)
            return self._embedded(block, embedding)
        if self.allowed_cidrs:
            return None if _holder(block, self.allowed_cidrs) else (block, "is outside scope.allowed_cidrs")
        hit = _holder(block, LOOPBACK)
        if hit is not None and not self.allow_loopback:
            return block, f"is loopback ({hit}); enable scope.allow_loopback"
        if hit is None and not self.allow_private:
            hit = _holder(block, PRIVATE)
            if hit is not None:
                return block, f"is in a private or non-global range ({hit}); enable scope.allow_private"
        return None

    def _embedded(self, block: ipaddress.IPv6Network, embedding: Embedding) -> Finding | None:
        """Judge ``block`` of an embedding prefix by the IPv4 ranges it reaches: denied where one is."""
        for index, reached in embedding.ranges(block):
            found = self.find_denied(reached)
            if found is None:
                continue
            part = found[0]
            if embedding.alternatives and int(part.network_address) == 0 and reached.num_addresses > 1:
                # A reading of exactly 0.0.0.0 is ignored: name a denied part without it.
                size = part.num_addresses
                upper = ipaddress.IPv4Network((size // 2, part.prefixlen + 1) if size > 1 else (1, 32))
                found = self.find_denied(upper)
                assert found is not None
                part = found[0]
            assert isinstance(part, ipaddress.IPv4Network)
            via = f"{embedding.name} {embedding.prefix}"
            why = f"reaches {show(part)} ({via}), and {show(part)} {found[1]}"
            return embedding.piece(block, index, part), why
        return None

    def ip_reason(self, ip: str | IPAddress) -> str | None:
        """Why ``ip`` may not be scanned, or None when it may."""
        try:
            addr = ip if not isinstance(ip, str) else ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            return f"{str(ip)[:64]!r} is not an IP address"
        single = ipaddress.IPv4Network(int(addr)) if addr.version == 4 else ipaddress.IPv6Network(int(addr))
        found = self.find_denied(single)
        return None if found is None else f"{addr} {found[1]}"

    def allows_ip(self, ip: str | IPAddress) -> bool:
        """Whether ``ip`` may be scanned."""
        return self.ip_reason(ip) is None

    def network_reason(self, net: IPNetwork) -> str | None:
        """Why some address of ``net`` may not be scanned, or None when every address may."""
        found = self.find_denied(net)
        if found is None:
            return None
        part, why = found
        return f"{show(net)} {why}" if part == net else f"{show(net)} includes {show(part)}, which {why}"

    # -- names -------------------------------------------------------------------

    def host_reason(self, host: str) -> str | None:
        """Why a host (a name or an IP literal) may not be scanned, or None when it may.

        For a name only the name is judged; the addresses it resolves to must be
        checked too (:meth:`ip_reason`) before connecting. A name whose last label
        is a number (``2852039166``, ``0xa9fea9fe``, ``0251.0376.0251.0376``) is
        refused: tools read it as an IPv4 address in a legacy form.
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
        if _numeric_label(name.rsplit(".", 1)[-1]):
            return f"{name[:64]!r} is a numeric IPv4 form, not a host name"
        for meta in METADATA_NAMES:
            if _under(name, meta):
                return f"{name} is a cloud metadata endpoint (never scanned)"
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
        """Why a target (IP, CIDR, IP range, host:port, URL or domain) may not be scanned."""
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
                return self._range_reason(text, *bounds)
        host, colon, port = text.rpartition(":")
        if colon and port.isdigit():
            return self.host_reason(host)
        return self.host_reason(text)

    def _range_reason(self, text: str, start: IPAddress, end: IPAddress) -> str | None:
        if start.version != end.version or int(end) < int(start):
            return f"{text[:80]!r} is not an IP range"
        for net in ipaddress.summarize_address_range(start, end):  # type: ignore[arg-type]
            found = self.find_denied(net)
            if found is not None:
                return f"{text[:80]} includes {show(found[0])}, which {found[1]}"
        return None

    def check_targets(self, targets: Iterable[Any]) -> tuple[int, str] | None:
        """The index and reason of the first target out of scope, or None."""
        for index, target in enumerate(targets):
            reason = self.target_reason(str(target))
            if reason is not None:
                return index, reason
        return None
