"""A local search engine speaking Bing's result-page HTML: ``GET /search?q=site:<domain>&first=<n>``.

Each page holds ten ``<li class="b_algo">`` results (an ``<h2><a href>`` each, after the
``b_tpcn`` attribution block with its own link and ``<cite>``), an ad (``<li class="b_ad">``) whose
link must not count as a result, and a ``<li class="b_pag">`` pager whose ``a.sb_pagN`` next link
carries the next ``first``. The last page has no next link, and, as Bing does, a ``first`` past the
end answers the last page again. With ``wrap_links`` result links go through Bing's click-tracking
redirect (``/ck/a?!&&p=...&u=a1<base64url>&ntb=1``). Requests are logged.
"""

from __future__ import annotations

import base64
import html
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

SEARCH_IP = "127.88.7.3"
PAGE_SIZE = 10


@dataclass
class BingState:
    """Results per ``site:`` domain and the server's behaviour; ``requests`` logs (q, first, UA)."""

    results: dict[str, list[str]] = field(default_factory=dict)
    ad_url: str = ""
    wrap_links: bool = False
    always_next: bool = False
    status: int = 200
    delay: float = 0.0
    requests: list[tuple[str, int, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def tracking_link(url: str) -> str:
    """Bing's click-tracking wrapper of ``url``."""
    token = base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")
    return f"https://www.bing.com/ck/a?!&&p=5f2c1e9a&ptn=3&ver=2&hsh=3&u=a1{token}&ntb=1"


def _result(index: int, url: str, href: str) -> str:
    parts = urlsplit(url)
    cite = html.escape(
        f"{parts.scheme}://{parts.netloc}" + (" › " + parts.path.strip("/") if parts.path else "")
    )
    return (
        f'<li class="b_algo" data-id iid="SERP.{5100 + index}"><div class="b_tpcn">'
        f'<a class="tilk" aria-label="{html.escape(parts.netloc)}" href="{html.escape(url)}" '
        f'h="ID=SERP,{5100 + index}.1"><div class="tpic"><div class="wr_fav"><div class="cico siteicon">'
        f'</div></div></div><div class="tptxt"><div class="tptt">{html.escape(parts.netloc)}</div>'
        f'<div class="tpmeta"><div class="b_attribution"><cite>{cite}</cite></div></div></div></a></div>'
        f'<h2><a target="_blank" href="{html.escape(href)}" h="ID=SERP,{5100 + index}.2">'
        f"Result <strong>{index}</strong> of the lab</a></h2>"
        f'<div class="b_caption"><p class="b_lineclamp2">A snippet about result {index}.</p></div></li>'
    )


def render_page(state: BingState, query: str, first: int) -> str:
    """The result page of ``query`` starting at result ``first`` (1-based)."""
    domain = query.removeprefix("site:")
    results = state.results.get(domain, [])
    last_start = max(0, (len(results) - 1) // PAGE_SIZE * PAGE_SIZE)
    start = min(max(first - 1, 0), last_start)
    chunk = results[start : start + PAGE_SIZE]
    items = [
        _result(start + i + 1, url, tracking_link(url) if state.wrap_links else url)
        for i, url in enumerate(chunk)
    ]
    if state.ad_url:
        items.insert(
            1,
            f'<li class="b_ad"><ul><li><div class="sb_add"><h2><a href="{html.escape(state.ad_url)}">'
            "Sponsored result</a></h2></div></li></ul></li>",
        )
    q = quote(query, safe="")
    number = start // PAGE_SIZE + 1
    pager = f'<li><a class="sb_pagS sb_pagS_bp b_widePag sb_bp" aria-label="Page {number}">{number}</a></li>'
    if start + PAGE_SIZE < len(results) or state.always_next:
        nxt = start + PAGE_SIZE + 1
        pager += (
            f'<li><a class="sb_pagN sb_pagN_bp b_widePag sb_bp " title="Next page" '
            f'href="/search?q={q}&amp;first={nxt}&amp;FORM=PORE" h="ID=SERP,5400.1">'
            '<div class="sw_next">Next</div></a></li>'
        )
    return (
        f'<!DOCTYPE html><html dir="ltr" lang="en"><head><title>{html.escape(query)} - Search</title></head>'
        f'<body><div id="b_content"><main aria-label="Search Results"><ol id="b_results" class="">'
        f"{''.join(items)}"
        f'<li class="b_pag"><nav role="navigation" aria-label="More results for {html.escape(query)}">'
        f'<ul class="sb_pagF">{pager}</ul></nav></li></ol></main></div></body></html>'
    )


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _BingServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        state = self.server.state
        params = parse_qs(urlsplit(self.path).query)
        query = (params.get("q") or [""])[0]
        first = int((params.get("first") or ["1"])[0] or 1)
        with state.lock:
            state.requests.append((query, first, self.headers.get("User-Agent") or ""))
        if state.delay:
            time.sleep(state.delay)
        if state.status != 200:
            body = b"<html><body>Too many requests</body></html>"
        else:
            body = render_page(state, query, first).encode()
        self.send_response(state.status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            self.wfile.write(body)
        except ConnectionError:
            return


class _BingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: BingState) -> None:
        self.state = state
        super().__init__(address, _Handler)


class FakeBing:
    """The fake engine on :data:`SEARCH_IP`; ``base_url`` is its search page."""

    def __init__(self, state: BingState) -> None:
        self.state = state
        self._server = _BingServer((SEARCH_IP, 0), state)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        """The search page URL to configure."""
        return f"http://{SEARCH_IP}:{self.port}/search"

    def start(self) -> FakeBing:
        """Serve in a daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
