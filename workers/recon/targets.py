"""Target parsing: domain normalisation and IP / CIDR / range expansion with a size limit."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator

from workers.recon.datafiles import is_valid_label

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetError(ValueError):
    """Raised for a malformed target or one that expands to too many addresses."""


def normalize_domain(target: str) -> str:
    """Return ``target`` as a lower-case domain without scheme, port, path or trailing dot."""
    text = target.strip().lower()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.split("/", 1)[0].split("@")[-1]
    if text.count(":") == 1:
        text = text.split(":", 1)[0]
    text = text.rstrip(".")
    labels = text.split(".")
    if len(labels) < 2 or not all(is_valid_label(label) for label in labels):
        raise TargetError(f"not a domain name: {target!r}")
    return text


def is_subdomain(name: str, parent: str) -> bool:
    """Tell whether ``name`` equals ``parent`` or lies below it (both normalised)."""
    return name == parent or name.endswith("." + parent)


def _parse_range(text: str) -> tuple[IPAddress, IPAddress]:
    first_text, _, last_text = text.partition("-")
    first = ipaddress.ip_address(first_text.strip())
    last_text = last_text.strip()
    if last_text.isdigit() and first.version == 4:
        prefix = str(first).rsplit(".", 1)[0]
        last_text = f"{prefix}.{last_text}"
    last = ipaddress.ip_address(last_text)
    if first.version != last.version or int(last) < int(first):
        raise TargetError(f"invalid address range: {text!r}")
    return first, last


def count_addresses(target: str) -> int:
    """Return how many addresses ``target`` (IP, CIDR or range) stands for."""
    text = target.strip()
    try:
        if "-" in text:
            first, last = _parse_range(text)
            return int(last) - int(first) + 1
        if "/" in text:
            return ipaddress.ip_network(text, strict=False).num_addresses
        ipaddress.ip_address(text)
        return 1
    except ValueError as exc:
        raise TargetError(f"not an IP, CIDR or range: {target!r}") from exc


def iter_addresses(target: str) -> Iterator[str]:
    """Yield every address of ``target`` (IP, CIDR or range) as a string.

    For IPv4 networks larger than /31 the network and broadcast addresses are skipped.
    """
    text = target.strip()
    if "-" in text:
        first, last = _parse_range(text)
        cls = type(first)
        for value in range(int(first), int(last) + 1):
            yield str(cls(value))
    elif "/" in text:
        net = ipaddress.ip_network(text, strict=False)
        hosts = net.hosts() if net.version == 4 and net.prefixlen < 31 else iter(net)
        for addr in hosts:
            yield str(addr)
    else:
        yield str(ipaddress.ip_address(text))


def expand_ip_targets(targets: Iterable[str], max_addresses: int) -> list[str]:
    """Expand IP targets into a deduplicated address list, refusing more than ``max_addresses`` in total."""
    total = 0
    parsed = []
    for target in targets:
        n = count_addresses(target)
        total += n
        if total > max_addresses:
            raise TargetError(f"targets expand to more than {max_addresses} addresses (at {target!r})")
        parsed.append(target)
    seen: dict[str, None] = {}
    for target in parsed:
        for addr in iter_addresses(target):
            seen.setdefault(addr, None)
    return list(seen)


def is_ip(text: str) -> bool:
    """Tell whether ``text`` is a literal IPv4 or IPv6 address."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
