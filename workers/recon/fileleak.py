"""File leak checks on identified sites: content checks per probe, with soft-404 detection.

Probes come from ``workers/data/fileleak.yaml`` (grouped by risk, each with a content check:
``.git/config`` must hold ``[core]``, a zip must start with ``PK``...). A site that answers 200
for everything is caught twice: its pages fail the content checks, and answers that look like its
reply to random paths are dropped.

A leak is reported once per service: the same file with the same content on one ``ip:port``
reached under several host names is one :class:`LeakFinding` listing the ``hostnames``.
:class:`LeakStream` stores the findings while the stage runs, so a stopped task keeps them.
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from controlplane.store.results import ResultWriter
from workers.recon.datafiles import LeakPath, looks_like_html
from workers.recon.http import HttpError, HttpResponse
from workers.recon.resultstream import GroupedWriter
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


def service_of(ip: str, port: int) -> str:
    """The ``ip:port`` a finding is keyed by (an IPv6 address in brackets)."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def evidence_of(body: bytes, host: str) -> str:
    """A digest of what a response proved: its body with the requested host name masked.

    Pages that echo the Host header (a phpinfo page, an error page) give the same digest under
    every name of one service; different content under different names gives different ones.
    """
    masked = body
    for spelling in dict.fromkeys((host, host.lower())):
        if spelling:
            masked = masked.replace(spelling.encode("utf-8", "replace"), b"{host}")
    return hashlib.sha256(masked).hexdigest()


@dataclass
class LeakFinding:
    """A leaked file found on a service, with every host name it was reached under.

    ``site`` and ``url`` are those of the first host name (in sorted order); ``service``,
    ``path`` and ``evidence`` (see :func:`evidence_of`) identify the finding.
    """

    site: str
    url: str
    path: str
    status: int
    content_length: int
    content_type: str
    title: str
    risk: str = "medium"
    group: str = ""
    scheme: str = ""
    ip: str = ""
    port: int = 0
    service: str = ""
    evidence: str = ""
    hostnames: list[str] = field(default_factory=list)

    def key(self) -> tuple[str, str, str]:
        """What makes two findings the same leak: service, path and evidence."""
        return (self.service, self.path, self.evidence)

    def merge(self, other: LeakFinding) -> None:
        """Add the host names of ``other`` (the same leak under other names)."""
        if other.hostnames and (not self.hostnames or min(other.hostnames) < min(self.hostnames)):
            self.site, self.url = other.site, other.url
        self.hostnames = sorted(set(self.hostnames) | set(other.hostnames))

    def to_doc(self) -> dict[str, Any]:
        """The finding as stored in the ``fileleak`` collection."""
        doc = dict(self.__dict__)
        doc["hostnames"] = list(self.hostnames)
        return doc


def add_finding(found: list[LeakFinding], finding: LeakFinding) -> None:
    """Append ``finding`` to ``found``, or merge its host names into the same leak already there."""
    same = next((f for f in found if f.key() == finding.key()), None)
    if same is None:
        found.append(finding)
    else:
        same.merge(finding)


class LeakStream:
    """Stores the findings :func:`check_site` adds to ``found`` while the stage runs.

    Call :meth:`write` as probes complete (cheap: it looks at ``found`` when it grew or once per
    ``interval``) and once with ``force`` when the stage ends, stopped or not. A new leak is
    inserted at once; host names a stored leak gains are written at most every ``interval``.
    """

    def __init__(self, store: ResultWriter, interval: float = 1.0) -> None:
        self.interval = interval
        self.writer = GroupedWriter(
            store, "fileleak", ("service", "path", "evidence"), ("hostnames", "site", "url"), interval
        )
        self.names: dict[tuple[str, str, str], int] = {}
        self._count = 0
        self._checked = 0.0

    def write(self, found: list[LeakFinding], force: bool = False) -> None:
        """Store what is new in ``found`` (every change when ``force``d)."""
        now = time.monotonic()
        if not (force or len(found) != self._count or now - self._checked >= self.interval):
            return
        self._count, self._checked = len(found), now
        for finding in found:
            if self.names.get(finding.key()) != len(finding.hostnames):
                self.names[finding.key()] = len(finding.hostnames)
                self.writer.put(finding.to_doc())
        self.writer.flush(force)


async def check_site(
    endpoint: Endpoint,
    probes: Sequence[LeakPath],
    found: list[LeakFinding],
    *,
    timeout: float,
    concurrency: int = 8,
    on_probe: Callable[[], None] | None = None,
) -> None:
    """Request every probe path on ``endpoint`` and add real leaks to ``found`` (see :func:`add_finding`).

    Call it for every site of a run with the same ``found``: a leak already found on the same
    service under another host name gets this host name added instead of a second finding.

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
                add_finding(
                    found,
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
                        scheme=endpoint.scheme,
                        ip=endpoint.ip,
                        port=endpoint.port,
                        service=service_of(endpoint.ip, endpoint.port),
                        evidence=evidence_of(response.body, endpoint.host),
                        hostnames=[endpoint.host],
                    ),
                )
            if on_probe is not None:
                on_probe()

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
