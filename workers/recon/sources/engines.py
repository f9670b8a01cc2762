"""Search-engine sources: FOFA and Qianxin Hunter (ARL's ``fofa`` and ``hunter_qax`` plugins)."""

from __future__ import annotations

import base64
import functools
from collections.abc import AsyncIterator, Iterable

import tldextract

from workers.recon.fofa import FofaAuthError, FofaHit, FofaQuotaError, fofa_error
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

FOFA_PAGE_SIZE = 1000
HUNTER_PAGE_SIZE = 100


@functools.lru_cache(maxsize=1)
def _extractor() -> tldextract.TLDExtract:
    """The Public Suffix List as bundled with tldextract (never fetched at run time)."""
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def registered_domain(name: str) -> str:
    """The registrable domain of ``name`` by the Public Suffix List ('' when it has none)."""
    return _extractor()(name).top_domain_under_public_suffix


def fofa_query(root: str) -> str:
    """ARL's FOFA query for ``root``: ``domain="root"``, or for a name below a registrable domain
    ``host="root" && domain="<registrable>"`` (FOFA's ``domain`` field is the registrable one)."""
    registrable = registered_domain(root)
    if registrable and registrable != root:
        return f'host="{root}" && domain="{registrable}"'
    return f'domain="{root}"'


class Fofa(Source):
    """FOFA's ``GET /api/v1/search/all`` asking only for the ``host`` field.

    Authentication is ``email`` (optional for newer accounts) and ``key`` in the query
    string; errors are ``{"error": true, "errmsg": "[<code>] <message>"}``, read by
    :func:`workers.recon.fofa.fofa_error` as the FOFA task reads them.  With one field
    requested FOFA lists each result as a bare string (``"https://a.example.com:8443"``).
    """

    name = "fofa"
    default_url = "https://fofa.info"
    needs_key = True

    def classify(self, response: SourceResponse) -> SourceError | None:
        """HTTP 429 is a rate limit; then FOFA's ``error``/``errmsg`` answers, then the status."""
        payload = response.payload
        if response.status == 429:
            text = message_of(payload, "errmsg") or "too many requests"
            return SourceRateLimited(f"fofa rate limited (HTTP 429): {text}", response.retry_after())
        if isinstance(payload, dict) and payload.get("error"):
            errmsg = message_of(payload, "errmsg") or "no error message"
            error = fofa_error(errmsg, response.status if response.status >= 400 else None)
            if isinstance(error, FofaAuthError):
                return SourceAuthError(f"fofa rejected the key: {errmsg}")
            if isinstance(error, FofaQuotaError):
                return SourceQuotaError(f"fofa quota exhausted: {errmsg}")
            return SourceError(f"fofa error: {errmsg} (HTTP {response.status})")
        return http_status_error(self.name, response)

    async def pages(self, root: str, client: Requester) -> AsyncIterator[Iterable[str]]:
        """Page through the hosts matching :func:`fofa_query` until an empty page or the total."""
        qbase64 = base64.b64encode(fofa_query(root).encode("utf-8")).decode("ascii")
        auth = {"key": self.config.key}
        if self.config.email:
            auth["email"] = self.config.email
        page, seen = 1, 0
        while True:
            response = await client.get(
                "/api/v1/search/all",
                {**auth, "qbase64": qbase64, "page": page, "size": FOFA_PAGE_SIZE, "fields": "host"},
            )
            payload = response.payload
            rows = payload.get("results") if isinstance(payload, dict) else None
            if not isinstance(rows, list):
                raise SourceError("fofa answered a search without a results list")
            if not rows:
                return
            yield [FofaHit.from_row(row).host for row in rows]
            seen += len(rows)
            total = payload.get("size") if isinstance(payload, dict) else None
            if not isinstance(total, int) or seen >= total:
                return
            page += 1


class Hunter(Source):
    """Qianxin Hunter's ``GET /openApi/search`` with ``search=base64url('domain.suffix="root"')``.

    The key goes in the ``api-key`` parameter.  Every answer is
    ``{"code": <int>, "message": ..., "data": {"total", "arr": [{"domain", ...}] | null, ...}}``
    with HTTP 200: ``code`` 200 is success; 40205 (the day's free points are spent, paid
    points are used) still carries data; 401 is a bad or expired key; 40204 an exhausted
    quota; 429 too many requests.
    """

    name = "hunter_qax"
    default_url = "https://hunter.qianxin.com"
    needs_key = True

    def classify(self, response: SourceResponse) -> SourceError | None:
        """Hunter's body ``code`` first (it answers HTTP 200 for its errors), then the status."""
        payload = response.payload
        if isinstance(payload, dict) and "code" in payload:
            code = payload.get("code")
            text = message_of(payload, "message", "msg") or f"code {code}"
            if code in (200, 40205):
                return None
            if code == 401:
                return SourceAuthError(f"hunter_qax rejected the key: {text}")
            if code == 40204:
                return SourceQuotaError(f"hunter_qax quota exhausted: {text}")
            if code == 429 or response.status == 429:
                return SourceRateLimited(f"hunter_qax rate limited: {text}", response.retry_after())
            return SourceError(f"hunter_qax error {code}: {text}")
        return http_status_error(self.name, response, response.excerpt[:80])

    async def pages(self, root: str, client: Requester) -> AsyncIterator[Iterable[str]]:
        """Page through ``domain.suffix="root"`` until an empty page or the total."""
        search = base64.urlsafe_b64encode(f'domain.suffix="{root}"'.encode()).decode("ascii")
        page, seen = 1, 0
        while True:
            response = await client.get(
                "/openApi/search",
                {
                    "api-key": self.config.key,
                    "search": search,
                    "page": page,
                    "page_size": HUNTER_PAGE_SIZE,
                    "is_web": 3,
                },
            )
            data = response.payload.get("data") if isinstance(response.payload, dict) else None
            rows = data.get("arr") if isinstance(data, dict) else None
            if not isinstance(rows, list) or not rows:
                return
            yield [str(row.get("domain") or "") for row in rows if isinstance(row, dict)]
            seen += len(rows)
            total = data.get("total") if isinstance(data, dict) else None
            if not isinstance(total, int) or seen >= total:
                return
            page += 1
