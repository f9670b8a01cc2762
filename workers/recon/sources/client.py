"""The HTTP side of a passive source: bounded, rate-limit aware JSON requests.

Each source gets its own :class:`SourceClient` for one run.  Every request counts
against the source's request cap and must finish before the source's deadline; an
answer the source classifies as a rate limit (HTTP 429, or the service's own shape) is
waited out, honouring Retry-After, at most ``rate_retries`` times and never longer
than ``max_wait`` seconds a wait or past the deadline; then the source ends with a
:class:`~workers.recon.sources.base.SourceRateLimited` that says why.

Requests go through the recon library's own HTTP/1.1 client
(:func:`workers.recon.http.exchange`); TLS verifies the service's certificate against
the system's trust store, unlike the scanning context the rest of recon uses.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any
from urllib.parse import urlencode, urlsplit

from workers.recon.http import HttpError, exchange, format_host
from workers.recon.sources.base import (
    Source,
    SourceError,
    SourceLimitReached,
    SourceRateLimited,
    SourceResponse,
    SourcesSettings,
)

MAX_ANSWER_BYTES = 32 * 1024 * 1024
USER_AGENT = "controlplane-recon-sources/1"
BACKOFF = 2.0
"""The wait before retrying a rate-limited request that gave no Retry-After (doubles each time)."""

_VERIFYING_CONTEXT: ssl.SSLContext | None = None


def verifying_ssl_context() -> ssl.SSLContext:
    """The process-wide TLS context for outside services: certificates and host names checked."""
    global _VERIFYING_CONTEXT
    if _VERIFYING_CONTEXT is None:
        _VERIFYING_CONTEXT = ssl.create_default_context()
    return _VERIFYING_CONTEXT


def _clean_header(name: str, value: str) -> str:
    if any(c in value for c in "\r\n\0"):
        raise SourceError(f"the {name} header value contains a line break; check the source's key")
    return value


class SourceClient:
    """The requests of one source in one run, within its deadline (a ``loop.time()``) and cap."""

    def __init__(self, source: Source, settings: SourcesSettings, deadline: float) -> None:
        self.source = source
        self.settings = settings
        self.deadline = deadline
        self.requests = 0
        self.rate_waits = 0

    def remaining(self) -> float:
        """Seconds left before the source's deadline."""
        return self.deadline - asyncio.get_running_loop().time()

    async def get(
        self, path: str, params: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> SourceResponse:
        """GET ``path`` (relative to the source's base URL, or absolute) and return the classified answer.

        Raises what :meth:`Source.classify` makes of an error answer, after waiting out
        rate limits as the module describes; :class:`SourceLimitReached` when the request
        cap is spent; :class:`SourceError` when the service cannot be reached.
        """
        url = path if "://" in path else f"{self.source.base_url}{path}"
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params)
        attempt = 0
        while True:
            response = await self._once(url, headers or {})
            error = self.source.classify(response)
            if error is None:
                return response
            if not isinstance(error, SourceRateLimited) or attempt >= self.settings.rate_retries:
                if isinstance(error, SourceRateLimited) and attempt:
                    raise SourceRateLimited(f"{error} (still after {attempt} wait(s))", error.retry_after)
                raise error
            wait = error.retry_after if error.retry_after is not None else BACKOFF * 2**attempt
            if wait > self.settings.max_wait:
                raise SourceRateLimited(
                    f"{error}; asked to wait {wait:g} s, over the {self.settings.max_wait:g} s cap",
                    error.retry_after,
                )
            if wait >= self.remaining():
                raise SourceRateLimited(
                    f"{error}; its wait of {wait:g} s would outlast the source's time budget",
                    error.retry_after,
                )
            attempt += 1
            self.rate_waits += 1
            await asyncio.sleep(wait)

    async def _once(self, url: str, extra: dict[str, str]) -> SourceResponse:
        if self.requests >= self.settings.max_requests:
            raise SourceLimitReached(f"request cap of {self.settings.max_requests} reached")
        remaining = self.remaining()
        if remaining <= 0:
            raise TimeoutError
        self.requests += 1
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise SourceError(f"{self.source.name}: the URL setting is not an http(s) URL")
        host = parts.hostname
        port = parts.port or (443 if scheme == "https" else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        default = 443 if scheme == "https" else 80
        lines = [
            f"GET {target} HTTP/1.1",
            f"Host: {format_host(host)}{'' if port == default else f':{port}'}",
            f"User-Agent: {USER_AGENT}",
            "Accept: application/json",
            "Accept-Encoding: identity",
            "Connection: close",
        ]
        for name, value in {**self.source.headers(), **extra}.items():
            lines.append(f"{name}: {_clean_header(name, value)}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
        try:
            answer = await exchange(
                host,
                port,
                request,
                tls=scheme == "https",
                sni=host,
                method="GET",
                timeout=min(self.settings.request_timeout, remaining),
                max_body=MAX_ANSWER_BYTES,
                ssl_context=verifying_ssl_context(),
            )
        except HttpError as exc:
            raise SourceError(f"{self.source.name}: cannot reach {host}: {exc}") from None
        if answer.truncated:
            raise SourceError(f"{self.source.name} answered more than {MAX_ANSWER_BYTES} bytes")
        text = answer.body.decode("utf-8", errors="replace")
        try:
            payload = json.loads(text) if text.strip() else None
        except ValueError:
            payload = None
        return SourceResponse(
            status=answer.status,
            headers={k.lower(): v for k, v in answer.headers},
            payload=payload,
            excerpt=" ".join(text[:300].split())[:200],
        )
