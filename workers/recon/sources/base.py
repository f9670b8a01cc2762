"""The passive-source interface: settings, errors, and the :class:`Source` base class.

A source is one outside service that, asked about a root domain, reports names it has
seen under it (certificate logs, search engines, passive DNS).  A subclass says what it
is called, whether it needs a key, where the service lives, and implements
:meth:`Source.pages`, which yields the names of each answer it gets.  It talks to the
service only through the :class:`~workers.recon.sources.client.SourceClient` it is
handed, which enforces the source's deadline, its request cap and the rate-limit waits;
its :meth:`Source.classify` hook turns the service's own error shapes into the
exceptions below.
"""

from __future__ import annotations

import email.utils
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

DEFAULT_BUDGET = 60.0
DEFAULT_MAX_REQUESTS = 20
DEFAULT_MAX_WAIT = 30.0
DEFAULT_REQUEST_TIMEOUT = 30.0
DEFAULT_RATE_RETRIES = 2


class SourceError(Exception):
    """A source could not answer; the message says why (never with a key in it)."""


class SourceAuthError(SourceError):
    """The service rejected the configured key (or email/key pair)."""


class SourceQuotaError(SourceError):
    """The account's quota (points, monthly or daily allowance) is used up."""


class SourceRateLimited(SourceError):
    """The service asked to slow down; ``retry_after`` is its wait in seconds when it gave one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SourceLimitReached(Exception):
    """The source spent its request cap; what it found until then stands."""


@dataclass(frozen=True)
class SourceConfig:
    """One source's settings: ``url`` (empty: the real service), ``key``, ``email``, ``enabled``."""

    url: str = ""
    key: str = ""
    email: str = ""
    enabled: bool = True


@dataclass(frozen=True)
class SourcesSettings:
    """Settings of a passive-source run, built by the pipeline from config.

    ``sources`` maps a source's name to its :class:`SourceConfig` (a source not named
    gets the defaults: enabled, real URL, no key).  ``budget`` is each source's total
    time in seconds over all roots; ``max_requests`` its request cap over all roots;
    ``max_wait`` the longest single wait a rate limit may impose (a longer Retry-After
    ends the source); ``rate_retries`` how many rate-limited answers are waited out per
    request; ``request_timeout`` bounds one HTTP exchange; ``only`` restricts the run to
    the named sources (empty: all registered).
    """

    sources: Mapping[str, SourceConfig] = field(default_factory=dict)
    budget: float = DEFAULT_BUDGET
    max_requests: int = DEFAULT_MAX_REQUESTS
    max_wait: float = DEFAULT_MAX_WAIT
    rate_retries: int = DEFAULT_RATE_RETRIES
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    only: tuple[str, ...] = ()

    def config(self, name: str) -> SourceConfig:
        """The settings of source ``name`` (the defaults when none are given)."""
        return self.sources.get(name) or SourceConfig()


@dataclass
class SourceResponse:
    """One answer: status, lower-cased headers, the parsed JSON (None when not JSON), a text excerpt."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    payload: Any = None
    excerpt: str = ""

    def retry_after(self) -> float | None:
        """The Retry-After header in seconds (delta or HTTP date), None when absent or unreadable."""
        value = self.headers.get("retry-after", "").strip()
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


class Requester(Protocol):
    """What a source may ask of its HTTP side (:class:`~workers.recon.sources.client.SourceClient`)."""

    async def get(
        self, path: str, params: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> SourceResponse:
        """GET ``path`` (relative to the source's base URL) and return the answer that carries results."""
        ...


class Source(ABC):
    """One passive subdomain source.

    Subclasses set :attr:`name` (ARL's plugin name), :attr:`default_url` and
    :attr:`needs_key`, and implement :meth:`pages`.  They may override
    :meth:`headers` (authentication) and :meth:`classify` (the service's error shapes).
    """

    name: ClassVar[str]
    default_url: ClassVar[str]
    needs_key: ClassVar[bool] = False
    key_name: ClassVar[str] = "key"
    """What the key is called in the report's "no key" reason (``key``, ``token``...)."""

    def __init__(self, config: SourceConfig) -> None:
        self.config = config
        self.base_url = (config.url or self.default_url).rstrip("/")

    def missing(self) -> str | None:
        """Why this source cannot run as configured (None when it can)."""
        if self.needs_key and not self.config.key:
            return f"no {self.key_name}"
        return None

    def headers(self) -> dict[str, str]:
        """Headers every request carries (authentication goes here)."""
        return {}

    def classify(self, response: SourceResponse) -> SourceError | None:
        """The error a response stands for, or None when it carries results.

        The default: HTTP 429 is a rate limit (with its Retry-After), 401/403 a rejected
        key, any other status of 400 or more a plain failure.
        """
        return http_status_error(self.name, response)

    @abstractmethod
    def pages(self, root: str, client: Requester) -> AsyncIterator[Iterable[str]]:
        """Query the service about ``root``; yield the names of each answer as it comes."""


def http_status_error(name: str, response: SourceResponse, detail: str = "") -> SourceError | None:
    """The generic reading of an HTTP status (see :meth:`Source.classify`)."""
    status = response.status
    text = f": {detail}" if detail else ""
    if status == 429:
        return SourceRateLimited(f"{name} rate limited (HTTP 429){text}", response.retry_after())
    if status in (401, 403):
        return SourceAuthError(f"{name} rejected the key (HTTP {status}){text}")
    if status >= 400:
        return SourceError(f"{name} answered HTTP {status}{text}")
    return None


def message_of(payload: Any, *keys: str) -> str:
    """The first non-empty string under ``keys`` of a JSON object ('' when none), cut to 200 chars."""
    if isinstance(payload, dict):
        for key in keys:
            value = payload.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()[:200]
    return ""
