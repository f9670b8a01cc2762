"""Running PoCs over targets: target parsing, scheme detection, bounded concurrency, findings.

Targets are URLs (``http://host:port/base``), ``host:port`` pairs, or bare hosts (domains, IPs).
HTTP PoCs run against URLs as given (their paths are appended to the URL's path), against
``host:port`` with the scheme found by a probe, and against bare hosts on port 80 (https on 443
when 80 does not answer). TCP PoCs run against ``host:port`` targets and against bare hosts on
the PoC's own port. Every host goes through ``locate`` (the scope check and resolution) before
anything connects to it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from workers.recon.http import HttpError, HttpResponse, origin_url
from workers.recon.poc.matching import Observed, match_all
from workers.recon.poc.model import Poc, PocRequest
from workers.recon.poc.net import http_request, tcp_exchange

Locator = Callable[[str], Awaitable[str | None]]
"""Maps a host to an in-scope IP to connect to, or None (out of scope or unresolvable)."""

TLS_FIRST_PORTS = frozenset({443, 8443, 9443, 4443, 10443})
EVIDENCE_BODY = 2048
MAX_EVIDENCE_HEADERS = 40


class TargetError(ValueError):
    """A PoC target is not a URL, host:port or host."""


@dataclass(frozen=True)
class PocTarget:
    """A parsed target: ``scheme`` is set for URLs, ``port`` for URLs and host:port."""

    raw: str
    host: str
    port: int | None = None
    scheme: str | None = None
    base_path: str = ""


def parse_target(text: str) -> PocTarget:
    """Parse a URL, ``host:port`` (``[v6]:port``) or bare host."""
    raw = text.strip()
    if "://" in raw:
        parts = urlsplit(raw)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise TargetError(f"not an http(s) URL: {raw!r}")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError as exc:
            raise TargetError(f"bad port in {raw!r}") from exc
        return PocTarget(raw, parts.hostname.lower(), port, scheme, parts.path.rstrip("/"))
    if raw.startswith("["):
        host, _, rest = raw[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif raw.count(":") == 1:
        host, _, port_text = raw.partition(":")
    else:
        host, port_text = raw, ""
    if not host or (port_text and not (port_text.isdigit() and 1 <= int(port_text) <= 65535)):
        raise TargetError(f"not a host or host:port: {raw!r}")
    return PocTarget(raw, host.lower().rstrip("."), int(port_text) if port_text else None)


@dataclass
class Finding:
    """A PoC that matched on a target, with the request sent and the evidence."""

    target: str
    poc: Poc
    ip: str
    url: str
    request: dict[str, Any]
    response: dict[str, Any]
    matched: list[dict[str, Any]]

    def to_doc(self) -> dict[str, Any]:
        """The ``vuln`` document (with ARL's field names as aliases)."""
        first = self.matched[0]["hits"][0] if self.matched and self.matched[0]["hits"] else {}
        verify = first.get("snippet") or first.get("match") or first.get("value") or str(first)
        return {
            "target": self.target,
            "poc_id": self.poc.id,
            "name": self.poc.name,
            "severity": self.poc.severity,
            "references": list(self.poc.references),
            "tags": list(self.poc.tags),
            "protocol": self.poc.protocol,
            "url": self.url,
            "ip": self.ip,
            "request": self.request,
            "response": self.response,
            "matched": self.matched,
            "plg_name": self.poc.id,
            "vul_name": self.poc.name,
            "verify_data": str(verify)[:EVIDENCE_BODY],
            "time": time.time(),
        }


@dataclass
class Job:
    """One (target, PoC) pair ready to run: where to connect and how."""

    target: PocTarget
    poc: Poc
    ip: str
    port: int
    scheme: str | None


def _evidence_text(data: bytes) -> str:
    return data[:EVIDENCE_BODY].decode("utf-8", "replace")


class PocRunner:
    """Runs PoCs over targets with at most ``concurrency`` requests in flight."""

    def __init__(
        self,
        locate: Locator,
        *,
        timeout: float = 5.0,
        concurrency: int = 20,
        on_progress: Callable[[int, int], None] = lambda done, total: None,
    ) -> None:
        self.locate = locate
        self.timeout = timeout
        self.concurrency = max(1, concurrency)
        self.on_progress = on_progress
        self.findings: list[Finding] = []
        self.skipped: list[dict[str, str]] = []
        self.requests = 0
        self._schemes: dict[tuple[str, int], str | None] = {}
        self._scheme_locks: dict[tuple[str, int], asyncio.Lock] = {}

    async def detect_scheme(self, host: str, ip: str, port: int) -> str | None:
        """http or https, whichever answers HTTP on ``ip:port`` (cached); None when neither does."""
        key = (ip, port)
        lock = self._scheme_locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key not in self._schemes:
                order = ("https", "http") if port in TLS_FIRST_PORTS else ("http", "https")
                self._schemes[key] = None
                for scheme in order:
                    try:
                        await http_request(
                            ip, port, tls=scheme == "https", host=host, method="HEAD", timeout=self.timeout
                        )
                    except HttpError:
                        continue
                    self._schemes[key] = scheme
                    break
            return self._schemes[key]

    async def plan(self, targets: Sequence[str], pocs: Sequence[Poc]) -> list[Job]:
        """Parse and locate targets; return the (target, PoC) jobs to run."""
        jobs: list[Job] = []
        for text in dict.fromkeys(targets):
            try:
                target = parse_target(text)
            except TargetError as exc:
                self.skipped.append({"target": text, "reason": str(exc)})
                continue
            ip = await self.locate(target.host)
            if ip is None:
                self.skipped.append({"target": text, "reason": "out of scope or unresolvable"})
                continue
            for poc in pocs:
                if poc.protocol == "tcp":
                    if target.scheme is None:
                        jobs.append(Job(target, poc, ip, target.port or int(poc.port or 0), None))
                    continue
                jobs.append(Job(target, poc, ip, target.port or 80, target.scheme))
        return jobs

    async def run(self, targets: Sequence[str], pocs: Sequence[Poc]) -> list[Finding]:
        """Run every applicable PoC on every target; findings accumulate in :attr:`findings`."""
        jobs = await self.plan(targets, pocs)
        total = len(jobs)
        done = 0
        self.on_progress(0, total)
        queue = iter(jobs)

        async def drain() -> None:
            nonlocal done
            for job in queue:
                finding = await self.run_job(job)
                if finding is not None:
                    self.findings.append(finding)
                done += 1
                self.on_progress(done, total)

        await asyncio.gather(*(drain() for _ in range(min(self.concurrency, max(1, total)))))
        return self.findings

    async def run_job(self, job: Job) -> Finding | None:
        """Try the PoC's requests in order; the first whose answer matches gives the finding."""
        if job.poc.protocol == "tcp":
            return await self._run_tcp(job)
        scheme = job.scheme
        port = job.port
        if scheme is None:
            scheme = await self.detect_scheme(job.target.host, job.ip, port)
            if scheme is None and job.target.port is None:
                port = 443
                scheme = await self.detect_scheme(job.target.host, job.ip, port)
            if scheme is None:
                return None
        for request in job.poc.requests:
            finding = await self._run_http(job, request, scheme, port)
            if finding is not None:
                return finding
        return None

    async def _run_http(self, job: Job, request: PocRequest, scheme: str, port: int) -> Finding | None:
        path = job.target.base_path + request.path
        url = origin_url(scheme, job.target.host, port) + path
        self.requests += 1
        try:
            response = await http_request(
                job.ip,
                port,
                tls=scheme == "https",
                host=job.target.host,
                method=request.method,
                path=path,
                headers=request.headers,
                body=request.body,
                timeout=self.timeout,
            )
        except HttpError:
            return None
        matched = match_all(job.poc.matchers, job.poc.matchers_condition, Observed.of_http(response))
        if matched is None:
            return None
        sent = {
            "method": request.method,
            "url": url,
            "headers": dict(request.headers),
            "body": _evidence_text(request.body),
        }
        return Finding(job.target.raw, job.poc, job.ip, url, sent, _response_evidence(response), matched)

    async def _run_tcp(self, job: Job) -> Finding | None:
        address = f"{job.target.host}:{job.port}"
        for request in job.poc.requests:
            self.requests += 1
            try:
                data = await tcp_exchange(job.ip, job.port, request.send, request.read, self.timeout)
            except (OSError, TimeoutError):
                return None
            matched = match_all(job.poc.matchers, job.poc.matchers_condition, Observed.of_tcp(data))
            if matched is not None:
                sent = {"address": address, "send": request.send.decode("latin-1")[:EVIDENCE_BODY]}
                answer = {"data": data[:EVIDENCE_BODY].decode("latin-1")}
                return Finding(job.target.raw, job.poc, job.ip, f"tcp://{address}", sent, answer, matched)
        return None


def _response_evidence(response: HttpResponse) -> dict[str, Any]:
    headers = [[k, v] for k, v in response.headers[:MAX_EVIDENCE_HEADERS]]
    return {"status": response.status, "headers": headers, "body": _evidence_text(response.body)}
