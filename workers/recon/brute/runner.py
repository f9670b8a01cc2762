"""run_brute: the weak-credential stage of a task (ARL's ``brute_config``) over the services it found."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workers.recon.brute.base import BrutePlugin, Credential, Finding
from workers.recon.brute.credentials import load_credentials
from workers.recon.brute.registry import resolve_plugins

DEFAULT_TIMEOUT = 5.0
DEFAULT_CONCURRENCY = 8
DEFAULT_MAX_ATTEMPTS = 10
"""Credentials tried per service by default: the lists put the common defaults first, and a small cap keeps
under the failure thresholds of lockout and ban tools."""


@dataclass
class BruteReport:
    """What a brute stage found and what it could not do.

    ``findings``: one per service and plugin at most (the first credential accepted, or open
    access). ``unknown_plugins``: requested names no plugin has, by name. ``unsupported``:
    ``{plugin_name: reason}`` for ARL plugin names this worker cannot run. ``services_checked``:
    (target, plugin) pairs run; ``attempts``: credentials tried in all; ``partial``: stopped early;
    ``errors``: ``{"<plugin> <ip>:<port>": message}`` for checks that failed unexpectedly (a bug in a
    plugin ends that check only).
    """

    findings: list[Finding] = field(default_factory=list)
    unknown_plugins: list[str] = field(default_factory=list)
    unsupported: dict[str, str] = field(default_factory=dict)
    services_checked: int = 0
    attempts: int = 0
    partial: bool = False
    errors: dict[str, str] = field(default_factory=dict)


class AttemptBudget:
    """The credentials one service gets: at most ``limit``, none once ``should_stop()``; counts them."""

    def __init__(self, credentials: list[Credential], limit: int, should_stop: Callable[[], bool]) -> None:
        self._credentials = credentials[: max(0, limit)]
        self._should_stop = should_stop
        self.given = 0
        self.stopped = False

    def __iter__(self) -> Iterator[Credential]:
        for credential in self._credentials:
            if self._should_stop():
                self.stopped = True
                return
            self.given += 1
            yield credential


def targets_from_ports(open_ports: Mapping[str, Mapping[int, Any]]) -> list[tuple[str, int, str]]:
    """``(ip, port, service)`` targets from a run's open ports (``{ip: {port: PortInfo}}``), sorted."""
    return sorted(
        (ip, int(port), str(getattr(info, "service", "") or ""))
        for ip, ports in open_ports.items()
        for port, info in ports.items()
    )


def _targets(targets: Iterable[tuple[str, int, str]]) -> list[tuple[str, int, str]]:
    """Deduplicate targets by ``(ip, port)``, keeping the first informative service name."""
    merged: dict[tuple[str, int], str] = {}
    for ip, port, service in targets:
        key = (ip, int(port))
        if not merged.get(key):
            merged[key] = (service or "").strip().lower()
    return [(ip, port, service) for (ip, port), service in merged.items()]


async def run_brute(
    targets: list[tuple[str, int, str]],
    plugins: list[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    concurrency: int = DEFAULT_CONCURRENCY,
    max_attempts_per_service: int = DEFAULT_MAX_ATTEMPTS,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    credentials_dir: Path | None = None,
) -> BruteReport:
    """Check each ``(ip, port, service)`` target with every named plugin that applies to it.

    ``service`` is the detected service name (may be empty: the port decides then). Each
    (target, plugin) pair tries at most ``max_attempts_per_service`` credentials, one at a time,
    each connection bounded by ``timeout`` seconds, and stops at the first accepted one; up to
    ``concurrency`` pairs run at once. ``on_progress(done, total)`` is called after each pair.
    ``should_stop()`` is polled between attempts; when it turns true the report is ``partial``.
    ``credentials_dir`` may hold ``<list>.txt`` files that replace the bundled lists.
    """
    stop = should_stop or (lambda: False)
    resolved, unknown, unsupported = resolve_plugins(plugins)
    report = BruteReport(unknown_plugins=unknown, unsupported=unsupported)
    jobs: list[tuple[str, int, BrutePlugin]] = [
        (ip, port, plugin)
        for ip, port, service in _targets(targets)
        for plugin in resolved
        if plugin.applies_to(service, port)
    ]
    lists: dict[str, list[Credential]] = {}
    for plugin in resolved:
        if plugin.credential_list not in lists:
            lists[plugin.credential_list] = load_credentials(plugin.credential_list, credentials_dir)
    total = len(jobs)
    done = 0
    gate = asyncio.Semaphore(max(1, concurrency))

    async def run_one(ip: str, port: int, plugin: BrutePlugin) -> None:
        nonlocal done
        async with gate:
            try:
                if stop():
                    report.partial = True
                    return
                budget = AttemptBudget(lists[plugin.credential_list], max_attempts_per_service, stop)
                try:
                    found = await plugin.check(ip, port, budget, timeout)
                except Exception as exc:  # noqa: BLE001 - one plugin's bug must not end the stage
                    report.errors[f"{plugin.plugin_name} {ip}:{port}"] = f"{type(exc).__name__}: {exc}"
                    found = None
                report.services_checked += 1
                report.attempts += budget.given
                report.partial = report.partial or budget.stopped
                if found is not None:
                    report.findings.append(found)
            finally:
                done += 1
                if on_progress is not None:
                    on_progress(done, total)

    if on_progress is not None:
        on_progress(0, total)
    await asyncio.gather(*(run_one(ip, port, plugin) for ip, port, plugin in jobs))
    report.findings.sort(key=lambda f: (f.ip, f.port, f.plugin_name))
    return report
