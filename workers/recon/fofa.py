"""A client of the FOFA search API and the storage of its hits.

FOFA answers ``GET /api/v1/search/all`` with::

    {"error": false, "size": <total matches>, "page": <page>, "mode": "extended",
     "query": "<query>", "results": [[<field values in the requested order>], ...]}

and every failure (bad key, exhausted quota, bad query) with
``{"error": true, "errmsg": "[<code>] <message>"}``, sometimes with an HTTP
error status.  :class:`FofaClient` turns the latter into a :class:`FofaError`
whose message says what happened (never with the key in it), pages through
the results up to the requested number within the account's remaining data
allowance (``/api/v1/info/my``), and retries transient failures a few times.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from pymongo.database import Database

from controlplane.store.results import ResultWriter
from workers.recon.targets import is_ip

log = logging.getLogger(__name__)

FIELDS = ("host", "ip", "port", "protocol", "domain", "title", "server")
"""The fields requested from FOFA, in the order each result row lists them."""

DEFAULT_PAGE_SIZE = 1000
DEFAULT_TIMEOUT = 30.0
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
RETRIES = 2
RETRY_DELAY = 1.0

COLLECTION = "fofa"

_CODE_RE = re.compile(r"^\s*\[(-?\d+)\]")
_AUTH_CODES = frozenset({"-700"})
_QUOTA_CODES = frozenset({"820031"})
_AUTH_WORDS = ("account invalid", "key invalid", "invalid key", "key error", "api key", "账号无效", "key无效")
_QUOTA_WORDS = ("余额不足", "f点", "quota", "limit", "exceed", "insufficient", "次数", "上限")


class FofaError(Exception):
    """FOFA refused a request or could not be reached; the message says why."""


class FofaAuthError(FofaError):
    """The email/key pair was rejected."""


class FofaQuotaError(FofaError):
    """The account's query or data allowance (F points, API quota) is used up."""


def fofa_error(errmsg: str, status: int | None = None) -> FofaError:
    """The exception for a FOFA ``errmsg``: auth, quota or generic, judged by its code and words."""
    text = errmsg.strip() or "no error message"
    match = _CODE_RE.match(text)
    code = match.group(1) if match else ""
    lowered = text.lower()
    suffix = f" (HTTP {status})" if status else ""
    if code in _AUTH_CODES or status == 401 or any(w in lowered for w in _AUTH_WORDS):
        return FofaAuthError(f"FOFA rejected the API email/key: {text}{suffix}")
    if code in _QUOTA_CODES or any(w in lowered for w in _QUOTA_WORDS):
        return FofaQuotaError(f"FOFA quota exhausted: {text}{suffix}")
    return FofaError(f"FOFA error: {text}{suffix}")


@dataclass(frozen=True)
class FofaHit:
    """One FOFA result row."""

    host: str
    ip: str
    port: int | None
    protocol: str
    domain: str
    title: str
    server: str

    @classmethod
    def from_row(cls, row: Any) -> FofaHit:
        """Build a hit from a result row in :data:`FIELDS` order (a lone string is the host)."""
        values = [row] if isinstance(row, str) else list(row) if isinstance(row, list | tuple) else []
        values += [""] * (len(FIELDS) - len(values))
        text = {name: "" if v is None else str(v).strip() for name, v in zip(FIELDS, values, strict=False)}
        try:
            port: int | None = int(text["port"]) if text["port"] else None
        except ValueError:
            port = None
        return cls(
            host=text["host"],
            ip=text["ip"],
            port=port,
            protocol=text["protocol"],
            domain=text["domain"],
            title=text["title"],
            server=text["server"],
        )

    @property
    def address(self) -> str | None:
        """The hit's IP address: the ``ip`` field, else the host when it is an IP literal."""
        if self.ip and is_ip(self.ip):
            return self.ip
        host = urllib.parse.urlsplit(self.host if "://" in self.host else "//" + self.host).hostname
        return host if host and is_ip(host) else None

    def key(self) -> tuple[str, str, int | None]:
        """The deduplication key within a task."""
        return (self.host, self.ip, self.port)

    def to_doc(self) -> dict[str, Any]:
        """The document stored in the ``fofa`` collection (without ``task_id``)."""
        return asdict(self)


@dataclass(frozen=True)
class FofaPage:
    """One page of a search: the hits and the total number of matches FOFA reported."""

    hits: list[FofaHit]
    total: int
    page: int


@dataclass(frozen=True)
class FofaSearch:
    """The outcome of :meth:`FofaClient.search_all`."""

    hits: list[FofaHit]
    total: int
    pages: int
    limited_by_account: bool = False


Opener = Callable[[urllib.request.Request, float], Any]


def _default_opener(request: urllib.request.Request, timeout: float) -> Any:
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - the URL's scheme is checked


class FofaClient:
    """Blocking FOFA API client.

    ``base_url`` is the FOFA origin (``https://fofa.info``); ``email`` may be empty
    (newer accounts authenticate with the key alone); ``timeout`` bounds each HTTP
    request; ``page_size`` is how many results one request asks for.
    """

    def __init__(
        self,
        base_url: str,
        email: str,
        key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        page_size: int = DEFAULT_PAGE_SIZE,
        retries: int = RETRIES,
        retry_delay: float = RETRY_DELAY,
        opener: Opener | None = None,
    ) -> None:
        if not key:
            raise FofaAuthError(
                "no FOFA API key: set options.key in the task data or recon.fofa_key in config"
            )
        scheme = urllib.parse.urlsplit(base_url).scheme
        if scheme not in ("http", "https"):
            raise FofaError(f"recon.fofa_url must be an http(s) URL, not {base_url[:100]!r}")
        self.base_url = base_url.rstrip("/")
        self.email = email
        self.key = key
        self.timeout = timeout
        self.page_size = max(1, page_size)
        self.retries = max(0, retries)
        self.retry_delay = retry_delay
        self.opener = opener or _default_opener

    def _url(self, path: str, params: dict[str, Any]) -> str:
        auth = {"email": self.email, "key": self.key} if self.email else {"key": self.key}
        return f"{self.base_url}{path}?{urllib.parse.urlencode({**auth, **params})}"

    def _get(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        """GET ``path`` and return its JSON object; FOFA errors raise :class:`FofaError`."""
        request = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            self._url(path, params),
            headers={"Accept": "application/json", "User-Agent": "controlplane-fofa/1"},
        )
        attempt = 0
        while True:
            try:
                return self._once(request, path)
            except _Transient as exc:
                if attempt >= self.retries:
                    raise FofaError(f"FOFA {path} failed after {attempt + 1} attempts: {exc}") from None
                attempt += 1
                log.info("FOFA %s: %s; retrying (%d/%d)", path, exc, attempt, self.retries)
                time.sleep(self.retry_delay * attempt)

    def _once(self, request: urllib.request.Request, path: str) -> dict[str, Any]:
        status: int | None = None
        try:
            with self.opener(request, self.timeout) as response:
                status = int(getattr(response, "status", 200) or 200)
                body = response.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as exc:
            status = exc.code
            try:
                body = exc.read(MAX_RESPONSE_BYTES + 1)
            except OSError:
                body = b""
            finally:
                exc.close()
        except TimeoutError as exc:
            raise _Transient(f"timed out after {self.timeout:g} s") from exc
        except urllib.error.URLError as exc:
            raise _Transient(f"cannot reach {self.base_url}: {exc.reason}") from exc
        except OSError as exc:
            raise _Transient(f"connection to {self.base_url} failed: {exc}") from exc
        if len(body) > MAX_RESPONSE_BYTES:
            raise FofaError(f"FOFA {path} answered more than {MAX_RESPONSE_BYTES} bytes")
        payload = _json_object(body)
        if payload is not None and payload.get("error"):
            raise fofa_error(str(payload.get("errmsg") or ""), status if status and status >= 400 else None)
        if status is not None and (status == 429 or status >= 500):
            raise _Transient(f"HTTP {status}")
        if status is not None and status >= 400:
            raise fofa_error(f"HTTP {status} from {path}", status)
        if payload is None:
            raise FofaError(f"FOFA {path} did not answer with a JSON object (HTTP {status})")
        return payload

    def account(self) -> dict[str, Any]:
        """``/api/v1/info/my``: the account, including its remaining allowances when FOFA reports them."""
        return self._get("/api/v1/info/my", {})

    def search(self, query: str, page: int = 1, size: int | None = None) -> FofaPage:
        """One page of ``query`` (``size`` results per page, default :attr:`page_size`)."""
        qbase64 = base64.b64encode(query.encode("utf-8")).decode("ascii")
        payload = self._get(
            "/api/v1/search/all",
            {"qbase64": qbase64, "page": page, "size": size or self.page_size, "fields": ",".join(FIELDS)},
        )
        rows = payload.get("results") or []
        if not isinstance(rows, list):
            raise FofaError("FOFA answered a search without a results list")
        total = payload.get("size")
        return FofaPage(
            hits=[FofaHit.from_row(row) for row in rows],
            total=int(total) if isinstance(total, int | float | str) and str(total).isdigit() else len(rows),
            page=page,
        )

    def remaining_data(self) -> int | None:
        """How many more results the account may fetch, when ``/info/my`` says (None when unknown).

        Raises :class:`FofaAuthError` for a rejected key and :class:`FofaQuotaError` when the
        account has no queries or data left.
        """
        try:
            info = self.account()
        except FofaError as exc:
            if isinstance(exc, FofaAuthError | FofaQuotaError):
                raise
            log.info("FOFA account info unavailable (%s); not capping by account limits", exc)
            return None
        queries = _as_int(info.get("remain_api_query"))
        data = _as_int(info.get("remain_api_data"))
        if queries == 0 or data == 0:
            raise FofaQuotaError(
                f"FOFA quota exhausted: the account has {queries if queries is not None else 'unknown'} "
                f"queries and {data if data is not None else 'unknown'} results left"
            )
        return data

    def search_all(
        self,
        query: str,
        size: int,
        *,
        start_page: int = 1,
        check_limits: bool = True,
        on_page: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> FofaSearch:
        """Up to ``size`` hits of ``query``, paging from ``start_page``.

        With ``check_limits`` the account's remaining data allowance caps ``size``.
        ``on_page(fetched, wanted)`` is called after every page; paging ends early when
        ``should_stop()`` turns true, when a page comes back short, or at the total.
        """
        wanted = max(0, size)
        limited = False
        if check_limits:
            remaining = self.remaining_data()
            if remaining is not None and remaining < wanted:
                log.info("FOFA account allows %d more results; fetching that many, not %d", remaining, wanted)
                wanted, limited = remaining, True
        per_page = min(self.page_size, wanted) if wanted else 0
        hits: list[FofaHit] = []
        seen: set[tuple[str, str, int | None]] = set()
        total = 0
        pages = 0
        page = max(1, start_page)
        fetched = 0
        while fetched < wanted:
            if should_stop is not None and should_stop():
                break
            result = self.search(query, page, per_page)
            pages += 1
            total = result.total
            rows = result.hits[: wanted - fetched]
            fetched += len(rows)
            for hit in rows:
                if hit.key() not in seen:
                    seen.add(hit.key())
                    hits.append(hit)
            if on_page is not None:
                on_page(fetched, wanted)
            if len(result.hits) < per_page or page * per_page >= total:
                break
            page += 1
        return FofaSearch(hits=hits, total=total, pages=pages, limited_by_account=limited)


class _Transient(Exception):
    """A failure worth retrying (timeout, connection error, 5xx, 429)."""


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        payload = json.loads(body.decode("utf-8", errors="replace"))
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def store_hits(db: Database[Any], task_id: str, hits: Iterable[FofaHit]) -> int:
    """Store ``hits`` in the ``fofa`` collection tagged with ``task_id``; returns how many were new."""
    writer = ResultWriter(db, task_id, [COLLECTION])
    writer.ensure_indexes()
    return writer.insert(COLLECTION, (hit.to_doc() for hit in hits))


def unique_addresses(hits: Iterable[FofaHit]) -> list[str]:
    """The distinct IP addresses of ``hits``, in first-seen order."""
    return list(dict.fromkeys(a for a in (hit.address for hit in hits) if a))


WEB_PROTOCOLS = ("http", "https", "")
"""FOFA ``protocol`` values of a web service ("": FOFA named none); others (ssh, mysql...) are not web."""


def is_web_hit(hit: FofaHit) -> bool:
    """Whether a hit is a web service: an ``http(s)://`` host, or a web (or missing) ``protocol``."""
    return hit.host.lower().startswith(("http://", "https://")) or hit.protocol.lower() in WEB_PROTOCOLS


def web_ports(hits: Iterable[FofaHit]) -> dict[str, list[int]]:
    """IP -> the sorted ports of every web service FOFA reported on it."""
    found: dict[str, set[int]] = {}
    for hit in hits:
        address = hit.address
        if address and hit.port is not None and is_web_hit(hit):
            found.setdefault(address, set()).add(hit.port)
    return {ip: sorted(ports) for ip, ports in found.items()}
