"""Local imitations of the passive subdomain sources, one threaded HTTP server on 127.0.0.1.

Each service answers on its real path with its real JSON shape:

- crt.sh ``GET /?q=%.<root>&output=json``: an array of certificate entries (``name_value``
  holds newline-separated names);
- Cert Spotter ``GET /v1/issuances?domain=&include_subdomains=true&expand=dns_names[&after=]``:
  an array of issuances, paged with ``after``; errors ``{"code", "message"}``;
- FOFA ``GET /api/v1/search/all``: ``{"error": false, "size", "page", "results": [host, ...]}``;
  errors ``{"error": true, "errmsg": "[code] ..."}``;
- Hunter ``GET /openApi/search``: ``{"code", "message", "data": {"total", "arr": [...]}}``,
  every error with HTTP 200 and its own ``code``;
- SecurityTrails ``GET /v1/domain/<root>/subdomains`` (``APIKEY`` header):
  ``{"subdomains": [labels], "subdomain_count"}``; errors ``{"message"}``;
- AlienVault OTX ``GET /api/v1/indicators/domain/<root>/passive_dns``:
  ``{"passive_dns": [{"hostname", ...}], "count"}``; errors ``{"detail"}``.

:attr:`PassiveState.records` plants what every service reports for a root (raw, as a
real service would: wildcards, other domains, odd case).  :class:`Behaviour` per source
makes it reject the key, report a spent quota, answer 429 (with Retry-After) a number of
times, or hang; :attr:`PassiveState.page_size` makes the paging services page.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

KEYS = {
    "certspotter": "lab-certspotter-key",
    "fofa": "lab-fofa-key",
    "hunter_qax": "lab-hunter-key",
    "securitytrails": "lab-securitytrails-key",
    "alienvault": "lab-otx-key",
}
"""The key each imitation accepts."""


@dataclass
class Behaviour:
    """How one imitated service misbehaves: ``mode`` "ok", "bad_key", "quota", "hang" or "down" (502);
    ``rate_limited`` answers of 429 first (with ``retry_after`` seconds, None for none)."""

    mode: str = "ok"
    rate_limited: int = 0
    retry_after: int | None = 1


@dataclass
class PassiveState:
    """What the server reports (``records`` by root), how each source behaves, what it was asked."""

    records: dict[str, list[str]] = field(default_factory=dict)
    behaviour: dict[str, Behaviour] = field(default_factory=dict)
    page_size: int = 2
    requests: list[tuple[str, str]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, source: str) -> int:
        """How many requests ``source``'s imitation answered."""
        with self.lock:
            return sum(1 for s, _ in self.requests if s == source)


_ROUTES = (
    (re.compile(r"^/$"), "crtsh"),
    (re.compile(r"^/v1/issuances$"), "certspotter"),
    (re.compile(r"^/api/v1/search/all$"), "fofa"),
    (re.compile(r"^/openApi/search$"), "hunter_qax"),
    (re.compile(r"^/v1/domain/(?P<root>[^/]+)/subdomains$"), "securitytrails"),
    (re.compile(r"^/api/v1/indicators/domain/(?P<root>[^/]+)/passive_dns$"), "alienvault"),
)


def _route(path: str) -> tuple[str, str] | None:
    """The source that ``path`` belongs to and the root in the path ('' when none)."""
    for pattern, source in _ROUTES:
        match = pattern.match(path)
        if match:
            return source, unquote(match.groupdict().get("root") or "")
    return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _PassiveHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""

    def _send(self, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            self.wfile.write(body)
        except ConnectionError:
            return

    def _send_html(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        routed = _route(url.path)
        if routed is None:
            self._send({"error": "not found"}, 404)
            return
        source, root = routed
        state = self.server.state
        with state.lock:
            state.requests.append((source, self.path))
            behaviour = state.behaviour.setdefault(source, Behaviour())
            limited = behaviour.rate_limited > 0
            if limited:
                behaviour.rate_limited -= 1
        if behaviour.mode == "hang":
            state.release.wait(60)
            return
        if behaviour.mode == "down":
            self._send_html(502, b"<html><body><h1>502 Bad Gateway</h1></body></html>")
            return
        getattr(self, "_" + source)(params, root, behaviour, limited)

    def _key(self, source: str, given: str | None, behaviour: Behaviour) -> bool:
        """Whether ``given`` is the source's key (and the source is not set to reject it)."""
        return behaviour.mode != "bad_key" and given == KEYS[source]

    def _names(self, root: str) -> list[str]:
        return list(self.server.state.records.get(root.lower(), []))

    def _retry(self, behaviour: Behaviour) -> dict[str, str]:
        return {} if behaviour.retry_after is None else {"Retry-After": str(behaviour.retry_after)}

    def _crtsh(self, params: dict[str, str], _root: str, behaviour: Behaviour, limited: bool) -> None:
        if limited:
            self._send({"error": "Too Many Requests"}, 429, self._retry(behaviour))
            return
        root = params.get("q", "").removeprefix("%.")
        entries = [
            {
                "issuer_ca_id": 295815,
                "issuer_name": "C=US, O=Let's Encrypt, CN=R11",
                "common_name": name,
                "name_value": f"{name}\n{name.upper()}",
                "id": 15000000000 + i,
                "entry_timestamp": "2026-11-01T08:00:00.123",
                "not_before": "2026-11-01T07:00:00",
                "not_after": "2027-01-30T07:00:00",
                "serial_number": f"04{i:030x}",
                "result_count": 2,
            }
            for i, name in enumerate(self._names(root))
        ]
        self._send(entries)

    def _certspotter(self, params: dict[str, str], _root: str, behaviour: Behaviour, limited: bool) -> None:
        auth = self.headers.get("Authorization")
        if auth is not None and not self._key("certspotter", auth.removeprefix("Bearer "), behaviour):
            self._send({"code": "unauthorized", "message": "The API key is invalid."}, 401)
            return
        if limited:
            message = "You have exceeded the rate limit. Please slow down."
            self._send({"code": "rate_limited", "message": message}, 429, self._retry(behaviour))
            return
        names = self._names(params.get("domain", ""))
        issuances = [
            {
                "id": str(1000 + i),
                "tbs_sha256": f"{i:064x}",
                "cert_sha256": f"{i + 1:064x}",
                "dns_names": [name, f"*.{name}"],
                "pubkey_sha256": f"{i + 2:064x}",
                "not_before": "2026-11-01T07:00:00Z",
                "not_after": "2027-01-30T07:00:00Z",
                "revoked": False,
            }
            for i, name in enumerate(names)
        ]
        after = params.get("after")
        start = next((i + 1 for i, item in enumerate(issuances) if item["id"] == after), 0) if after else 0
        self._send(issuances[start : start + self.server.state.page_size])

    def _fofa(self, params: dict[str, str], _root: str, behaviour: Behaviour, limited: bool) -> None:
        if not self._key("fofa", params.get("key"), behaviour):
            self._send({"error": True, "errmsg": "[-700] Account Invalid"}, 401)
            return
        if behaviour.mode == "quota":
            self._send({"error": True, "errmsg": "[820031] F点余额不足"})
            return
        if limited:
            self._send({"error": True, "errmsg": "[429] request too fast"}, 429, self._retry(behaviour))
            return
        query = base64.b64decode(params.get("qbase64", "")).decode()
        match = re.fullmatch(r'domain="([^"]+)"', query)
        names = self._names(match.group(1)) if match else []
        page, size = (
            int(params.get("page", "1")),
            min(int(params.get("size", "100")), self.server.state.page_size),
        )
        rows = [f"https://{n}:8443" if i % 2 else n for i, n in enumerate(names)]
        results: list[Any] = rows[(page - 1) * size : page * size]
        if params.get("fields", "host") != "host":
            results = [[row] for row in results]
        self._send(
            {
                "error": False,
                "size": len(rows),
                "page": page,
                "mode": "extended",
                "query": query,
                "results": results,
            }
        )

    def _hunter_qax(self, params: dict[str, str], _root: str, behaviour: Behaviour, limited: bool) -> None:
        if not self._key("hunter_qax", params.get("api-key"), behaviour):
            self._send({"code": 401, "data": None, "message": "令牌过期或无效"})
            return
        if behaviour.mode == "quota":
            self._send({"code": 40204, "data": None, "message": "今日免费积分已用完"})
            return
        if limited:
            self._send({"code": 429, "data": None, "message": "请求太多啦，稍后再试试"})
            return
        search = base64.urlsafe_b64decode(params.get("search", "")).decode()
        match = re.fullmatch(r'domain\.suffix="([^"]+)"', search)
        names = self._names(match.group(1)) if match else []
        page, size = (
            int(params.get("page", "1")),
            min(int(params.get("page_size", "10")), self.server.state.page_size),
        )
        arr = [
            {
                "url": f"http://{n}",
                "ip": "192.0.2.10",
                "port": 80,
                "web_title": "lab",
                "domain": n,
                "protocol": "http",
            }
            for n in names[(page - 1) * size : page * size]
        ]
        data = {
            "account_type": "个人账号",
            "total": len(names),
            "time": 3,
            "arr": arr or None,
            "consume_quota": f"消耗积分：{len(arr)}",
            "rest_quota": "今日剩余积分：400",
        }
        self._send({"code": 200, "data": data, "message": "success"})

    def _securitytrails(
        self, _params: dict[str, str], root: str, behaviour: Behaviour, limited: bool
    ) -> None:
        if not self._key("securitytrails", self.headers.get("APIKEY"), behaviour):
            self._send({"message": "Invalid authentication credentials"}, 403)
            return
        if behaviour.mode == "quota":
            self._send({"message": "You've exceeded the usage limits for your account."}, 429)
            return
        if limited:
            self._send({"message": "API rate limit exceeded"}, 429, self._retry(behaviour))
            return
        labels = [n[: -len(root) - 1] for n in self._names(root) if n.endswith("." + root)]
        self._send(
            {
                "endpoint": f"/v1/domain/{root}/subdomains",
                "meta": {"limit_reached": False},
                "subdomain_count": len(labels),
                "subdomains": labels,
            }
        )

    def _alienvault(self, _params: dict[str, str], root: str, behaviour: Behaviour, limited: bool) -> None:
        key = self.headers.get("X-OTX-API-KEY")
        if key is not None and not self._key("alienvault", key, behaviour):
            self._send({"detail": "Invalid API key"}, 403)
            return
        if limited:
            self._send(
                {"detail": "Request was throttled. Expected available in 1 second."},
                429,
                self._retry(behaviour),
            )
            return
        records = [
            {
                "address": "192.0.2.20",
                "first": "2026-10-01T00:00:00",
                "last": "2026-11-30T00:00:00",
                "hostname": name,
                "record_type": "A",
                "indicator_link": f"/indicator/hostname/{name}",
                "flag_url": "",
                "flag_title": "",
                "asset_type": "hostname",
                "asn": "AS64500 lab",
            }
            for name in self._names(root)
        ]
        self._send({"passive_dns": records, "count": len(records)})


class _PassiveHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: PassiveState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


class PassiveServer:
    """All the imitated services on one ephemeral loopback port; :attr:`url` is every source's base URL.

    With ``tls`` (an :class:`ssl.SSLContext`), it serves HTTPS with that context's certificate.
    """

    def __init__(self, state: PassiveState | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.state = state or PassiveState()
        self.tls = tls
        self._server: _PassiveHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL of every imitated service."""
        assert self._server is not None
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> PassiveServer:
        """Serve in a background thread."""
        self._server = _PassiveHTTPServer(self.state)
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Release hanging answers, stop serving and close the socket."""
        self.state.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
