"""A local FOFA API for tests: ``/api/v1/search/all`` and ``/api/v1/info/my`` with FOFA's JSON shapes.

The server knows one account (email, key), a data allowance in results (like F points:
every result returned spends one) and a fixed result set per query.  Search answers
``{"error": false, "size": <total>, "page", "mode", "query", "results": [[...], ...]}`` with
the requested fields in the requested order; a wrong key answers HTTP 401 with
``{"error": true, "errmsg": "[-700] Account Invalid"}`` and a spent allowance
``{"error": true, "errmsg": "[820031] F点余额不足"}``.  Every search request is recorded.
"""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

BAD_KEY_MESSAGE = "[-700] Account Invalid"
QUOTA_MESSAGE = "[820031] F点余额不足"
MAX_PAGE_SIZE = 10000


@dataclass
class SearchRequest:
    """What one search asked for (the query decoded from ``qbase64``)."""

    query: str
    page: int
    size: int
    fields: list[str]
    email: str


@dataclass
class FofaAccount:
    """The single account of the lab server and what it has left."""

    email: str = "lab@fofa.test"
    key: str = "lab-fofa-key"
    remain_api_data: int = 100_000
    remain_api_query: int = 1_000
    report_limits: bool = True


@dataclass
class FofaState:
    """Mutable server state: the account, the records per query, the request log, a forced delay."""

    account: FofaAccount = field(default_factory=FofaAccount)
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[SearchRequest] = field(default_factory=list)
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _FofaHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""

    def _send(self, payload: dict[str, Any], status: int = 200) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            self.wfile.write(body)
        except ConnectionError:
            return

    def do_GET(self) -> None:
        state = self.server.state
        if state.delay:
            threading.Event().wait(state.delay)
        url = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        account = state.account
        if params.get("key") != account.key:
            self._send({"error": True, "errmsg": BAD_KEY_MESSAGE}, 401)
            return
        if url.path == "/api/v1/info/my":
            self._send(self._info(account))
        elif url.path == "/api/v1/search/all":
            self._search(params)
        else:
            self._send({"error": True, "errmsg": "[-4] Params Error"}, 404)

    @staticmethod
    def _info(account: FofaAccount) -> dict[str, Any]:
        info: dict[str, Any] = {
            "error": False,
            "email": account.email,
            "username": "lab",
            "category": "user",
            "fcoin": 0,
            "isvip": True,
            "vip_level": 2,
            "is_verified": False,
            "message": "",
        }
        if account.report_limits:
            info["remain_api_query"] = account.remain_api_query
            info["remain_api_data"] = account.remain_api_data
        return info

    def _search(self, params: dict[str, str]) -> None:
        state = self.server.state
        try:
            query = base64.b64decode(params.get("qbase64", ""), validate=True).decode("utf-8")
            page = int(params.get("page", "1"))
            size = int(params.get("size", "100"))
        except ValueError:
            self._send({"error": True, "errmsg": "[-4] Params Error"})
            return
        fields = [f for f in params.get("fields", "host,ip,port").split(",") if f]
        with state.lock:
            state.requests.append(SearchRequest(query, page, size, fields, params.get("email", "")))
            account = state.account
            if account.remain_api_query <= 0 or account.remain_api_data <= 0:
                self._send({"error": True, "errmsg": QUOTA_MESSAGE})
                return
            matches = state.records.get(query, [])
            size = min(max(1, size), MAX_PAGE_SIZE)
            rows = matches[(page - 1) * size : page * size][: account.remain_api_data]
            account.remain_api_query -= 1
            account.remain_api_data -= len(rows)
        results = [[str(row.get(f, "")) for f in fields] for row in rows]
        self._send(
            {
                "error": False,
                "size": len(matches),
                "page": page,
                "mode": "extended",
                "query": query,
                "results": results,
            }
        )


class _FofaHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: FofaState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


class FofaServer:
    """The lab FOFA API on an ephemeral loopback port; :attr:`url` is its ``fofa_url``."""

    def __init__(self, state: FofaState | None = None) -> None:
        self.state = state or FofaState()
        self._server: _FofaHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL (``recon.fofa_url``)."""
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FofaServer:
        """Serve in a background thread."""
        self._server = _FofaHTTPServer(self.state)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
