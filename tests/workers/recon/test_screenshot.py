"""Site screenshots (``site_capture``) against lab sites on loopback, with Debian's Chromium.

Every browser these tests start can reach 127.0.0.1 only: the scope check of the runs allows
127.0.0.1 and nothing else, and a second lab server on 127.0.0.2 (out of scope) counts what
reaches it.  Without ``/usr/bin/chromium`` the tests that render are skipped locally and fail in CI.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import socket
import ssl
import stat
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gridfs
import pytest
import trustme

from controlplane.config import ReconConfig
from controlplane.store.results import ResultWriter
from controlplane.store.screenshots import BUCKET
from tests.lab.scenarios import new_task_id
from tests.lab.sites import Route, RouteSite, html
from workers.recon import ReconContext, run_ip_task
from workers.recon.screenshot import (
    BrowserUnavailable,
    CaptureSettings,
    SiteCapture,
    find_chromium,
    png_size,
    resolver_rules,
)
from workers.recon.sites import SiteResult

CHROMIUM = "/usr/bin/chromium"
IN_SCOPE = "127.0.0.1"
OUT_OF_SCOPE = "127.0.0.2"
BLUE = (0x33, 0x66, 0xCC)
GREEN = (0x22, 0x99, 0x44)


def only_loopback_one(host: str) -> bool:
    """The scope of these runs: 127.0.0.1 alone."""
    return host == IN_SCOPE


@pytest.fixture(scope="module")
def chromium() -> str:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing in CI (.ci/run installs Debian's chromium)")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    return CHROMIUM


def png_pixel(data: bytes, x: int, y: int) -> tuple[int, int, int]:
    """The RGB colour of one pixel of an 8-bit, non-interlaced RGB or RGBA PNG (no Pillow here)."""
    width, _ = png_size(data)
    depth, colour, _, _, interlace = struct.unpack(">BBBBB", data[24:29])
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    step = 3 if colour == 2 else 4
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        if data[pos + 4 : pos + 8] == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * step
    previous = bytearray(stride)
    for row in range(y + 1):
        kind = raw[row * (stride + 1)]
        line = bytearray(raw[row * (stride + 1) + 1 : (row + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - step] if i >= step else 0
            up = previous[i]
            corner = previous[i - step] if i >= step else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                guess = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + guess) & 0xFF
        previous = line
    r, g, b = previous[x * step : x * step + 3]
    return r, g, b


def page(colour: tuple[int, int, int], extra: str = "") -> Route:
    """A page filled with ``colour``."""
    hexa = "#{:02x}{:02x}{:02x}".format(*colour)
    return html("lab shot", f'<div style="position:fixed;inset:0;background:{hexa}"></div>{extra}')


def noisy_page() -> Route:
    """A page whose PNG is large: a canvas of seeded noise filling the viewport."""
    script = (
        "<canvas id=c></canvas><script>const c=document.getElementById('c');"
        "c.width=innerWidth;c.height=innerHeight;c.style.cssText='position:fixed;inset:0';"
        "const x=c.getContext('2d'),d=x.createImageData(c.width,c.height);let s=2463534242;"
        "for(let i=0;i<d.data.length;i++){s^=s<<13;s^=s>>>17;s^=s<<5;"
        "d.data[i]=i%4===3?255:s&255}x.putImageData(d,0,0);</script>"
    )
    return html("noise", script)


@pytest.fixture
def sites() -> Iterator[list[RouteSite]]:
    started: list[RouteSite] = []
    yield started
    for site in started:
        site.stop()


def serve(started: list[RouteSite], ip: str, routes: dict[str, Route]) -> RouteSite:
    site = RouteSite(ip, routes).start()
    started.append(site)
    return site


def context(db: Any, **overrides: Any) -> ReconContext:
    fields: dict[str, Any] = {
        "task_id": new_task_id("shot"),
        "db": db,
        "resolvers": [],
        "progress": lambda stage, done, total: None,
        "should_stop": lambda: False,
        "scope_check": only_loopback_one,
        "connect_timeout": 0.5,
        "http_timeout": 3.0,
    }
    fields.update(overrides)
    return ReconContext(**fields)


def ip_options(*sites: RouteSite, capture: bool = True) -> dict[str, Any]:
    return {
        "port_scan": True,
        "port_scan_type": "custom",
        "port_custom": [s.port for s in sites],
        "site_identify": True,
        "site_capture": capture,
    }


def stored(db: Any, task_id: str) -> dict[str, tuple[dict[str, Any], bytes]]:
    """Site URL -> (its site document, its PNG) for every screenshot of the task."""
    bucket = gridfs.GridFSBucket(db, bucket_name=BUCKET)
    out = {}
    for site in db["site"].find({"task_id": task_id}):
        found = db[f"{BUCKET}.files"].find_one({"_id": site["_id"]})
        if found is not None:
            out[site["site"]] = (site, bucket.open_download_stream(site["_id"]).read())
    return out


# -- without a browser ------------------------------------------------------------------


def test_the_capture_defaults_are_the_configuration_defaults() -> None:
    assert CaptureSettings.from_config(ReconConfig()) == CaptureSettings()
    recon = ReconConfig(screenshot_chromium="/opt/chromium", screenshot_width=640, screenshot_max_sites=3)
    assert CaptureSettings.from_config(recon) == CaptureSettings("/opt/chromium", 640, max_sites=3)


def test_png_size_reads_the_header_and_refuses_other_data() -> None:
    header = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", 640, 400)
    assert png_size(header + b"\x08\x06\x00\x00\x00") == (640, 400)
    with pytest.raises(ValueError):
        png_size(b"GIF89a" + bytes(30))


def test_resolver_rules_name_the_allowed_hosts_and_refuse_the_rest() -> None:
    rules = resolver_rules(
        {"www.lab.test": "127.0.0.1", "v6.lab.test": "::1", "bad,name": "127.0.0.1"}, ["127.0.0.1"]
    )
    assert rules.split(", ") == [
        "EXCLUDE 127.0.0.1",
        "MAP www.lab.test 127.0.0.1",
        "MAP v6.lab.test [::1]",
        "MAP * ~NOTFOUND",
    ]


def test_a_missing_chromium_is_reported_by_reason(tmp_path: Path) -> None:
    with pytest.raises(BrowserUnavailable, match=r"^chromium not found$"):
        find_chromium(str(tmp_path / "no-such-chromium"))
    with pytest.raises(BrowserUnavailable, match=r"^chromium not found$"):
        find_chromium("no-such-chromium-on-path")


# -- rendering ----------------------------------------------------------------------------


def test_ip_task_stores_one_screenshot_per_site_at_the_configured_size(
    chromium: str, recon_db: Any, sites: list[RouteSite]
) -> None:
    blue = serve(sites, IN_SCOPE, {"/": page(BLUE)})
    green = serve(sites, IN_SCOPE, {"/": page(GREEN)})
    ctx = context(recon_db)
    settings = CaptureSettings(chromium=chromium, width=800, height=600)
    stats = run_ip_task([IN_SCOPE], ip_options(blue, green), ctx, settings)

    assert stats["site"] == 2 and stats["screenshot"] == 2 and stats["screenshot_skipped"] == 0
    assert "skipped_options" not in stats and stats["partial"] is False
    shots = stored(recon_db, ctx.task_id)
    assert set(shots) == {blue.url, green.url}
    for site, colour in ((blue, BLUE), (green, GREEN)):
        doc, png = shots[site.url]
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert png_size(png) == (800, 600)
        assert png_pixel(png, 400, 300) == colour
        assert doc["screenshot"] == {
            "width": 800,
            "height": 600,
            "scale": 1.0,
            "loaded": True,
            "blocked": 0,
            "bytes": len(png),
        }
    # The browser fetched each front page itself (besides site identification's own request).
    assert blue.requests.count(("GET", "/")) >= 2


def test_an_https_site_with_a_self_signed_certificate_is_rendered(
    chromium: str, recon_db: Any, sites: list[RouteSite]
) -> None:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert(IN_SCOPE).configure_cert(tls)
    secure = RouteSite(IN_SCOPE, {"/": page(GREEN)}, tls=tls).start()
    sites.append(secure)
    ctx = context(recon_db)
    stats = run_ip_task([IN_SCOPE], ip_options(secure), ctx, CaptureSettings(chromium=chromium))
    assert stats["screenshot"] == 1
    _, png = stored(recon_db, ctx.task_id)[secure.url]
    assert secure.url.startswith("https://") and png_pixel(png, 640, 400) == GREEN


def test_a_page_cannot_reach_an_out_of_scope_host(
    chromium: str, recon_db: Any, sites: list[RouteSite]
) -> None:
    outside = serve(sites, OUT_OF_SCOPE, {"/": html("outside")})
    probe = http.client.HTTPConnection(OUT_OF_SCOPE, outside.port, timeout=5)
    probe.request("GET", "/")
    assert probe.getresponse().status == 200  # the server is up, and reachable from here
    probe.close()
    outside.requests.clear()
    extra = (
        f'<link rel="preconnect" href="{outside.url}"><link rel="stylesheet" href="{outside.url}/style.css">'
        '<link rel="stylesheet" href="/local.css">'
        f'<img src="{outside.url}/pixel.png"><img src="http://outside.example/x.png">'
        f'<script>fetch("{outside.url}/fetch").catch(() => 0);'
        f'try {{ new WebSocket("ws://{outside.hostport}/ws") }} catch (e) {{}}</script>'
    )
    local_css = Route(b"body { margin: 0 }", headers={"Content-Type": "text/css"})
    site = serve(sites, IN_SCOPE, {"/": page(BLUE, extra), "/local.css": local_css})
    ctx = context(recon_db)
    stats = run_ip_task(
        [IN_SCOPE], ip_options(site), ctx, CaptureSettings(chromium=chromium, width=640, height=480)
    )

    assert stats["screenshot"] == 1
    doc, png = stored(recon_db, ctx.task_id)[site.url]
    assert png_pixel(png, 320, 240) == BLUE
    assert ("GET", "/local.css") in site.requests  # the page's in-scope sub-resources load
    assert outside.requests == []
    assert doc["screenshot"]["blocked"] == 2  # 127.0.0.2 and outside.example, refused by the scope check


def test_a_large_png_is_scaled_down_and_one_too_large_is_skipped_with_its_reason(
    chromium: str, recon_db: Any, sites: list[RouteSite]
) -> None:
    site = serve(sites, IN_SCOPE, {"/": noisy_page()})
    scaled = context(recon_db)
    settings = CaptureSettings(chromium=chromium, width=800, height=600, max_bytes=800_000)
    stats = run_ip_task([IN_SCOPE], ip_options(site), scaled, settings)
    assert stats["screenshot"] == 1
    doc, png = stored(recon_db, scaled.task_id)[site.url]
    assert png_size(png) == (400, 300) and len(png) <= 800_000
    assert doc["screenshot"]["scale"] == 0.5

    skipped = context(recon_db)
    settings = CaptureSettings(chromium=chromium, width=800, height=600, max_bytes=2048)
    stats = run_ip_task([IN_SCOPE], ip_options(site), skipped, settings)
    assert stats["screenshot"] == 0 and stats["screenshot_skipped"] == 1
    assert stored(recon_db, skipped.task_id) == {}
    note = recon_db["site"].find_one({"task_id": skipped.task_id})["screenshot"]
    assert note["skipped"].endswith("scale is over 2048")


def test_the_per_task_cap_skips_further_sites(chromium: str, recon_db: Any, sites: list[RouteSite]) -> None:
    first = serve(sites, IN_SCOPE, {"/": page(BLUE)})
    second = serve(sites, IN_SCOPE, {"/": page(GREEN)})
    ctx = context(recon_db)
    settings = CaptureSettings(chromium=chromium, max_sites=1)
    stats = run_ip_task([IN_SCOPE], ip_options(first, second), ctx, settings)
    assert stats["site"] == 2 and stats["screenshot"] == 1 and stats["screenshot_skipped"] == 1
    notes = [d["screenshot"] for d in recon_db["site"].find({"task_id": ctx.task_id})]
    assert {"skipped": "over the limit of 1 screenshots per task"} in notes


def test_a_site_by_name_is_rendered_at_the_address_the_run_found(
    chromium: str, recon_db: Any, sites: list[RouteSite]
) -> None:
    """``shot.lab.test`` is known to no resolver of the machine: Chromium reaches it through the rules."""
    site = serve(sites, IN_SCOPE, {"/": page(GREEN)})
    task_id = new_task_id("shot")
    url = f"http://shot.lab.test:{site.port}"
    found = SiteResult(
        url, "shot.lab.test", IN_SCOPE, site.port, "http", 200, "", {}, "", "text/html", 0, url
    )
    writer = ResultWriter(recon_db, task_id, ["site"])
    writer.ensure_indexes()
    writer.insert("site", [found.to_doc()])
    in_scope: Callable[[str], bool] = lambda host: host in (IN_SCOPE, "shot.lab.test")  # noqa: E731
    capture = SiteCapture(CaptureSettings(chromium=chromium), recon_db, task_id, in_scope)
    run_capture(capture, [found], {"shot.lab.test": [IN_SCOPE]})
    assert capture.stats() == {"screenshot": 1, "screenshot_skipped": 0}
    _, png = stored(recon_db, task_id)[url]
    assert png_pixel(png, 10, 10) == GREEN


def test_the_per_page_timeout_captures_a_page_still_loading_and_skips_one_that_never_answers(
    chromium: str, recon_db: Any, sites: list[RouteSite]
) -> None:
    """A listener that never answers: a page waiting for an image from it, and a site that is it."""
    with socket.socket() as silent:
        silent.bind((IN_SCOPE, 0))
        silent.listen(64)
        port = silent.getsockname()[1]
        slow = serve(sites, IN_SCOPE, {"/": page(BLUE, f'<img src="http://{IN_SCOPE}:{port}/slow.png">')})
        task_id = new_task_id("shot")
        found = [
            SiteResult(url, IN_SCOPE, IN_SCOPE, p, "http", 200, "", {}, "", "text/html", 0, url)
            for url, p in ((slow.url, slow.port), (f"http://{IN_SCOPE}:{port}", port))
        ]
        writer = ResultWriter(recon_db, task_id, ["site"])
        writer.ensure_indexes()
        writer.insert("site", [f.to_doc() for f in found])
        settings = CaptureSettings(chromium=chromium, timeout=2.0)
        capture = SiteCapture(settings, recon_db, task_id, only_loopback_one)
        run_capture(capture, found, {})
    assert capture.stats() == {"screenshot": 1, "screenshot_skipped": 1}
    doc, png = stored(recon_db, task_id)[slow.url]
    assert doc["screenshot"]["loaded"] is False and png_pixel(png, 5, 5) == BLUE
    silent_doc = recon_db["site"].find_one({"task_id": task_id, "site": found[1].site})
    assert silent_doc["screenshot"] == {"skipped": "timed out after 2 s"}


def run_capture(capture: SiteCapture, found: list[SiteResult], hosts: dict[str, list[str]]) -> None:
    asyncio.run(capture.capture(found, hosts, lambda done, total: None))


# -- Chromium unavailable ------------------------------------------------------------------


def test_without_chromium_the_task_succeeds_and_names_the_option(
    recon_db: Any, sites: list[RouteSite], tmp_path: Path
) -> None:
    site = serve(sites, IN_SCOPE, {"/": page(BLUE)})
    ctx = context(recon_db)
    settings = CaptureSettings(chromium=str(tmp_path / "missing" / "chromium"))
    stats = run_ip_task([IN_SCOPE], ip_options(site), ctx, settings)
    assert stats["site"] == 1 and stats["partial"] is False
    assert stats["skipped_options"] == {"site_capture": "chromium not found"}
    assert stats["screenshot"] == 0


def test_a_chromium_that_fails_to_start_is_reported_by_reason(
    recon_db: Any, sites: list[RouteSite], tmp_path: Path
) -> None:
    broken = tmp_path / "chromium"
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(broken.stat().st_mode | stat.S_IXUSR)
    site = serve(sites, IN_SCOPE, {"/": page(BLUE)})
    stats = run_ip_task(
        [IN_SCOPE], ip_options(site), context(recon_db), CaptureSettings(chromium=str(broken))
    )
    assert stats["skipped_options"] == {"site_capture": "chromium failed to start: it exited with code 3"}
    assert stats["site"] == 1 and stats["partial"] is False


def test_site_capture_without_site_identify_says_so(recon_db: Any, sites: list[RouteSite]) -> None:
    site = serve(sites, IN_SCOPE, {"/": page(BLUE)})
    options = {**ip_options(site), "site_identify": False}
    stats = run_ip_task([IN_SCOPE], options, context(recon_db), CaptureSettings(chromium=CHROMIUM))
    assert stats["skipped_options"] == {"site_capture": "needs site_identify"}
