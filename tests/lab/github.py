"""A local imitation of the parts of GitHub's REST API the GitHub tasks use.

``GET {prefix}/search/code`` (token required, ``q``/``per_page``/``page``, text-match items, ``Link``
headers, the 1000-result cap, rate-limit headers) and ``GET {prefix}/repos/{owner}/{repo}/contents/{path}``
(base64 JSON). Tests plant files and script rate limiting through :class:`GithubState`.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

TOKEN = "lab-github-token"
PREFIX = "/api/v3"


@dataclass
class GithubState:
    """Files to search and the rate-limit script."""

    files: list[tuple[str, str, str]] = field(default_factory=list)
    remaining: int = 5000
    reset_in: float = 1.0
    retry_after: int | None = None
    search_calls: int = 0
    requests: list[str] = field(default_factory=list)

    def add(self, repo: str, path: str, content: str) -> None:
        """Plant a file."""
        self.files.append((repo, path, content))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _GithubServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.close_connection = True
        self.wfile.write(body)

    def do_GET(self) -> None:
        state = self.server.state
        state.requests.append(self.path)
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._send(401, {"message": "Bad credentials"})
            return
        url = urlsplit(self.path)
        if url.path == f"{PREFIX}/search/code":
            self._search(parse_qs(url.query))
        elif url.path.startswith(f"{PREFIX}/repos/") and "/contents/" in url.path:
            self._contents(url.path[len(f"{PREFIX}/repos/") :])
        else:
            self._send(404, {"message": "Not Found"})

    def _limits(self) -> dict[str, str] | None:
        """Rate-limit headers; None after sending a rate-limit answer."""
        state = self.server.state
        reset = str(int(time.time() + state.reset_in))
        if state.retry_after is not None:
            wait, state.retry_after = state.retry_after, None
            self._send(403, {"message": "secondary rate limit"}, {"Retry-After": str(wait)})
            return None
        if state.remaining <= 0:
            headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}
            self._send(403, {"message": "API rate limit exceeded"}, headers)
            if state.reset_in <= 5:
                state.remaining = 5000
            return None
        state.remaining -= 1
        return {
            "X-RateLimit-Limit": "30",
            "X-RateLimit-Remaining": str(state.remaining),
            "X-RateLimit-Reset": reset,
        }

    def _search(self, query: dict[str, list[str]]) -> None:
        state = self.server.state
        state.search_calls += 1
        headers = self._limits()
        if headers is None:
            return
        keyword = query.get("q", [""])[0].lower()
        per_page = min(100, int(query.get("per_page", ["30"])[0]))
        page = int(query.get("page", ["1"])[0])
        if page * per_page > 1000 + per_page - 1 or page < 1:
            self._send(422, {"message": "Only the first 1000 search results are available"})
            return
        hits = [f for f in state.files if keyword in f[2].lower()]
        total = len(hits)
        shown = hits[: min(total, 1000)]
        items = [self._item(*f, keyword) for f in shown[(page - 1) * per_page : page * per_page]]
        last = max(1, -(-len(shown) // per_page))
        base = f"http://{self.headers['Host']}{PREFIX}/search/code?q={quote(keyword)}&per_page={per_page}"
        links = []
        if page < last:
            links.append(f'<{base}&page={page + 1}>; rel="next"')
            links.append(f'<{base}&page={last}>; rel="last"')
        if links:
            headers["Link"] = ", ".join(links)
        self._send(200, {"total_count": total, "incomplete_results": False, "items": items}, headers)

    def _item(self, repo: str, path: str, content: str, keyword: str) -> dict[str, Any]:
        host = self.headers["Host"]
        line = next((x for x in content.splitlines() if keyword in x.lower()), "")
        return {
            "name": path.rsplit("/", 1)[-1],
            "path": path,
            "sha": f"{abs(hash((repo, path, content))):040x}"[:40],
            "url": f"http://{host}{PREFIX}/repos/{repo}/contents/{quote(path)}?ref=main",
            "html_url": f"https://github.lab/{repo}/blob/main/{path}",
            "repository": {"full_name": repo, "html_url": f"https://github.lab/{repo}"},
            "text_matches": [{"fragment": line, "matches": [{"text": keyword}]}],
        }

    def _contents(self, rest: str) -> None:
        if self._limits() is None:
            return
        owner, repo, _, path = rest.split("/", 3)
        wanted = (f"{owner}/{repo}", unquote(path))
        for file_repo, file_path, content in self.server.state.files:
            if (file_repo, file_path) == wanted:
                encoded = base64.b64encode(content.encode()).decode()
                self._send(200, {"type": "file", "encoding": "base64", "content": encoded, "path": file_path})
                return
        self._send(404, {"message": "Not Found"})


class _GithubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: GithubState) -> None:
        self.state = state
        super().__init__(("127.0.0.1", 0), _Handler)


class FakeGithub:
    """The fake API on a free loopback port; ``api_url`` is what ``recon.github_url`` should be."""

    def __init__(self) -> None:
        self.state = GithubState()
        self._server = _GithubServer(self.state)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def api_url(self) -> str:
        """The API base URL (GitHub Enterprise style, with the /api/v3 prefix)."""
        return f"http://127.0.0.1:{self.port}{PREFIX}"

    def start(self) -> FakeGithub:
        """Serve in a daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
