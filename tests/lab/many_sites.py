"""A farm of many loopback web sites (HTTP and HTTPS) served by one asyncio loop in a child process.

Each site listens on an address and port of its own (127.0.2.1, 127.0.2.2, …, ephemeral ports), so
per-host limits of a client never serialise them, and behaves as its :class:`FarmSite` says:

- ``page``: an HTML front page (a title, headers and markup that technologies are recognised by,
  a few KiB to a few hundred KiB of text), an icon for two sites in three;
- ``slow``: the same, with the first byte of every answer delayed by ``delay`` seconds (a delay
  longer than the client's timeout makes a site that never answers in time);
- ``huge``: a front page of :data:`HUGE_LENGTH` bytes (``framing``: Content-Length, chunked, or
  delimited by the close) produced lazily from one block, so a page of 1 GiB costs the server
  nothing until a client reads it;
- ``redirect``: ``/`` → ``/hop`` → an absolute URL on another (``target``) site, in scope;
- ``loop``: a redirect chain that never ends (``/`` → ``/loop/1`` → ``/loop/2`` …).

The server runs in a process of its own (a client measured in this process is measured alone) and
counts, for every site, requests by path, and for every connection to a huge page the bytes it
handed to its transport (at most one block is still there) before the connection ended, and who
ended it (:meth:`SiteFarm.stats`). The TLS certificate is self-signed, made with ``trustme`` when
the farm starts.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import socket
import ssl
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from typing import Any

import trustme

HUGE_LENGTH = 1 << 30
"""The length of a huge page (1 GiB), sent only as far as a client reads it."""
BLOCK = 16 * 1024
"""Huge pages go out in blocks of this size, with at most one block waiting in the transport."""
HUGE_SNDBUF = 64 * 1024
"""The kernel send buffer of a connection serving a huge page (a bound on what is in flight)."""
PUMP_BLOCKS = 4
"""Blocks written per event-loop turn while a huge page streams."""
REQUEST_LIMIT = 16 * 1024
FAVICON = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
    "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu"
).split()
PROFILES: tuple[tuple[dict[str, str], str, str], ...] = (
    ({"Server": "nginx/1.24.0"}, "", "nginx"),
    (
        {"Server": "Apache/2.4.57 (Debian)", "X-Powered-By": "PHP/8.2.7"},
        '<meta name="generator" content="WordPress 6.4.2">'
        '<link rel="stylesheet" href="/wp-content/themes/lab/style.css">',
        "WordPress",
    ),
    (
        {"Server": "Microsoft-IIS/10.0", "X-Powered-By": "ASP.NET", "X-AspNet-Version": "4.0.30319"},
        "",
        "IIS",
    ),
    (
        {"Server": "openresty", "Set-Cookie": "JSESSIONID=0a1b2c; Path=/"},
        '<script src="/assets/js/jquery-3.6.0.min.js"></script>',
        "jQuery",
    ),
    ({"Server": "Jetty(10.0.13)", "X-Jenkins": "2.401.3"}, "", "Jenkins"),
    ({}, '<meta name="generator" content="Hugo 0.120.4">', "Hugo"),
    (
        {"Server": "nginx", "Set-Cookie": "laravel_session=eyJpdiI6; path=/; httponly"},
        '<meta name="generator" content="Joomla! 4.2.8">',
        "Joomla",
    ),
    (
        {"Server": "Apache-Coyote/1.1"},
        '<script src="/webjars/swagger-ui/4.15.5/swagger-ui-bundle.js"></script>',
        "Swagger",
    ),
)
SIZES = (2 * 1024, 6 * 1024, 24 * 1024, 64 * 1024, 200 * 1024)


@dataclass(frozen=True)
class FarmSite:
    """One site of the farm: where it listens and how it behaves (see the module docstring)."""

    index: int
    kind: str
    ip: str
    tls: bool
    port: int = 0
    delay: float = 0.0
    framing: str = "length"
    target: int | None = None

    @property
    def scheme(self) -> str:
        """http or https."""
        return "https" if self.tls else "http"

    @property
    def origin(self) -> str:
        """``scheme://ip:port``."""
        return f"{self.scheme}://{self.ip}:{self.port}"

    @property
    def title(self) -> str:
        """The title of the front page of a page or slow site."""
        return f"Farm site {self.index} ({PROFILES[self.index % len(PROFILES)][2]})"


@dataclass
class FarmStats:
    """What the farm served since the last reset."""

    hits: Counter[tuple[int, str]] = field(default_factory=Counter)
    """(site index, path) -> requests."""
    huge: list[dict[str, Any]] = field(default_factory=list)
    """One ``{"site", "path", "sent", "ended_by"}`` per finished connection to a huge page."""
    slow_ended_by: list[tuple[int, str]] = field(default_factory=list)
    """(site index, "client" | "server") per finished connection to a slow site."""
    bytes_sent: int = 0
    open: int = 0

    @property
    def requests(self) -> int:
        """Requests of every site."""
        return sum(self.hits.values())


def farm_address(index: int) -> str:
    """The loopback address of site ``index``: 127.0.2.1 … 127.0.2.250, then 127.0.3.1, …"""
    return f"127.0.{2 + index // 250}.{1 + index % 250}"


def plan(
    count: int,
    *,
    seed: int = 7,
    huge: int | None = None,
    slow: int | None = None,
    stalled: int | None = None,
    redirects: int | None = None,
    loops: int | None = None,
    slow_delay: tuple[float, float] = (0.5, 1.5),
    stalled_delay: float = 60.0,
) -> list[FarmSite]:
    """``count`` sites: by default 1% huge, 4% slow, 1% stalled, 5% redirecting, 1% looping, a third TLS.

    The kinds are spread at random (``seed``) over the indexes; ``stalled`` sites are slow sites
    whose delay is ``stalled_delay``. Redirects land on page sites.
    """
    rng = random.Random(seed)
    wanted = {
        "huge": max(3, count // 100) if huge is None else huge,
        "slow": count * 4 // 100 if slow is None else slow,
        "stalled": count // 100 if stalled is None else stalled,
        "redirect": count * 5 // 100 if redirects is None else redirects,
        "loop": count // 100 if loops is None else loops,
    }
    kinds = [k for k, n in wanted.items() for _ in range(n)]
    if len(kinds) >= count:
        raise ValueError("too few sites for the special ones")
    kinds += ["page"] * (count - len(kinds))
    rng.shuffle(kinds)
    pages = [i for i, k in enumerate(kinds) if k == "page"]
    framings = ("length", "chunked", "close")
    sites = []
    for i, kind in enumerate(kinds):
        site = FarmSite(i, kind, farm_address(i), tls=i % 3 == 2)
        if kind == "slow":
            site = replace(site, delay=round(rng.uniform(*slow_delay), 2))
        elif kind == "stalled":
            site = replace(site, kind="slow", delay=stalled_delay)
        elif kind == "huge":
            site = replace(site, framing=framings[sum(1 for k in kinds[:i] if k == "huge") % 3])
        elif kind == "redirect":
            site = replace(site, target=rng.choice([p for p in pages if farm_address(p) != site.ip]))
        sites.append(site)
    return sites


_BLOCK = (b"<p>" + b"huge page " * BLOCK)[: BLOCK - 5] + b"</p>\n"
_FIRST_BLOCK = (b"<html><head><title>Huge</title></head><body>" + _BLOCK)[:BLOCK]


# -- the server (runs in the child process) ---------------------------------------------------


def _response(status: int, headers: dict[str, str], body: bytes) -> bytes:
    reason = {200: "OK", 301: "Moved Permanently", 302: "Found", 404: "Not Found"}.get(status, "OK")
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{k}: {v}" for k, v in {"Content-Type": "text/html; charset=utf-8", **headers}.items()]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + body


def _html(title: str, head: str, size: int, rng: random.Random) -> bytes:
    text = " ".join(rng.choice(WORDS) for _ in range(size // 6))
    paragraphs = "".join(f"<p>{text[k : k + 480]}</p>\n" for k in range(0, len(text), 480))
    return f"<html><head><title>{title}</title>{head}</head><body>{paragraphs}</body></html>".encode()


class _Content:
    """Every canned answer of the farm, built once."""

    def __init__(self, sites: Sequence[FarmSite]) -> None:
        self.sites = list(sites)
        self.fronts: dict[int, bytes] = {}
        self.icons: dict[int, str] = {}
        for site in sites:
            if site.kind not in ("page", "slow"):
                continue
            rng = random.Random(site.index)
            headers, head, _ = PROFILES[site.index % len(PROFILES)]
            if site.index % 3 == 0:
                self.icons[site.index] = f"/static/icon-{site.index % 5}.png"
                head += f'<link rel="icon" href="{self.icons[site.index]}">'
            elif site.index % 3 == 1:
                self.icons[site.index] = "/favicon.ico"
            body = _html(site.title, head, SIZES[rng.randrange(len(SIZES))], rng)
            self.fronts[site.index] = _response(200, headers, body)
        self.not_found = _response(404, {}, b"<html><head><title>404 Not Found</title></head></html>")
        self.icon = _response(200, {"Content-Type": "image/png"}, FAVICON)

    def answer(self, site: FarmSite, path: str) -> bytes | None:
        """The whole answer to ``GET path`` (None: a huge page, streamed)."""
        if site.kind == "huge" and path == "/":
            return None
        if site.kind == "redirect":
            if path == "/":
                return _response(302, {"Location": "/hop"}, b"")
            if path == "/hop":
                target = self.sites[site.target or 0]
                return _response(301, {"Location": f"{target.origin}/landing/{site.index}"}, b"")
        if site.kind == "loop" and (path == "/" or path.startswith("/loop/")):
            last = path.rsplit("/", 1)[1]
            step = int(last) if last.isdigit() else 0
            return _response(302, {"Location": f"/loop/{step + 1}"}, b"")
        if path.startswith("/landing/") and site.index in self.fronts:
            origin = path.removeprefix("/landing/")
            title = f"Landing from {origin}"
            return _response(200, {"Server": "nginx"}, _html(title, "", 1024, random.Random(origin)))
        if path == "/" and site.index in self.fronts:
            return self.fronts[site.index]
        if path == self.icons.get(site.index):
            return self.icon
        return self.not_found


class _Server:
    """The child side: listeners, counters and the command pipe."""

    def __init__(self, sites: Sequence[FarmSite], pipe: Connection) -> None:
        self.sites = list(sites)
        self.content = _Content(sites)
        self.pipe = pipe
        self.stats = FarmStats()
        self.done = asyncio.Event()

    def command(self) -> None:
        try:
            message = self.pipe.recv()
        except EOFError:
            self.done.set()
            return
        if message == "stats":
            self.pipe.send(self.stats)
        elif message == "reset":
            self.stats = FarmStats(open=self.stats.open)
            self.pipe.send(True)
        else:
            self.done.set()

    def protocol_factory(self, site: FarmSite) -> Callable[[], asyncio.Protocol]:
        return lambda: _SiteProtocol(self, site)

    async def run(self, tls: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_quiet_handler)
        servers = []
        for site in self.sites:
            server = await loop.create_server(
                self.protocol_factory(site),
                site.ip,
                site.port,
                ssl=tls if site.tls else None,
                backlog=512,
            )
            servers.append(server)
            site_port = int(server.sockets[0].getsockname()[1])
            self.sites[site.index] = replace(site, port=site_port)
        self.content.sites = self.sites
        loop.add_reader(self.pipe.fileno(), self.command)
        self.pipe.send([s.port for s in self.sites])
        await self.done.wait()
        for server in servers:
            server.close()


class _SiteProtocol(asyncio.Protocol):
    """One connection to one site: read the request line, answer (maybe late, maybe forever), count."""

    def __init__(self, server: _Server, site: FarmSite) -> None:
        self.server = server
        self.site = site
        self.buffer = b""
        self.transport: Any = None
        self.path = ""
        self.streaming = False
        self.paused = False
        self.finished = False
        self.written = 0
        self.left = 0
        self.scheduled = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.server.stats.open += 1
        if self.site.kind == "huge":
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, HUGE_SNDBUF)
            transport.set_write_buffer_limits(high=BLOCK)

    def data_received(self, data: bytes) -> None:
        if self.path:
            return
        self.buffer += data
        if b"\r\n\r\n" not in self.buffer:
            if len(self.buffer) > REQUEST_LIMIT:
                self.transport.abort()
            return
        parts = self.buffer.split(b"\r\n", 1)[0].split(b" ")
        self.path = parts[1].decode("latin-1") if len(parts) > 1 else "/"
        self.server.stats.hits[(self.site.index, self.path)] += 1
        if self.site.delay:
            self.timer = asyncio.get_running_loop().call_later(self.site.delay, self.respond)
        else:
            self.respond()

    def write(self, data: bytes) -> None:
        self.transport.write(data)
        self.written += len(data)

    def respond(self) -> None:
        self.timer = None
        answer = self.server.content.answer(self.site, self.path)
        if answer is not None:
            self.write(answer)
            self.finished = True
            self.transport.close()
            return
        head = "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/html; charset=utf-8\r\n"
        if self.site.framing == "length":
            head += f"Content-Length: {HUGE_LENGTH}\r\n"
        elif self.site.framing == "chunked":
            head += "Transfer-Encoding: chunked\r\n"
        self.write((head + "Connection: close\r\n\r\n").encode())
        self.streaming = True
        self.left = HUGE_LENGTH
        self.pump()

    def pump(self) -> None:
        """Write a few blocks, then let the loop run (a connection reset is noticed between turns)."""
        self.scheduled = False
        for _ in range(PUMP_BLOCKS):
            if not self.streaming or self.paused or self.transport.is_closing():
                return
            piece = (_FIRST_BLOCK if self.left == HUGE_LENGTH else _BLOCK)[: self.left]
            self.left -= len(piece)
            if self.site.framing == "chunked":
                self.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            else:
                self.write(piece)
            if self.left <= 0:
                self.streaming = False
                self.finished = True
                if self.site.framing == "chunked":
                    self.write(b"0\r\n\r\n")
                self.transport.close()
                return
        self.scheduled = True
        asyncio.get_running_loop().call_soon(self.pump)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.streaming and not self.scheduled:
            self.pump()

    def connection_lost(self, exc: Exception | None) -> None:
        stats = self.server.stats
        stats.open -= 1
        stats.bytes_sent += self.written
        self.streaming = False
        ended_by = "server" if self.finished else "client"
        if self.timer is not None:
            self.timer.cancel()
        if self.site.kind == "huge" and self.path:
            stats.huge.append(
                {"site": self.site.index, "path": self.path, "sent": self.written, "ended_by": ended_by}
            )
        if self.site.kind == "slow" and self.path:
            stats.slow_ended_by.append((self.site.index, ended_by))


def _quiet_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Clients hanging up mid-answer is what the farm is for: only other errors are printed.

    (Python 3.11's TLS transport may also report the end of a reset connection twice.)
    """
    error = context.get("exception")
    if isinstance(error, OSError | ssl.SSLError | AttributeError):
        return
    loop.default_exception_handler(context)


def _tls_context(folder: str) -> ssl.SSLContext:
    ca = trustme.CA()
    pem = os.path.join(folder, "farm.pem")
    ca.issue_cert("farm.test", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(pem)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pem)
    return ctx


def _serve(sites: Sequence[FarmSite], pipe: Connection) -> None:
    with tempfile.TemporaryDirectory(prefix="farm-") as folder:
        tls = _tls_context(folder)
        asyncio.run(_Server(sites, pipe).run(tls))


class SiteFarm:
    """The farm's parent side: starts the server process, reads its counters, stops it."""

    def __init__(self, sites: Sequence[FarmSite]) -> None:
        self.sites = list(sites)
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(self.sites, child), name="site-farm", daemon=True
        )
        self._child_end = child

    def start(self, timeout: float = 60.0) -> SiteFarm:
        """Start serving; returns when every site listens (its port filled in :attr:`sites`)."""
        self._process.start()
        self._child_end.close()
        if not self._pipe.poll(timeout):
            self.stop()
            raise RuntimeError("the site farm did not start")
        ports = self._pipe.recv()
        self.sites = [replace(s, port=p) for s, p in zip(self.sites, ports, strict=True)]
        return self

    def of_kind(self, kind: str) -> list[FarmSite]:
        """The sites of one kind."""
        return [s for s in self.sites if s.kind == kind]

    def stats(self) -> FarmStats:
        """The counters since the last :meth:`reset`."""
        self._pipe.send("stats")
        stats: FarmStats = self._pipe.recv()
        return stats

    def reset(self) -> None:
        """Zero the counters (connections still open stay counted as open)."""
        self._pipe.send("reset")
        self._pipe.recv()

    def stop(self) -> None:
        """Stop the server process."""
        if self._process.is_alive():
            try:
                self._pipe.send("stop")
            except OSError:
                pass
            self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)
        self._pipe.close()
