"""GitHub code search: a small async REST client with paging and rate-limit handling.

Works against github.com (``https://api.github.com``) and GitHub Enterprise (``https://host/api/v3``).
Certificates are verified. The token is only ever sent to the configured API origin: pagination
links and content URLs pointing anywhere else are refused.

Rate limits: an answer 403/429 with ``Retry-After`` or ``X-RateLimit-Remaining: 0`` is retried
after the wait it names when that wait is at most ``max_wait`` seconds; a longer wait fails the
search with :class:`GithubRateLimited`, which says until when.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from workers.recon.http import HttpError, HttpResponse
from workers.recon.poc.net import http_request

API_VERSION = "2022-11-28"
MAX_PER_PAGE = 100
SEARCH_CAP = 1000
MAX_BODY = 8 * 1024 * 1024
MAX_MATCHED_LINES = 20
MAX_LINE = 300
MAX_RETRIES = 3
_LINK_RE = re.compile(r'<([^>]+)>\s*;\s*rel="?(\w+)"?')


class GithubError(RuntimeError):
    """The search could not be done (bad token, bad query, unreachable API); the message says why."""


class GithubRateLimited(GithubError):
    """GitHub asked for a longer wait than allowed."""


@dataclass
class CodeResult:
    """One file matching the search."""

    repo: str
    path: str
    url: str
    api_url: str
    sha: str
    repo_url: str
    matched_lines: list[dict[str, Any]] = field(default_factory=list)

    @property
    def hash(self) -> str:
        """Identity of the result: repository, path and the matched lines' text."""
        lines = "\n".join(str(m["text"]) for m in self.matched_lines)
        return hashlib.sha256(f"{self.repo}\x00{self.path}\x00{lines}".encode()).hexdigest()

    def to_doc(self) -> dict[str, Any]:
        """The ``github`` document (the caller adds task, keyword and monitor fields)."""
        return {
            "repo": self.repo,
            "path": self.path,
            "url": self.url,
            "api_url": self.api_url,
            "sha": self.sha,
            "repo_url": self.repo_url,
            "matched_lines": self.matched_lines,
            "hash": self.hash,
        }


def parse_links(header: str | None) -> dict[str, str]:
    """The ``Link`` header as rel -> URL."""
    return {rel: url for url, rel in _LINK_RE.findall(header or "")}


def matched_lines(content: str, keyword: str) -> list[dict[str, Any]]:
    """Lines of ``content`` containing a term of ``keyword`` (case-insensitive), numbered from 1."""
    terms = [t.strip('"').lower() for t in keyword.split() if ":" not in t and t.strip('"')]
    out = []
    for number, line in enumerate(content.splitlines(), 1):
        low = line.lower()
        if terms and all(t in low for t in terms):
            out.append({"line": number, "text": line.strip()[:MAX_LINE]})
            if len(out) >= MAX_MATCHED_LINES:
                break
    return out


class GithubClient:
    """Code search and file contents on one API origin, with rate-limit waits."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 15.0,
        max_wait: float = 60.0,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        parts = urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise GithubError(f"recon.github_url is not an http(s) URL: {base_url!r}")
        if not token:
            raise GithubError("recon.github_token is not set; GitHub code search needs a token")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base_path = parts.path
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.token = token
        self.timeout = timeout
        self.max_wait = max_wait
        self.sleep = sleep
        self.requests = 0
        self._tls = ssl.create_default_context()

    def _path_of(self, url: str) -> str:
        """The path of an absolute URL on this API's origin (anything else is refused)."""
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" != self.origin:
            raise GithubError(f"refusing to follow {url[:200]!r}: not on the configured API origin")
        return parts.path + (f"?{parts.query}" if parts.query else "")

    async def get(self, path: str, accept: str = "application/vnd.github+json") -> HttpResponse:
        """GET ``path`` (absolute path on the origin), waiting out short rate limits."""
        headers = [
            ("Authorization", f"Bearer {self.token}"),
            ("Accept", accept),
            ("X-GitHub-Api-Version", API_VERSION),
        ]
        for _ in range(MAX_RETRIES + 1):
            self.requests += 1
            try:
                response = await http_request(
                    self.host,
                    self.port,
                    tls=self.scheme == "https",
                    host=self.host,
                    path=path,
                    headers=headers,
                    timeout=self.timeout,
                    max_body=MAX_BODY,
                    ssl_context=self._tls,
                )
            except HttpError as exc:
                raise GithubError(f"GitHub API at {self.origin} unreachable: {exc}") from exc
            wait = self.rate_limit_wait(response)
            if wait is None:
                return response
            if wait > self.max_wait:
                reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + wait))
                raise GithubRateLimited(
                    f"GitHub rate limit reached; it resets in {wait:.0f}s (at {reset}), "
                    f"longer than the {self.max_wait:.0f}s this task may wait"
                )
            await self.sleep(wait)
        raise GithubRateLimited(f"GitHub rate limit still reached after {MAX_RETRIES} waits")

    @staticmethod
    def rate_limit_wait(response: HttpResponse) -> float | None:
        """Seconds to wait before retrying, when ``response`` is a rate-limit answer; else None."""
        if response.status not in (403, 429):
            return None
        retry_after = (response.header("Retry-After") or "").strip()
        if retry_after.isdigit():
            return float(retry_after)
        if (response.header("X-RateLimit-Remaining") or "").strip() == "0":
            reset = (response.header("X-RateLimit-Reset") or "").strip()
            return max(0.0, float(reset) - time.time()) + 0.5 if reset.isdigit() else 60.0
        if response.status == 429:
            return 60.0
        return None

    @staticmethod
    def _json(response: HttpResponse, what: str) -> Any:
        if response.status == 401:
            raise GithubError("GitHub rejected the token (401 Bad credentials)")
        if response.status == 422:
            raise GithubError(f"GitHub refused the {what}: {response.text()[:300]}")
        if response.status != 200:
            raise GithubError(f"GitHub answered {response.status} to the {what}: {response.text()[:300]}")
        try:
            return json.loads(response.body)
        except ValueError as exc:
            raise GithubError(f"GitHub sent invalid JSON for the {what}") from exc

    async def search_code(
        self, keyword: str, max_results: int, on_page: Callable[[list[dict[str, Any]], int], None]
    ) -> None:
        """Page through code search results for ``keyword`` (at most ``max_results``, at most 1000).

        ``on_page(items, total_count)`` receives each page's items as they come.
        """
        wanted = max(1, min(max_results, SEARCH_CAP))
        per_page = min(MAX_PER_PAGE, wanted)
        query = urlencode({"q": keyword, "per_page": per_page, "page": 1})
        path: str | None = f"{self.base_path}/search/code?{query}"
        seen = 0
        while path is not None and seen < wanted:
            response = await self.get(path, "application/vnd.github.text-match+json")
            page = self._json(response, "code search")
            items = list(page.get("items") or [])[: wanted - seen]
            seen += len(items)
            on_page(items, int(page.get("total_count") or 0))
            following = parse_links(response.header("Link")).get("next")
            path = self._path_of(following) if following and items else None

    async def file_text(self, item: dict[str, Any]) -> str | None:
        """The matched file's text via the contents API (None when it cannot be fetched)."""
        url = str(item.get("url") or "")
        if not url:
            repo = str((item.get("repository") or {}).get("full_name") or "")
            url = f"{self.origin}{self.base_path}/repos/{repo}/contents/{quote(str(item.get('path') or ''))}"
        try:
            response = await self.get(self._path_of(url))
        except GithubRateLimited:
            raise
        except GithubError:
            return None
        if response.status != 200:
            return None
        try:
            document = json.loads(response.body)
        except ValueError:
            return response.text()
        if isinstance(document, dict) and document.get("encoding") == "base64":
            try:
                return base64.b64decode(str(document.get("content") or "")).decode("utf-8", "replace")
            except ValueError:
                return None
        return None


def result_of(item: dict[str, Any], content: str | None, keyword: str) -> CodeResult:
    """A :class:`CodeResult` from a search item and the file's text (fragments when it is unknown)."""
    repository = item.get("repository") or {}
    lines = matched_lines(content, keyword) if content is not None else []
    if not lines:
        fragments = [str(m.get("fragment") or "") for m in item.get("text_matches") or []]
        lines = [{"line": None, "text": f.strip()[:MAX_LINE]} for f in fragments if f.strip()]
    return CodeResult(
        repo=str(repository.get("full_name") or ""),
        path=str(item.get("path") or ""),
        url=str(item.get("html_url") or ""),
        api_url=str(item.get("url") or ""),
        sha=str(item.get("sha") or ""),
        repo_url=str(repository.get("html_url") or ""),
        matched_lines=lines[:MAX_MATCHED_LINES],
    )
