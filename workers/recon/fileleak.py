"""File leak checks on identified sites: content checks per probe, with soft-404 detection.

Probes come from ``workers/data/fileleak.yaml`` (grouped by risk, each with a content check:
``.git/config`` must hold ``[core]``, a zip must start with ``PK``...). A site that answers 200
for everything is caught twice: its pages fail the content checks, and answers that look like its
reply to random paths are dropped.
"""

from __future__ import annotations

import asyncio
import difflib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from workers.recon.datafiles import LeakPath, looks_like_html
from workers.recon.http import HttpError, HttpResponse
from workers.recon.sites import Endpoint

LEAK_BODY_LIMIT = 128 * 1024
COMPARE_CHARS = 4096


@dataclass
class PageSignature:
    """The traits of a response used to compare it with the site's not-found page."""

    status: int
    length: int
    title: str
    content_type: str
    sample: str

    @classmethod
    def of(cls, response: HttpResponse) -> PageSignature:
        """Build the signature of ``response``."""
        return cls(
            status=response.status,
            length=len(response.body),
            title=response.title,
            content_type=response.content_type,
            sample=response.body[:COMPARE_CHARS].decode("utf-8", "replace"),
        )


def looks_like(page: PageSignature, baseline: PageSignature, threshold: float = 0.85) -> bool:
    """Tell whether ``page`` is probably the same (soft-404) page as ``baseline``.

    Same status is required; then equal title with a length within 10%, or body text similar by
    at least ``threshold`` (difflib ratio over the first few KiB), counts as the same page.
    """
    if page.status != baseline.status:
        return False
    longest = max(page.length, baseline.length, 1)
    if page.title == baseline.title and abs(page.length - baseline.length) <= 0.1 * longest:
        return True
    if not page.sample and not baseline.sample:
        return True
    matcher = difflib.SequenceMatcher(None, page.sample, baseline.sample, autojunk=False)
    return matcher.quick_ratio() >= threshold and matcher.ratio() >= threshold


def is_leak(probe: LeakPath, response: HttpResponse, baselines: Sequence[PageSignature]) -> bool:
    """Decide whether ``response`` to ``probe`` is a real leaked file.

    It must be a 200 with a body that passes the probe's content check (or, for a probe without
    one, contains its marker; without either an HTML page does not count), and it must not look
    like any soft-404 baseline.
    """
    if response.status != 200 or not response.body:
        return False
    if probe.check is not None:
        if not probe.check.matches(response.body, response.content_type):
            return False
    elif probe.marker is not None:
        if probe.marker.encode("utf-8") not in response.body:
            return False
    elif looks_like_html(response.body, response.content_type):
        return False
    signature = PageSignature.of(response)
    return not any(looks_like(signature, baseline) for baseline in baselines)


def for_host(probes: Sequence[LeakPath], host: str) -> list[LeakPath]:
    """``probes`` with ``{host}`` in their paths replaced by ``host`` (one probe each, same order)."""
    name = host.strip("[]").replace(":", "_")
    return [replace(p, path=p.path.replace("{host}", name)) if "{host}" in p.path else p for p in probes]


def random_paths() -> list[str]:
    """Two paths no site should have: a file-like one and a hidden dot-file one."""
    token = secrets.token_hex(6)
    return [f"/{token}-notfound.txt", f"/.{token}/config"]


@dataclass
class LeakFinding:
    """A leaked file found on a site."""

    site: str
    url: str
    path: str
    status: int
    content_length: int
    content_type: str
    title: str
    risk: str = "medium"
    group: str = ""

    def to_doc(self) -> dict[str, Any]:
        """The finding as stored in the ``fileleak`` collection."""
        return dict(self.__dict__)


async def check_site(
    endpoint: Endpoint,
    probes: Sequence[LeakPath],
    found: list[LeakFinding],
    *,
    timeout: float,
    concurrency: int = 8,
    on_probe: Callable[[], None] | None = None,
) -> None:
    """Request every probe path on ``endpoint`` and append real leaks to ``found``.

    The site's answers to random nonexistent paths are fetched first and used as soft-404 baselines
    (only 200 answers matter: other statuses already fail the status check).
    """
    baselines = []
    for path in random_paths():
        try:
            response = await endpoint.get(path, timeout, max_body=LEAK_BODY_LIMIT)
        except HttpError:
            continue
        if response.status == 200:
            baselines.append(PageSignature.of(response))
    queue = iter(for_host(probes, endpoint.host))

    async def worker() -> None:
        for probe in queue:
            try:
                response = await endpoint.get(probe.path, timeout, max_body=LEAK_BODY_LIMIT)
            except HttpError:
                response = None
            if response is not None and is_leak(probe, response, baselines):
                found.append(
                    LeakFinding(
                        site=endpoint.origin,
                        url=endpoint.origin + probe.path,
                        path=probe.path,
                        status=response.status,
                        content_length=len(response.body),
                        content_type=response.content_type,
                        title=response.title,
                        risk=probe.risk,
                        group=probe.group,
                    )
                )
            if on_probe is not None:
                on_probe()

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
