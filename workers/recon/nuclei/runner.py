"""Running templates over targets: target forms, scope on every request and redirect, per-host
budgets and concurrency, and the findings.

Targets are URLs (``http://host:port/base``), ``host:port`` pairs, or bare hosts. HTTP templates
run against URLs as given, against ``host:port`` with the scheme a probe finds, and against bare
hosts on port 80 (https on 443 when 80 does not answer). Network templates run against
``host:port`` and bare hosts (never URLs). Every host a request or a redirect goes to passes
``locate`` (the task's scope check and resolution) first.

Each host (``ip:port``) has a request budget and a concurrency limit (:class:`HostGate`); a host that
keeps failing is given up after ``max_host_errors`` errors. Templates are loaded one at a time
as the workers reach them, so only the templates in flight are held in memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from workers.recon.http import HttpError, HttpResponse
from workers.recon.nuclei.build import (
    BuildError,
    BuiltRequest,
    Endpoint,
    base_vars,
    http_event,
    path_request,
    payload_sets,
    raw_request,
)
from workers.recon.nuclei.catalog import Skipped, TemplateRef
from workers.recon.nuclei.findings import EVIDENCE_BODY, Finding, response_evidence
from workers.recon.nuclei.operators import apply
from workers.recon.nuclei.substitute import expand
from workers.recon.nuclei.template import HttpBlock, NetworkBlock, Template, TemplateError
from workers.recon.poc.net import http_request, tcp_exchange

log = logging.getLogger(__name__)

Locator = Callable[[str], Awaitable[str | None]]
"""Maps a host to an in-scope IP to connect to, or None (out of scope or unresolvable)."""

TLS_FIRST_PORTS = frozenset({443, 8443, 9443, 4443, 10443})
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
MAX_LISTED = 100


class TargetError(ValueError):
    """A target is not a URL, host:port or host."""


class BudgetExhausted(Exception):
    """The host's request budget is spent (or the host was given up after repeated errors)."""


@dataclass(frozen=True)
class Target:
    """A parsed target: ``scheme`` is set for URLs, ``port`` for URLs and host:port."""

    raw: str
    host: str
    port: int | None = None
    scheme: str | None = None
    base_path: str = ""


def parse_target(text: str) -> Target:
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
        return Target(raw, parts.hostname.lower(), port, scheme, parts.path.rstrip("/"))
    if raw.startswith("["):
        host, _, rest = raw[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif raw.count(":") == 1:
        host, _, port_text = raw.partition(":")
    else:
        host, port_text = raw, ""
    if not host or (port_text and not (port_text.isdigit() and 1 <= int(port_text) <= 65535)):
        raise TargetError(f"not a host or host:port: {raw!r}")
    return Target(raw, host.lower().rstrip("."), int(port_text) if port_text else None)


@dataclass(frozen=True)
class NetTarget:
    """A target for network templates: a host (and port, for ``host:port`` targets)."""

    raw: str
    host: str
    ip: str
    port: int | None


@dataclass
class RunnerOptions:
    """Bounds of one run."""

    timeout: float = 5.0
    concurrency: int = 20
    host_concurrency: int = 8
    max_requests_per_host: int = 5000
    max_host_errors: int = 30
    max_body: int = 256 * 1024


def gate_key(ip: str, port: int) -> str:
    """The key budgets and concurrency are counted by: one service, ``ip:port``."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


class HostGate:
    """Per-host (``ip:port``) request budget, error limit and concurrency."""

    def __init__(self, options: RunnerOptions) -> None:
        self.options = options
        self.sent: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.exhausted: set[str] = set()
        self.given_up: set[str] = set()
        self._slots: dict[str, asyncio.Semaphore] = {}

    def take(self, key: str) -> None:
        """Count one request to ``key``; raises :class:`BudgetExhausted` when none may be sent."""
        if key in self.given_up:
            raise BudgetExhausted(key)
        if self.sent.get(key, 0) >= self.options.max_requests_per_host:
            self.exhausted.add(key)
            raise BudgetExhausted(key)
        self.sent[key] = self.sent.get(key, 0) + 1

    def failed(self, key: str) -> None:
        """Record an error of ``key``; too many and the host is given up."""
        self.errors[key] = self.errors.get(key, 0) + 1
        if self.errors[key] >= self.options.max_host_errors:
            self.given_up.add(key)

    def slot(self, key: str) -> asyncio.Semaphore:
        """The semaphore bounding requests in flight to ``key``."""
        if key not in self._slots:
            self._slots[key] = asyncio.Semaphore(max(1, self.options.host_concurrency))
        return self._slots[key]


class TemplateRunner:
    """Runs templates over targets; findings accumulate in :attr:`findings`."""

    def __init__(
        self,
        locate: Locator,
        options: RunnerOptions | None = None,
        on_progress: Callable[[int, int], None] = lambda done, total: None,
    ) -> None:
        self.locate = locate
        self.options = options or RunnerOptions()
        self.on_progress = on_progress
        self.gate = HostGate(self.options)
        self.findings: list[Finding] = []
        self.skipped_targets: list[dict[str, str]] = []
        self.blocked: list[dict[str, str]] = []
        self.template_errors: list[dict[str, str]] = []
        self.requests = 0
        self.errors = 0
        self.unresolved = 0
        self.budget_skips = 0
        self._schemes: dict[tuple[str, int], str | None] = {}
        self._scheme_locks: dict[tuple[str, int], asyncio.Lock] = {}

    async def _send(self, ip: str, request: BuiltRequest) -> HttpResponse | None:
        key = gate_key(ip, request.port)
        self.gate.take(key)
        async with self.gate.slot(key):
            self.requests += 1
            try:
                return await http_request(
                    ip,
                    request.port,
                    tls=request.scheme == "https",
                    host=request.host,
                    method=request.method,
                    path=request.path,
                    headers=request.headers,
                    body=request.body,
                    timeout=self.options.timeout,
                    max_body=self.options.max_body,
                )
            except HttpError:
                self.errors += 1
                self.gate.failed(key)
                return None

    async def _scheme(self, host: str, ip: str, port: int) -> str | None:
        key = (ip, port)
        lock = self._scheme_locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key not in self._schemes:
                self._schemes[key] = None
                order = ("https", "http") if port in TLS_FIRST_PORTS else ("http", "https")
                for scheme in order:
                    probe = BuiltRequest("HEAD", scheme, host, port, "/")
                    try:
                        answer = await self._send(ip, probe)
                    except BudgetExhausted:
                        break
                    if answer is not None:
                        self._schemes[key] = scheme
                        break
            return self._schemes[key]

    def _note_blocked(self, where: str, url: str) -> None:
        if len(self.blocked) < MAX_LISTED:
            self.blocked.append({"where": where, "url": url[:300], "reason": "out of scope or unresolvable"})

    async def _prepare_one(self, text: str) -> tuple[Endpoint | None, NetTarget | None]:
        try:
            target = parse_target(text)
        except TargetError as exc:
            self.skipped_targets.append({"target": text, "reason": str(exc)})
            return None, None
        ip = await self.locate(target.host)
        if ip is None:
            self.skipped_targets.append({"target": text, "reason": "out of scope or unresolvable"})
            return None, None
        if target.scheme is not None and target.port is not None:
            return Endpoint(text, target.host, ip, target.port, target.scheme, target.base_path), None
        net = NetTarget(text, target.host, ip, target.port)
        port = target.port or 80
        scheme = await self._scheme(target.host, ip, port)
        if scheme is None and target.port is None:
            port = 443
            scheme = await self._scheme(target.host, ip, port)
        endpoint = Endpoint(text, target.host, ip, port, scheme) if scheme else None
        return endpoint, net

    async def prepare(self, targets: Sequence[str]) -> tuple[list[Endpoint], list[NetTarget]]:
        """Parse, scope-check and probe the targets: HTTP endpoints and network targets."""
        limit = asyncio.Semaphore(max(1, self.options.concurrency))

        async def one(text: str) -> tuple[Endpoint | None, NetTarget | None]:
            async with limit:
                return await self._prepare_one(text)

        results = await asyncio.gather(*(one(t) for t in dict.fromkeys(targets)))
        endpoints = [e for e, _ in results if e is not None]
        nets = [n for _, n in results if n is not None]
        return endpoints, nets

    async def run(
        self,
        targets: Sequence[str],
        refs: Sequence[TemplateRef],
        load: Callable[[TemplateRef], Template],
        skipped: Skipped,
    ) -> list[Finding]:
        """Run every template of ``refs`` on every target it applies to."""
        endpoints, nets = await self.prepare(targets)
        counts = {"http": len(endpoints), "network": len(nets)}
        total = sum(counts.get(ref.protocol, 0) for ref in refs)
        done = 0
        self.on_progress(0, total)

        def jobs() -> Iterator[tuple[Template, Endpoint | NetTarget]]:
            nonlocal done
            for ref in refs:
                applicable: Sequence[Endpoint | NetTarget] = endpoints if ref.protocol == "http" else nets
                if not applicable:
                    continue
                try:
                    template = load(ref)
                except TemplateError as exc:
                    skipped.add(ref.id, ref.path, str(exc))
                    done += len(applicable)
                    self.on_progress(done, total)
                    continue
                for target in applicable:
                    yield template, target

        queue = jobs()

        async def drain() -> None:
            nonlocal done
            for template, target in queue:
                finding = await self.run_one(template, target)
                if finding is not None:
                    self.findings.append(finding)
                done += 1
                self.on_progress(done, total)

        await asyncio.gather(*(drain() for _ in range(min(self.options.concurrency, max(1, total)))))
        return self.findings

    async def run_one(self, template: Template, target: Endpoint | NetTarget) -> Finding | None:
        """One template on one target; errors are recorded, never raised."""
        try:
            if isinstance(target, Endpoint):
                return await self._run_http(template, target)
            return await self._run_network(template, target)
        except BudgetExhausted:
            self.budget_skips += 1
        except Exception as exc:  # a template's own fault must not end the task
            log.exception("template %s failed on %s", template.id, target.raw)
            if len(self.template_errors) < MAX_LISTED:
                self.template_errors.append(
                    {"id": template.id, "target": target.raw, "error": repr(exc)[:300]}
                )
        return None

    async def _run_http(self, template: Template, endpoint: Endpoint) -> Finding | None:
        env = base_vars(endpoint)
        for name, value in template.variables:
            env[name] = expand(value, env)[0]
        dynamic: dict[str, Any] = {}
        cookies: dict[str, str] = {}
        for block in template.http:
            finding = await self._run_block(template, block, endpoint, env, dynamic, cookies)
            if finding is not None:
                return finding
        return None

    async def _run_block(
        self,
        template: Template,
        block: HttpBlock,
        endpoint: Endpoint,
        env: dict[str, Any],
        dynamic: dict[str, Any],
        cookies: dict[str, str],
    ) -> Finding | None:
        entries = [("raw", r) for r in block.raws] or [("path", p) for p in block.paths]
        for payload in payload_sets(block):
            history: dict[str, Any] = {}
            for step, (kind, text) in enumerate(entries, 1):
                local = {**env, **payload, **dynamic, **history}
                try:
                    build = raw_request if kind == "raw" else path_request
                    request = build(block, text, local, endpoint)
                except BuildError:
                    self.unresolved += 1
                    continue
                if (
                    block.cookie_reuse
                    and cookies
                    and not any(k.lower() == "cookie" for k, _ in request.headers)
                ):
                    request.headers.append(("Cookie", "; ".join(f"{k}={v}" for k, v in cookies.items())))
                fetched = await self._fetch(request, endpoint, block, cookies)
                if fetched is None:
                    continue
                response, final_url, redirects, ip = fetched
                event = http_event(response, request, final_url, local)
                if block.req_condition:
                    for key, value in event.items():
                        if key != "body_bytes" and (key not in local or local[key] is not value):
                            history[f"{key}_{step}"] = value
                    event.update(history)
                outcome = apply(block.operators, event)
                dynamic.update(outcome.internal)
                if outcome.matched:
                    return Finding(
                        endpoint.raw,
                        template,
                        ip,
                        final_url,
                        request.evidence(),
                        response_evidence(response, redirects),
                        outcome.evidence,
                        outcome.extracted,
                    )
        return None

    async def _fetch(
        self, request: BuiltRequest, endpoint: Endpoint, block: HttpBlock, cookies: dict[str, str]
    ) -> tuple[HttpResponse, str, list[str], str] | None:
        ip = endpoint.ip if request.host == endpoint.host else await self.locate(request.host)
        if ip is None:
            self._note_blocked("request", request.url)
            return None
        current = request
        redirects: list[str] = []
        follow = block.redirects or block.host_redirects
        while True:
            response = await self._send(ip, current)
            if response is None:
                return None
            for key, value in response.headers:
                if key.lower() == "set-cookie" and "=" in value.split(";", 1)[0]:
                    name, _, cvalue = value.split(";", 1)[0].partition("=")
                    cookies[name.strip()] = cvalue.strip()
            location = response.header("Location")
            if not follow or response.status not in REDIRECT_CODES or not location:
                return response, current.url, redirects, ip
            if len(redirects) >= block.max_redirects:
                return response, current.url, redirects, ip
            nxt = self._redirect(current, response.status, urljoin(current.url, location))
            if nxt is None or (block.host_redirects and not block.redirects and nxt.host != request.host):
                return response, current.url, redirects, ip
            next_ip = await self.locate(nxt.host)
            if next_ip is None:
                self._note_blocked("redirect", nxt.url)
                return response, current.url, redirects, ip
            redirects.append(nxt.url)
            current, ip = nxt, next_ip

    @staticmethod
    def _redirect(current: BuiltRequest, status: int, url: str) -> BuiltRequest | None:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            return None
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            return None
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        drop_body = status in (301, 302, 303) and current.method != "HEAD"
        dropped = {"host", "cookie"} | ({"content-type", "content-length"} if drop_body else set())
        headers = [(k, v) for k, v in current.headers if k.lower() not in dropped]
        method = "GET" if drop_body else current.method
        body = b"" if drop_body else current.body
        return BuiltRequest(method, scheme, parts.hostname.lower(), port, path, headers, body)

    async def _run_network(self, template: Template, target: NetTarget) -> Finding | None:
        env: dict[str, Any] = {
            "Hostname": f"{target.host}:{target.port}" if target.port else target.host,
            "Host": target.host,
            "Port": str(target.port or ""),
        }
        for name, value in template.variables:
            env[name] = expand(value, env)[0]
        for block in template.network:
            finding = await self._run_net_block(template, block, target, env)
            if finding is not None:
                return finding
        return None

    async def _run_net_block(
        self, template: Template, block: NetworkBlock, target: NetTarget, env: dict[str, Any]
    ) -> Finding | None:
        entries = list(block.hosts) + [f"{{{{Host}}}}:{port}" for port in block.ports]
        addresses = []
        for entry in entries:
            address, unresolved = expand(entry, env)
            host, sep, port_text = address.rpartition(":")
            if not unresolved and sep and port_text.isdigit() and "://" not in address:
                addresses.append((host.strip("[]").lower(), int(port_text)))
        payload = b"".join(i.data for i in block.inputs)
        for host, port in dict.fromkeys(addresses):
            address = f"{host}:{port}"
            ip = target.ip if host == target.host else await self.locate(host)
            if ip is None:
                self._note_blocked("network", address)
                continue
            key = gate_key(ip, port)
            self.gate.take(key)
            async with self.gate.slot(key):
                self.requests += 1
                try:
                    data = await tcp_exchange(ip, port, payload, block.read_size, self.options.timeout)
                except (OSError, TimeoutError):
                    self.errors += 1
                    self.gate.failed(key)
                    continue
            text = data.decode("latin-1")
            event = {**env, "raw": text, "data": text, "body": text, "body_bytes": data}
            event.update(request=payload.decode("latin-1"), host=address, matched=address, type="network")
            outcome = apply(block.operators, event)
            if outcome.matched:
                sent = {"address": address, "send": payload.decode("latin-1")[:EVIDENCE_BODY]}
                answer = {"data": text[:EVIDENCE_BODY], "bytes": len(data)}
                return Finding(
                    target.raw,
                    template,
                    ip,
                    f"tcp://{address}",
                    sent,
                    answer,
                    outcome.evidence,
                    outcome.extracted,
                )
        return None
