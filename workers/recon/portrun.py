"""Run one port scan with the back end its settings choose, and say which asked-for options it cannot honour.

nmap runs when ``use_nmap`` is set and nmap is installed; otherwise the built-in connect scanner
(:mod:`workers.recon.portscan`). Both take the same :class:`ScanSettings`, write open ports to
``found`` (and ``on_open``) as they are found, apply ARL's firewall guard, and report hosts through
``on_host``. What the chosen back end cannot do is named by :func:`unsupported`, so the pipeline can
report it (``statistic.skipped_options``) instead of ignoring it silently.
"""

from __future__ import annotations

from collections.abc import Callable

from workers.recon.nmap import nmap_path, os_detection_blocker, run_nmap_scan
from workers.recon.portscan import PortInfo, ScanCounters, scan_ports
from workers.recon.portsettings import HostReport, ScanSettings

CONNECT, NMAP = "connect", "nmap"


def backend(settings: ScanSettings) -> str:
    """``"nmap"`` when the settings ask for nmap and it is installed, else ``"connect"``."""
    return NMAP if settings.use_nmap and nmap_path() is not None else CONNECT


def unsupported(settings: ScanSettings) -> dict[str, str]:
    """``{option: reason}`` for each option the caller turned on that this scan will not honour."""
    out: dict[str, str] = {}
    chosen = backend(settings)
    if settings.use_nmap and chosen != NMAP:
        out["use_nmap"] = (
            "nmap is not installed on this worker (apt-get install nmap); the connect scanner ran"
        )
    if settings.os_detection:
        if chosen != NMAP:
            out["os_detection"] = (
                "OS detection needs nmap (use_nmap); the connect scanner cannot fingerprint a host"
            )
        else:
            blocker = os_detection_blocker()
            if blocker is not None:
                out["os_detection"] = blocker
    return out


async def run_port_scan(
    ips: list[str],
    settings: ScanSettings,
    found: dict[str, dict[int, PortInfo]],
    *,
    hosts: dict[str, HostReport] | None = None,
    on_open: Callable[[str, PortInfo], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_host: Callable[[str, HostReport], None] | None = None,
    counters: list[ScanCounters] | None = None,
) -> str:
    """Scan ``ips`` x ``settings.ports``; returns the back end that ran (``"nmap"`` or ``"connect"``).

    ``found[ip][port]`` fills as ports are found (``on_open`` is called for each), ``hosts[ip]`` gets
    the :class:`HostReport` of a host with something to say (firewall artefact, host timeout, OS),
    also passed to ``on_host``: a firewall report means the ports of that host given to ``on_open``
    earlier, other than 80 and 443, are to be dropped. ``on_progress(done, total)`` counts probes
    (nmap's estimate scaled to the total). ``counters`` receives the connect scanner's counters.
    Cancel the coroutine to stop the scan; what was found stays.
    """
    total = len(ips) * len(settings.ports)
    if backend(settings) == NMAP:
        await run_nmap_scan(
            ips,
            settings,
            found,
            hosts=hosts,
            on_open=on_open,
            on_progress=(lambda fraction: on_progress(int(total * fraction), total)) if on_progress else None,
            on_host=on_host,
        )
        return NMAP
    await scan_ports(
        ips,
        settings.ports,
        found,
        connect_timeout=settings.connect_timeout,
        concurrency=max(settings.concurrency, settings.window_floor()),
        retries=settings.retries,
        host_timeout=settings.host_timeout,
        on_progress=on_progress,
        on_open=on_open,
        counters=counters,
        min_window=settings.window_floor(),
        firewall_threshold=settings.firewall_threshold,
        hosts=hosts,
        on_host=on_host,
    )
    return CONNECT
