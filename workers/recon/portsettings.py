"""The settings of one port scan, filled from ARL's task options, and what a scan reports per host.

ARL's option names and defaults (its ``ip_config``; ``app/tasks`` and ``app/services/portScan.py``):

- ``port_scan_type`` ``test`` | ``top100`` | ``top1000`` | ``all`` | ``custom`` (+ ``port_custom``),
  ``exclude_ports``;
- ``service_detection`` (nmap ``-sV``), ``os_detection`` (nmap ``-O``);
- ``host_timeout_type`` ``default`` | ``custom`` and ``host_timeout`` (seconds, 900 when absent):
  the custom value counts only with ``custom`` and when above 0 (else the default holds). ARL's
  default is 300 s, plus 300 with ``-sV``, 240 with ``-O`` and 300 for ``all``;
- ``port_parallelism`` (nmap ``--min-parallelism``, 32) and ``port_min_rate`` (nmap ``--min-rate``,
  64); for ``all`` ARL raises them to at least 128 and 800.

ARL drops the ports of a host that shows more than 600 open ports (a firewall answering on every
port), keeping 80 and 443; both backends do the same (:data:`FIREWALL_THRESHOLD`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from workers.recon.datafiles import ports_for_preset

ARL_PARALLELISM = 32
"""ARL's ``port_parallelism`` when the option is absent."""
ARL_MIN_RATE = 64
"""ARL's ``port_min_rate`` when the option is absent (its API model documents 60; its task code uses 64)."""
ARL_CUSTOM_HOST_TIMEOUT = 900
"""ARL's ``host_timeout`` when ``host_timeout_type`` is ``custom`` and no value is given (60 * 15)."""
ARL_ALL_PARALLELISM = 128
ARL_ALL_MIN_RATE = 800
FIREWALL_THRESHOLD = 600
"""ARL: a host with more open ports than this is a firewall artefact."""
FIREWALL_KEEP = frozenset({80, 443})
"""The ports ARL keeps on such a host."""


def default_host_timeout(service_detection: bool, os_detection: bool, all_ports: bool) -> float:
    """ARL's per-host timeout when ``host_timeout_type`` is ``default``, in seconds."""
    seconds = 300.0
    if service_detection:
        seconds += 300
    if os_detection:
        seconds += 240
    if all_ports:
        seconds += 300
    return seconds


@dataclass(frozen=True)
class ScanSettings:
    """Everything one port scan needs, whichever backend runs it.

    ``host_timeout`` is the per-host deadline in seconds (None: none). ``parallelism`` is the fewest
    probes kept in flight and ``min_rate`` the fewest probes a second: nmap gets them as
    ``--min-parallelism`` and ``--min-rate``; the connect scanner never lets its window shrink below
    either (below ``min_rate * connect_timeout`` connects its rate could fall under ``min_rate``).
    ``concurrency`` is the connect scanner's largest window. ``requested`` holds the options the
    caller turned on, for :func:`workers.recon.portrun.unsupported`. ``nmap_args`` are extra nmap
    arguments (tuning, tests).
    """

    ports: tuple[int, ...]
    use_nmap: bool = False
    service_detection: bool = False
    os_detection: bool = False
    host_timeout: float | None = None
    parallelism: int = ARL_PARALLELISM
    min_rate: int = ARL_MIN_RATE
    connect_timeout: float = 1.0
    retries: int = 2
    concurrency: int = 1000
    all_ports: bool = False
    firewall_threshold: int = FIREWALL_THRESHOLD
    requested: frozenset[str] = frozenset()
    nmap_args: tuple[str, ...] = ()

    def window_floor(self) -> int:
        """The connect scanner's smallest window: ``parallelism`` and ``min_rate`` in one number."""
        return max(1, self.parallelism, math.ceil(self.min_rate * self.connect_timeout))


def _positive_int(value: Any, default: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return default
    return number if number > 0 else default


def scan_settings(
    options: Mapping[str, Any],
    *,
    connect_timeout: float = 1.0,
    concurrency: int = 1000,
    retries: int = 2,
) -> ScanSettings:
    """The settings of the port scan a task's ``options`` ask for (ARL's names and defaults).

    ``connect_timeout``, ``concurrency`` and ``retries`` come from the worker's configuration.
    Raises ``ValueError`` for an unknown ``port_scan_type`` or an empty custom list.
    """
    preset = str(options.get("port_scan_type") or "test")
    exclude = options.get("exclude_ports")
    excluded = set(ports_for_preset("custom", exclude)) if exclude else set()
    ports = tuple(p for p in ports_for_preset(preset, options.get("port_custom")) if p not in excluded)
    service = bool(options.get("service_detection"))
    os_detection = bool(options.get("os_detection"))
    all_ports = preset == "all"
    parallelism = _positive_int(options.get("port_parallelism"), ARL_PARALLELISM)
    min_rate = _positive_int(options.get("port_min_rate"), ARL_MIN_RATE)
    if all_ports:
        parallelism, min_rate = max(parallelism, ARL_ALL_PARALLELISM), max(min_rate, ARL_ALL_MIN_RATE)
    host_timeout = default_host_timeout(service, os_detection, all_ports)
    if str(options.get("host_timeout_type") or "default") == "custom":
        custom = options.get("host_timeout", ARL_CUSTOM_HOST_TIMEOUT)
        if _positive_int(custom, 0) > 0:
            host_timeout = float(custom)
    requested = frozenset(
        name for name in ("use_nmap", "service_detection", "os_detection") if options.get(name)
    )
    return ScanSettings(
        ports=ports,
        use_nmap=bool(options.get("use_nmap")),
        service_detection=service,
        os_detection=os_detection,
        host_timeout=host_timeout,
        parallelism=parallelism,
        min_rate=min_rate,
        connect_timeout=connect_timeout,
        retries=retries,
        concurrency=concurrency,
        all_ports=all_ports,
        requested=requested,
    )


@dataclass
class HostReport:
    """What a scan learnt about one host besides its open ports.

    ``firewall``: it showed more than the threshold's open ports, so only 80 and 443 were kept;
    ``open_seen`` is how many open ports were seen before that (the connect scanner stops probing
    such a host, so it is the threshold plus one or a little more). ``timed_out``: the host
    timeout cut its scan (nmap then reports none of its ports; the connect scanner keeps those it
    found). ``os_info``: nmap's best OS match above 90% accuracy, as ARL keeps it.
    """

    firewall: bool = False
    open_seen: int = 0
    timed_out: bool = False
    os_info: dict[str, Any] = field(default_factory=dict)

    def to_doc(self) -> dict[str, Any]:
        """The host's fields for its ``ip`` document."""
        doc: dict[str, Any] = {"os_info": self.os_info}
        if self.firewall:
            doc["firewall"] = {"open_ports_seen": self.open_seen, "kept": sorted(FIREWALL_KEEP)}
        if self.timed_out:
            doc["host_timed_out"] = True
        return doc
