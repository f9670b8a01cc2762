"""Fetching web sites named by URL, ``host:port`` or bare host — the site step of the recon engine.

Each target becomes one or more candidate origins: a URL is its own origin; ``host:port`` tries
https then http on well-known TLS ports, http then https elsewhere; a bare host tries
``http://host`` and ``https://host``. Every host is located (scope check and resolution) before a
connection is made; answers are identified with :func:`workers.recon.sites.identify_site`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from workers.recon.control import run_pool
from workers.recon.fingerprints import Rule
from workers.recon.http import origin_url
from workers.recon.run import HostLocator, Locator
from workers.recon.sites import Endpoint, SiteResult, identify_site

TLS_FIRST_PORTS = frozenset({443, 8443, 9443, 4443, 10443})


@dataclass(frozen=True)
class Candidate:
    """Where a site may be: one host and port, and the schemes to try in order."""

    host: str
    port: int
    schemes: tuple[str, ...]

    @property
    def origins(self) -> list[str]:
        """The origin URLs this candidate stands for."""
        return [origin_url(s, self.host, self.port) for s in self.schemes]


def candidates_for(target: str) -> list[Candidate]:
    """The candidate origins of one target (empty when it cannot be parsed)."""
    text = target.strip()
    if "://" in text:
        try:
            parts = urlsplit(text)
            scheme = parts.scheme.lower()
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            return []
        if scheme not in ("http", "https") or not parts.hostname:
            return []
        return [Candidate(parts.hostname.lower(), port, (scheme,))]
    host, sep, port_text = text.rpartition(":")
    if sep and port_text.isdigit() and host and (host.count(":") == 0 or host.startswith("[")):
        port = int(port_text)
        order = ("https", "http") if port in TLS_FIRST_PORTS else ("http", "https")
        return [Candidate(host.strip("[]").lower(), port, order)] if 0 < port < 65536 else []
    host = text.strip("[]").lower().rstrip(".")
    return [Candidate(host, 80, ("http",)), Candidate(host, 443, ("https",))] if host else []


def origin_of(target: str) -> str | None:
    """The origin URL a site target stands for when it names exactly one (URLs), else None."""
    found = candidates_for(target)
    if len(found) == 1 and len(found[0].schemes) == 1:
        return found[0].origins[0]
    return None


async def fetch_sites(
    candidates: Sequence[Candidate],
    locate: HostLocator,
    rules: Sequence[Rule],
    *,
    timeout: float,
    concurrency: int,
    on_progress: Callable[[int], None] = lambda done: None,
    found: list[SiteResult] | None = None,
) -> list[SiteResult]:
    """Identify the site behind each candidate (the first scheme that answers HTTP wins).

    Results are appended to ``found`` as they come, so a cancelled call keeps what it got.
    """
    results: list[SiteResult] = [] if found is None else found
    done = 0

    async def probe(candidate: Candidate) -> None:
        nonlocal done
        ip = await locate(candidate.host)
        if ip is not None:
            for scheme in candidate.schemes:
                site = await identify_site(
                    Endpoint(scheme, candidate.host, ip, candidate.port), rules, locate, timeout
                )
                if site is not None:
                    results.append(site)
                    break
        done += 1
        on_progress(done)

    await run_pool(candidates, probe, concurrency)
    return results


async def asset_endpoint(doc: Mapping[str, Any], locate: Locator) -> Endpoint | None:
    """The endpoint of a stored site asset (``hostname``, ``port``, ``scheme``), None when out of reach."""
    host, port, scheme = str(doc.get("hostname") or ""), int(doc.get("port") or 0), str(doc.get("scheme"))
    ip = await locate(host) if host else None
    if ip is None or not port or scheme not in ("http", "https"):
        return None
    return Endpoint(scheme, host, ip, port)


def unique_candidates(targets: Iterable[str], skip_origins: Iterable[str] = ()) -> list[Candidate]:
    """Candidates of every target, deduplicated, leaving out those with an origin in ``skip_origins``."""
    skip = set(skip_origins)
    out: dict[Candidate, None] = {}
    for target in targets:
        for candidate in candidates_for(target):
            if not any(o in skip for o in candidate.origins):
                out.setdefault(candidate)
    return list(out)
