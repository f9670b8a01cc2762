"""Certificate Transparency sources: crt.sh and Cert Spotter (SSLMate)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

from workers.recon.sources.base import (
    Requester,
    Source,
    SourceAuthError,
    SourceError,
    SourceQuotaError,
    SourceRateLimited,
    SourceResponse,
    http_status_error,
    message_of,
)


class CrtSh(Source):
    """crt.sh's JSON output: ``GET /?q=%.<root>&output=json&exclude=expired``.

    The answer is a JSON array of certificate entries whose ``name_value`` holds the
    certificate's names separated by newlines (``common_name`` holds the subject's CN).
    crt.sh needs no key; under load it answers 429, 502 or 503 with an HTML page.
    """

    name = "crtsh"
    default_url = "https://crt.sh"

    async def pages(self, root: str, client: Requester) -> AsyncIterator[Iterable[str]]:
        """One request: every unexpired certificate naming ``root`` or a name below it."""
        response = await client.get("/", {"q": f"%.{root}", "output": "json", "exclude": "expired"})
        entries = response.payload
        if response.payload is None and not response.excerpt:
            entries = []
        if not isinstance(entries, list):
            raise SourceError(f"crtsh did not answer with a JSON array: {response.excerpt[:80]!r}")
        names: list[str] = []
        for entry in entries:
            if isinstance(entry, dict):
                names.extend(str(entry.get("name_value") or "").split())
                names.append(str(entry.get("common_name") or ""))
        yield names


class CertSpotter(Source):
    """Cert Spotter's API v1: ``GET /v1/issuances?domain=<root>&include_subdomains=true&expand=dns_names``.

    The answer is a JSON array of issuance objects (``id``, ``dns_names``...) in the order
    Cert Spotter discovered them; the next page is asked for with ``after=<id of the last
    one>`` until an empty array comes back.  A key is optional (``Authorization: Bearer
    <key>``: higher limits).  Errors are JSON objects ``{"code": ..., "message": ...}``:
    ``rate_limited`` with HTTP 429 and Retry-After, ``unauthorized`` with 401.
    """

    name = "certspotter"
    default_url = "https://api.certspotter.com"

    def headers(self) -> dict[str, str]:
        """The bearer key when one is configured."""
        return {"Authorization": f"Bearer {self.config.key}"} if self.config.key else {}

    def classify(self, response: SourceResponse) -> SourceError | None:
        """Cert Spotter's ``{"code", "message"}`` errors, then the HTTP status."""
        payload = response.payload
        if isinstance(payload, dict):
            code = message_of(payload, "code")
            text = message_of(payload, "message") or code or "error without a message"
            if code == "rate_limited" or response.status == 429:
                return SourceRateLimited(f"certspotter rate limited: {text}", response.retry_after())
            if code in ("unauthorized", "invalid_api_key") or response.status in (401, 403):
                return SourceAuthError(f"certspotter rejected the key: {text}")
            if "quota" in code or response.status == 402:
                return SourceQuotaError(f"certspotter quota exhausted: {text}")
            return SourceError(f"certspotter error: {text} (HTTP {response.status})")
        return http_status_error(self.name, response, response.excerpt[:80])

    async def pages(self, root: str, client: Requester) -> AsyncIterator[Iterable[str]]:
        """Page through the issuances with ``after`` until an empty page."""
        after = ""
        while True:
            params: dict[str, Any] = {"domain": root, "include_subdomains": "true", "expand": "dns_names"}
            if after:
                params["after"] = after
            response = await client.get("/v1/issuances", params)
            issuances = response.payload
            if not isinstance(issuances, list):
                raise SourceError("certspotter did not answer with a JSON array")
            if not issuances:
                return
            names: list[str] = []
            for issuance in issuances:
                if isinstance(issuance, dict) and isinstance(issuance.get("dns_names"), list):
                    names.extend(str(n) for n in issuance["dns_names"])
            yield names
            last = issuances[-1]
            next_after = str(last.get("id") or "") if isinstance(last, dict) else ""
            if not next_after or next_after == after:
                return
            after = next_after
