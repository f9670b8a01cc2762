"""The registry of passive sources and :func:`query_sources`, the one entry point.

Every enabled source runs at once, each in its own task with its own deadline and
request cap, so a slow, failing or rate-limited source costs the others nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from workers.recon.sources.base import (
    Source,
    SourceAuthError,
    SourceError,
    SourceLimitReached,
    SourceQuotaError,
    SourceRateLimited,
    SourcesSettings,
)
from workers.recon.sources.certlogs import CertSpotter, CrtSh
from workers.recon.sources.client import SourceClient
from workers.recon.sources.engines import Fofa, Hunter
from workers.recon.sources.names import names_under
from workers.recon.sources.passivedns import AlienVault, SecurityTrails
from workers.recon.targets import normalize_domain

log = logging.getLogger(__name__)

REGISTRY: dict[str, type[Source]] = {
    cls.name: cls for cls in (CrtSh, CertSpotter, Fofa, Hunter, SecurityTrails, AlienVault)
}
"""Every source by its name (ARL's plugin names)."""

FoundCallback = Callable[[str, list[str]], None]
"""``on_found(source, names)``: names no source had reported before in this run, as they arrive."""

_FATAL = (SourceAuthError, SourceQuotaError, SourceRateLimited)


@dataclass
class SourceReport:
    """The outcome of :func:`query_sources`.

    ``found`` maps each source that ran to the names it reported under the roots (clean,
    deduplicated, first-seen order); ``failed`` maps a source to why it stopped short
    (what it found before that stays in ``found``); ``skipped`` maps a source that did
    not run to why ("disabled", "no key"); ``limited`` maps a source that stopped at its
    request cap to that reason; ``requests`` counts each source's HTTP requests.
    """

    found: dict[str, list[str]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    limited: dict[str, str] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)

    def names(self) -> list[str]:
        """Every name any source found, sorted."""
        return sorted({name for names in self.found.values() for name in names})

    def to_doc(self) -> dict[str, Any]:
        """A JSON-ready summary: the counts per source and the reasons (not the names)."""
        return {
            "found": {source: len(names) for source, names in self.found.items()},
            "failed": dict(self.failed),
            "skipped": dict(self.skipped),
            "limited": dict(self.limited),
            "requests": dict(self.requests),
        }


def source_names() -> list[str]:
    """The names of every registered source."""
    return list(REGISTRY)


async def query_sources(
    roots: Iterable[str],
    settings: SourcesSettings,
    *,
    timeout: float,
    on_found: FoundCallback | None = None,
) -> SourceReport:
    """Ask every enabled source about each of ``roots``; returns what they found and why any did not.

    Each source gets ``min(settings.budget, timeout)`` seconds over all roots, so the call
    returns within about ``timeout`` seconds.  Only names that are a root or below it are
    kept.  A source without its key is skipped with the reason "no key"; a rejected key,
    a spent quota, a rate limit that outlasts ``settings.max_wait`` or the budget, a
    time-out or any other failure ends that source alone and is recorded in ``failed``.
    Raises :class:`~workers.recon.targets.TargetError` for a root that is not a domain.
    """
    clean_roots = list(dict.fromkeys(normalize_domain(root) for root in roots))
    report = SourceReport()
    wanted = settings.only or tuple(REGISTRY)
    runs: list[Source] = []
    for name in wanted:
        cls = REGISTRY.get(name)
        if cls is None:
            report.skipped[name] = "unknown source"
            continue
        config = settings.config(name)
        source = cls(config)
        reason = "disabled" if not config.enabled else source.missing()
        if reason:
            report.skipped[name] = reason
            continue
        runs.append(source)
    budget = max(0.0, min(settings.budget, timeout))
    reported: set[str] = set()
    await asyncio.gather(*(_run(s, clean_roots, settings, budget, report, reported, on_found) for s in runs))
    for name, reason in report.skipped.items():
        log.info("passive source %s skipped: %s", name, reason)
    return report


async def _run(
    source: Source,
    roots: list[str],
    settings: SourcesSettings,
    budget: float,
    report: SourceReport,
    reported: set[str],
    on_found: FoundCallback | None,
) -> None:
    """Run one source over every root, recording its names and its fate in ``report``."""
    name = source.name
    loop = asyncio.get_running_loop()
    client = SourceClient(source, settings, loop.time() + budget)
    mine: dict[str, None] = {}
    report.found[name] = []
    errors: list[str] = []
    try:
        async with asyncio.timeout(budget):
            for root in roots:
                try:
                    async for raw in source.pages(root, client):
                        new = [n for n in names_under(root, raw) if n not in mine]
                        mine.update(dict.fromkeys(new))
                        report.found[name] = list(mine)
                        fresh = [n for n in new if n not in reported]
                        reported.update(fresh)
                        if fresh and on_found is not None:
                            on_found(name, fresh)
                except _FATAL:
                    raise
                except SourceError as exc:
                    errors.append(f"{root}: {exc}" if len(roots) > 1 else str(exc))
    except SourceLimitReached as exc:
        report.limited[name] = str(exc)
    except TimeoutError:
        errors.append(f"{name} timed out after {budget:g} s (its time budget)")
    except SourceError as exc:
        errors.append(str(exc))
    except Exception as exc:
        # One source's bug must not end the others.
        log.exception("passive source %s failed", name)
        errors.append(f"{name} failed unexpectedly: {type(exc).__name__}: {exc}")
    finally:
        report.requests[name] = client.requests
    if errors:
        report.failed[name] = "; ".join(errors)[:1000]
    log.info(
        "passive source %s: %d names in %d requests%s",
        name,
        len(mine),
        client.requests,
        f"; failed: {report.failed[name]}" if errors else "",
    )
