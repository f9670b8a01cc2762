"""Passive-DNS sources: SecurityTrails and AlienVault OTX (ARL's plugins of the same names)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from urllib.parse import quote

from workers.recon.sources.base import (
    Requester,
    Source,
    SourceError,
    SourceQuotaError,
    SourceResponse,
    http_status_error,
    message_of,
)

_QUOTA_WORDS = ("exceeded the usage limits", "quota", "monthly")


class SecurityTrails(Source):
    """SecurityTrails' ``GET /v1/domain/<root>/subdomains?children_only=false&include_inactive=true``.

    The key goes in the ``APIKEY`` header.  The answer is
    ``{"subdomains": ["www", ...], "subdomain_count": <n>, "meta": {"limit_reached": <bool>}}``
    with labels relative to the root; errors are ``{"message": ...}``: a bad key with
    HTTP 401 or 403, a spent monthly allowance or a too-fast client with 429.
    """

    name = "securitytrails"
    default_url = "https://api.securitytrails.com"
    needs_key = True

    def headers(self) -> dict[str, str]:
        """The ``APIKEY`` header."""
        return {"APIKEY": self.config.key}

    def classify(self, response: SourceResponse) -> SourceError | None:
        """A usage-limit message is a spent quota; otherwise the HTTP status decides."""
        if response.status < 400:
            return None
        text = message_of(response.payload, "message") or response.excerpt[:80]
        if any(word in text.lower() for word in _QUOTA_WORDS):
            return SourceQuotaError(f"securitytrails quota exhausted: {text}")
        return http_status_error(self.name, response, text)

    async def pages(self, root: str, client: Requester) -> AsyncIterator[Iterable[str]]:
        """One request; each reported label becomes ``<label>.<root>``."""
        response = await client.get(
            f"/v1/domain/{quote(root)}/subdomains", {"children_only": "false", "include_inactive": "true"}
        )
        payload = response.payload
        labels = payload.get("subdomains") if isinstance(payload, dict) else None
        if not isinstance(labels, list):
            raise SourceError("securitytrails answered without a subdomains list")
        yield [f"{label}.{root}" for label in labels if isinstance(label, str) and label]


class AlienVault(Source):
    """AlienVault OTX's ``GET /api/v1/indicators/domain/<root>/passive_dns``.

    The answer is ``{"passive_dns": [{"hostname", "address", "record_type", ...}], "count": <n>}``.
    A key is optional (``X-OTX-API-KEY``: higher limits).  Errors are
    ``{"detail": ...}``: 403 for a bad key, 429 with Retry-After when throttled.
    """

    name = "alienvault"
    default_url = "https://otx.alienvault.com"

    def headers(self) -> dict[str, str]:
        """The OTX key header when one is configured."""
        return {"X-OTX-API-KEY": self.config.key} if self.config.key else {}

    def classify(self, response: SourceResponse) -> SourceError | None:
        """The HTTP status decides, with OTX's ``detail`` as the reason."""
        if response.status < 400:
            return None
        text = message_of(response.payload, "detail", "error") or response.excerpt[:80]
        return http_status_error(self.name, response, text)

    async def pages(self, root: str, client: Requester) -> AsyncIterator[Iterable[str]]:
        """One request; the ``hostname`` of every passive-DNS record."""
        response = await client.get(f"/api/v1/indicators/domain/{quote(root)}/passive_dns")
        payload = response.payload
        records = payload.get("passive_dns") if isinstance(payload, dict) else None
        if not isinstance(records, list):
            raise SourceError("alienvault answered without a passive_dns list")
        yield [str(r.get("hostname") or "") for r in records if isinstance(r, dict)]
