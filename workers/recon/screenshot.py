"""Site screenshots (the ``site_capture`` option): headless Chromium over the DevTools protocol.

:class:`SiteCapture` is the step a recon run calls after site identification.  Per call it starts
one Chromium (:class:`Browser`, driven by :class:`DevTools`, a small client over a WebSocket),
renders the new sites, ``recon.screenshot_concurrency`` pages at a time, and stores each PNG with
:class:`~controlplane.store.screenshots.ScreenshotWriter`.

Scope.  A page may reach only the run's own in-scope hosts (the sites' names and addresses, and
the names and addresses the run resolved and scanned); everything else is blocked twice:

* Chromium resolves nothing itself: ``--host-resolver-rules`` maps each allowed name to the
  in-scope address the run found for it, lets the allowed addresses through, and answers every
  other host (IP literals included) "not found", so no connection of any kind (sub-resources,
  ``fetch``, WebSockets, preconnects, workers) reaches another host, and no DNS query leaves;
* every request of a page is paused (``Fetch.requestPaused``) and let through only when its host
  is allowed; the hosts refused are counted on the site's screenshot note (``blocked``).

WebRTC gets no UDP, no proxy is used (``--no-proxy-server``, proxy variables dropped), background
networking is off, downloads are denied and dialogs dismissed.  A missing or failing browser makes
the option unavailable (:attr:`SiteCapture.unavailable`, reported in the task's statistic as
``skipped_options.site_capture``); it never fails the task.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import itertools
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pymongo.database import Database
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from controlplane.config import ReconConfig
from controlplane.core.errors import StoreError
from controlplane.store.screenshots import ScreenshotWriter
from workers.recon.control import run_pool
from workers.recon.sites import SiteResult

log = logging.getLogger(__name__)

START_TIMEOUT = 20.0
"""Seconds Chromium may take to open its DevTools endpoint."""
SCALES = (1.0, 0.5, 0.25)
"""A PNG over the size limit is captured again at the next scale."""
MAX_MESSAGE = 64 * 1024 * 1024
MAX_RULE_HOSTS = 2000
"""Allowed hosts named in the resolver rules at most (the sites' own come first)."""
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_NAME_RE = re.compile(r"^[a-z0-9_]([a-z0-9_.-]{0,251}[a-z0-9_])?$")
_PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy", "socks_proxy"}
_DISABLED_FEATURES = (
    "HttpsUpgrades,HttpsFirstBalancedModeAutoEnable,Translate,MediaRouter,DialMediaRouteProvider,"
    "OptimizationHints,AutofillServerCommunication,CertificateTransparencyComponentUpdater,"
    "InterestFeedContentSuggestions,PrivacySandboxSettings4"
)


@dataclass(frozen=True)
class CaptureSettings:
    """The ``recon.screenshot_*`` settings of a run (the defaults are the configuration's)."""

    chromium: str = "chromium"
    width: int = 1280
    height: int = 800
    max_bytes: int = 2 * 1024 * 1024
    timeout: float = 15.0
    max_sites: int = 200
    concurrency: int = 4

    @classmethod
    def from_config(cls, recon: ReconConfig) -> CaptureSettings:
        """The settings ``recon`` gives."""
        return cls(
            chromium=recon.screenshot_chromium,
            width=recon.screenshot_width,
            height=recon.screenshot_height,
            max_bytes=recon.screenshot_max_bytes,
            timeout=recon.screenshot_timeout,
            max_sites=recon.screenshot_max_sites,
            concurrency=recon.screenshot_concurrency,
        )


class BrowserUnavailable(Exception):
    """Chromium is missing or did not start; the message is the reason a task reports."""


class CaptureFailed(Exception):
    """One page could not be captured; the message is the reason noted on its site."""


class DevToolsError(Exception):
    """The browser answered a command with an error, or the connection closed."""


def png_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` from a PNG's header; ValueError when ``data`` is not a PNG."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def find_chromium(name: str) -> str:
    """The executable ``name`` (a path, or a name looked up on PATH); BrowserUnavailable if none."""
    path = name if os.sep in name else shutil.which(name) if name else None
    if not path or not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise BrowserUnavailable("chromium not found")
    return path


def _host(text: str) -> str:
    return text.strip().strip("[]").lower()


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def resolver_rules(names: Mapping[str, str], addresses: Iterable[str]) -> str:
    """Chromium's ``--host-resolver-rules``: ``names`` to their address, ``addresses`` as they are,
    every other host (name or address) not found."""
    rules = []
    for address in addresses:
        if _ip(address) is not None:
            rules.append(f"EXCLUDE {address}")
    for name, address in names.items():
        ip = _ip(address)
        if ip is not None and _NAME_RE.match(name):
            rules.append(f"MAP {name} {f'[{ip}]' if ip.version == 6 else ip}")
    rules.append("MAP * ~NOTFOUND")
    return ", ".join(rules)


_FLAGS = (
    "--headless=new", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
    "--no-proxy-server", "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--webrtc-ip-handling-policy=disable_non_proxied_udp", f"--disable-features={_DISABLED_FEATURES}",
    "--disable-background-networking", "--disable-component-update", "--disable-domain-reliability",
    "--disable-client-side-phishing-detection", "--disable-sync", "--disable-extensions",
    "--disable-default-apps", "--disable-breakpad", "--metrics-recording-only", "--no-first-run",
    "--no-default-browser-check", "--no-pings", "--ignore-certificate-errors", "--disable-gpu",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
)  # fmt: skip


def chromium_args(settings: CaptureSettings, profile: Path, rules: str) -> list[str]:
    """The command-line flags of a capture browser (``profile``: its private user data folder)."""
    args = [
        *_FLAGS,
        f"--user-data-dir={profile}",
        f"--host-resolver-rules={rules}",
        f"--window-size={settings.width},{settings.height}",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium's sandbox refuses to run as root
    return args


def chromium_env(profile: Path) -> dict[str, str]:
    """The browser's environment: ours without proxy settings, its home in ``profile``."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARIABLES}
    env.update(
        HOME=str(profile), XDG_CONFIG_HOME=str(profile / "config"), XDG_CACHE_HOME=str(profile / "cache")
    )
    return env


class DevTools:
    """A DevTools protocol connection: commands and their replies, events to one listener per session."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._listeners: dict[str, Callable[[str, dict[str, Any]], None]] = {}
        self._reader = asyncio.ensure_future(self._read())

    async def call(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        session: str = "",
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """Send one command and return its result (DevToolsError, or TimeoutError after ``timeout``)."""
        ident = next(self._ids)
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[ident] = reply
        message: dict[str, Any] = {"id": ident, "method": method, "params": dict(params or {})}
        if session:
            message["sessionId"] = session
        try:
            if self._reader.done():
                raise DevToolsError("browser connection closed")
            await self.ws.send(json.dumps(message))
            return await asyncio.wait_for(reply, timeout)
        except WebSocketException as exc:
            raise DevToolsError(f"browser connection failed: {exc}") from None
        finally:
            self._replies.pop(ident, None)

    def listen(self, session: str, listener: Callable[[str, dict[str, Any]], None]) -> None:
        """Hand the events of ``session`` to ``listener(method, params)``."""
        self._listeners[session] = listener

    def forget(self, session: str) -> None:
        """Stop handing on the events of ``session``."""
        self._listeners.pop(session, None)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                message = json.loads(raw)
                ident = message.get("id")
                if ident is not None:
                    reply = self._replies.get(ident)
                    if reply is None or reply.done():
                        continue
                    if "error" in message:
                        reply.set_exception(DevToolsError(str(message["error"].get("message", "error"))))
                    else:
                        reply.set_result(message.get("result") or {})
                    continue
                listener = self._listeners.get(message.get("sessionId", ""))
                if listener is not None:
                    listener(str(message.get("method", "")), message.get("params") or {})
        except (WebSocketException, ValueError) as exc:
            log.debug("browser connection ended: %s", exc)
        finally:
            for reply in self._replies.values():
                if not reply.done():
                    reply.set_exception(DevToolsError("browser connection closed"))

    def abort(self) -> None:
        """Stop reading (the browser is going away); pending commands fail."""
        self._reader.cancel()

    async def close(self) -> None:
        """Close the connection."""
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        with contextlib.suppress(Exception):
            await self.ws.close()


@dataclass
class Shot:
    """One captured page."""

    png: bytes
    width: int
    height: int
    scale: float
    loaded: bool
    blocked: list[str] = field(default_factory=list)

    def note(self) -> dict[str, Any]:
        """What the site document says of it (besides its size in bytes)."""
        return {
            "width": self.width,
            "height": self.height,
            "scale": self.scale,
            "loaded": self.loaded,
            "blocked": len(self.blocked),
        }


class PageEvents:
    """One page's events: the load, and its paused requests (let through when ``allow`` says so)."""

    def __init__(self, tools: DevTools, session: str, allow: Callable[[str], bool]) -> None:
        self.tools = tools
        self.session = session
        self.allow = allow
        self.loaded = asyncio.Event()
        self.blocked: set[str] = set()
        self._answers: set[asyncio.Future[Any]] = set()

    def __call__(self, method: str, params: dict[str, Any]) -> None:
        if method == "Page.loadEventFired":
            self.loaded.set()
        elif method == "Fetch.requestPaused":
            host = _host(urlsplit(str(params.get("request", {}).get("url", ""))).hostname or "")
            answer: tuple[str, dict[str, Any]]
            if host and self.allow(host):
                answer = ("Fetch.continueRequest", {"requestId": params.get("requestId")})
            else:
                self.blocked.add(host or "(no host)")
                answer = (
                    "Fetch.failRequest",
                    {"requestId": params.get("requestId"), "errorReason": "BlockedByClient"},
                )
            self._send(*answer)
        elif method == "Page.javascriptDialogOpening":
            self._send("Page.handleJavaScriptDialog", {"accept": False})

    def _send(self, method: str, params: dict[str, Any]) -> None:
        sent = asyncio.ensure_future(self.tools.call(method, params, session=self.session))
        self._answers.add(sent)
        sent.add_done_callback(self._sent)

    def _sent(self, sent: asyncio.Future[Any]) -> None:
        self._answers.discard(sent)
        if not sent.cancelled() and sent.exception() is not None:
            log.debug("page answer failed: %s", sent.exception())


class Browser:
    """One headless Chromium process with a private profile, and its DevTools connection."""

    def __init__(
        self, process: subprocess.Popen[bytes], profile: Path, tools: DevTools, settings: CaptureSettings
    ) -> None:
        self.process = process
        self.profile = profile
        self.tools = tools
        self.settings = settings

    @classmethod
    async def launch(
        cls, settings: CaptureSettings, names: Mapping[str, str], addresses: Collection[str]
    ) -> Browser:
        """Start Chromium able to reach ``names`` (at their address) and ``addresses`` only."""
        executable = find_chromium(settings.chromium)
        profile = Path(tempfile.mkdtemp(prefix="cp-chromium-"))
        args = [
            executable,
            *chromium_args(settings, profile, resolver_rules(names, addresses)),
            "about:blank",
        ]
        process: subprocess.Popen[bytes] | None = None
        tools: DevTools | None = None
        try:
            with open(profile / "chromium.log", "wb") as output:
                try:
                    process = subprocess.Popen(
                        args,
                        stdin=subprocess.DEVNULL,
                        stdout=output,
                        stderr=output,
                        env=chromium_env(profile),
                        start_new_session=True,
                    )
                except OSError as exc:
                    raise BrowserUnavailable(f"chromium failed to start: {exc.strerror}") from None
            url = await _devtools_url(process, profile / "DevToolsActivePort")
            ws = await connect(
                url, proxy=None, max_size=MAX_MESSAGE, ping_interval=None, open_timeout=START_TIMEOUT
            )
            tools = DevTools(ws)
            await tools.call("Browser.setDownloadBehavior", {"behavior": "deny"})
            return cls(process, profile, tools, settings)
        except BaseException as exc:
            if tools is not None:
                tools.abort()
            if process is not None:
                _stop(process)
            _log_tail(profile)
            shutil.rmtree(profile, ignore_errors=True)
            if isinstance(exc, OSError | WebSocketException | DevToolsError | TimeoutError):
                raise BrowserUnavailable(f"chromium failed to start: {type(exc).__name__}") from None
            raise

    async def capture(self, url: str, allow: Callable[[str], bool]) -> Shot:
        """Render ``url`` in a new page and capture it; CaptureFailed with the reason otherwise."""
        try:
            return await self._capture(url, allow)
        except TimeoutError:
            raise CaptureFailed(f"timed out after {self.settings.timeout:g} s") from None
        except DevToolsError as exc:
            raise CaptureFailed(str(exc)) from None
        except (KeyError, TypeError, ValueError) as exc:
            raise CaptureFailed(f"unexpected answer from the browser ({type(exc).__name__})") from None

    async def _capture(self, url: str, allow: Callable[[str], bool]) -> Shot:
        tools, settings = self.tools, self.settings
        target = (await tools.call("Target.createTarget", {"url": "about:blank"}))["targetId"]
        session = ""
        try:
            session = (await tools.call("Target.attachToTarget", {"targetId": target, "flatten": True}))[
                "sessionId"
            ]
            events = PageEvents(tools, session, allow)
            tools.listen(session, events)
            metrics = {
                "width": settings.width,
                "height": settings.height,
                "deviceScaleFactor": 1,
                "mobile": False,
            }
            await tools.call("Emulation.setDeviceMetricsOverride", metrics, session=session)
            await tools.call("Fetch.enable", {"patterns": [{"urlPattern": "*"}]}, session=session)
            await tools.call("Page.enable", session=session)
            deadline = time.monotonic() + settings.timeout
            navigated = await tools.call(
                "Page.navigate", {"url": url}, session=session, timeout=settings.timeout
            )
            if navigated.get("errorText"):
                raise CaptureFailed(f"navigation failed: {navigated['errorText']}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(events.loaded.wait(), max(0.0, deadline - time.monotonic()))
            png, scale = await self._png(session)
            try:
                width, height = png_size(png)
            except ValueError:
                raise CaptureFailed("the browser's capture is not a PNG") from None
            return Shot(png, width, height, scale, events.loaded.is_set(), sorted(events.blocked))
        finally:
            if session:
                tools.forget(session)
            with contextlib.suppress(DevToolsError, TimeoutError):
                await tools.call("Target.closeTarget", {"targetId": target})

    async def _png(self, session: str) -> tuple[bytes, float]:
        """The viewport as a PNG within ``max_bytes``: at full scale, else smaller."""
        settings = self.settings
        size = 0
        for scale in SCALES:
            params: dict[str, Any] = {"format": "png"}
            if scale != 1.0:
                params["clip"] = {
                    "x": 0,
                    "y": 0,
                    "width": settings.width,
                    "height": settings.height,
                    "scale": scale,
                }
            shot = await self.tools.call(
                "Page.captureScreenshot", params, session=session, timeout=settings.timeout
            )
            png = base64.b64decode(shot.get("data", ""))
            size = len(png)
            if size <= settings.max_bytes:
                return png, scale
        raise CaptureFailed(
            f"PNG of {size} bytes at 1/{int(1 / SCALES[-1])} scale is over {settings.max_bytes}"
        )

    async def close(self) -> None:
        """Close the connection, end the browser's processes, remove its profile."""
        await self.tools.close()
        _stop(self.process)
        shutil.rmtree(self.profile, ignore_errors=True)


async def _devtools_url(process: subprocess.Popen[bytes], port_file: Path) -> str:
    """The browser's DevTools WebSocket URL, once it wrote ``port_file``."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        code = process.poll()
        if code is not None:
            raise BrowserUnavailable(f"chromium failed to start: it exited with code {code}")
        with contextlib.suppress(OSError):
            lines = port_file.read_text().split()
            if len(lines) >= 2 and lines[0].isdigit():
                return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        if time.monotonic() > deadline:
            raise BrowserUnavailable(
                f"chromium failed to start: no DevTools endpoint within {START_TIMEOUT:g} s"
            )
        await asyncio.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Kill the browser's process group (it leads one) and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def _log_tail(profile: Path) -> None:
    with contextlib.suppress(OSError):
        tail = (profile / "chromium.log").read_text(errors="replace").strip().splitlines()[-5:]
        if tail:
            log.warning("chromium output before it failed:\n%s", "\n".join(tail))


class SiteCapture:
    """The ``site_capture`` step of one recon run: render its sites, store the PNGs, count the outcome.

    ``in_scope`` is the run's scope check; :meth:`capture` may be called once per discovery round
    and renders only sites it has not seen, ``settings.max_sites`` at most over the run.
    """

    def __init__(
        self, settings: CaptureSettings, db: Database[Any], task_id: str, in_scope: Callable[[str], bool]
    ) -> None:
        self.settings = settings
        self.writer = ScreenshotWriter(db, task_id)
        self.in_scope = in_scope
        self.seen: set[str] = set()
        self.stored = 0
        self.skipped = 0
        self.unavailable: str | None = None

    def allowed(
        self, sites: Sequence[SiteResult], hosts: Mapping[str, Sequence[str]]
    ) -> tuple[dict[str, str], set[str]]:
        """The names (with their address) and addresses a page may reach: in scope, known to the run."""
        names: dict[str, str] = {}
        addresses: set[str] = set()
        for site in sites:
            addresses.add(_host(site.ip))
            if _ip(_host(site.hostname)) is None:
                names.setdefault(_host(site.hostname), _host(site.ip))
        for host, ips in hosts.items():
            if len(names) + len(addresses) >= MAX_RULE_HOSTS:
                break
            found = next((_host(ip) for ip in ips if self.in_scope(ip)), None)
            if found is None or not self.in_scope(host):
                continue
            if _ip(_host(host)) is None:
                names.setdefault(_host(host), found)
            addresses.add(found)
        return names, addresses

    async def capture(
        self,
        sites: Iterable[SiteResult],
        hosts: Mapping[str, Sequence[str]],
        on_progress: Callable[[int, int], None],
    ) -> None:
        """Render the sites not seen yet (``hosts``: the run's names and addresses, each with its IPs)."""
        fresh = [s for s in sites if s.site not in self.seen]
        self.seen.update(s.site for s in fresh)
        room = max(0, self.settings.max_sites - (len(self.seen) - len(fresh)))
        for site in fresh[room:]:
            self._skip(site, f"over the limit of {self.settings.max_sites} screenshots per task")
        todo = [s for s in fresh[:room] if self._in_scope(s)]
        if not todo or self.unavailable is not None:
            return
        names, addresses = self.allowed(todo, hosts)
        allowed = set(names) | addresses
        try:
            browser = await Browser.launch(self.settings, names, addresses)
        except BrowserUnavailable as exc:
            self.unavailable = str(exc)
            log.warning("site_capture unavailable: %s", exc)
            return
        done = 0
        on_progress(done, len(todo))

        async def one(site: SiteResult) -> None:
            nonlocal done
            try:
                shot = await browser.capture(site.site, allowed.__contains__)
            except CaptureFailed as exc:
                self._skip(site, str(exc))
            else:
                try:
                    if self.writer.store(site.site, shot.png, shot.note()):
                        self.stored += 1
                except StoreError as exc:
                    log.warning("screenshot of %s not stored: %s", site.site, exc)
                    self._skip(site, "could not be stored")
            done += 1
            on_progress(done, len(todo))

        try:
            await run_pool(todo, one, self.settings.concurrency)
        finally:
            await browser.close()

    def _in_scope(self, site: SiteResult) -> bool:
        if self.in_scope(site.hostname) and self.in_scope(site.ip):
            return True
        self._skip(site, "out of scope")
        return False

    def _skip(self, site: SiteResult, reason: str) -> None:
        self.skipped += 1
        self.writer.skip(site.site, reason)

    def stats(self) -> dict[str, Any]:
        """The run's statistic: ``screenshot`` (stored), ``screenshot_skipped``, ``skipped_options``."""
        out: dict[str, Any] = {"screenshot": self.stored, "screenshot_skipped": self.skipped}
        if self.unavailable is not None:
            out["skipped_options"] = {"site_capture": self.unavailable}
        return out
