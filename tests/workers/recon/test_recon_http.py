"""The HTTP client, service detection and certificate fetch against small lab servers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from tests.lab import H1, Lab, LabListener, LabSite, Page, SiteSpec
from workers.recon.certs import fetch_certificate_der, parse_certificate
from workers.recon.http import HttpError, fetch
from workers.recon.portscan import PortInfo, scan_ports
from workers.recon.services import detect_service
from workers.recon.sites import Endpoint, follow


@pytest.fixture(scope="module")
def big_site() -> Iterator[LabSite]:
    spec = SiteSpec(
        "big",
        routes={
            "/big": Page(b"x" * 300_000),
            "/chunked-big": Page(b"y" * 300_000, chunked=True),
            "/loop": Page(b"", 302, {"Location": "/loop"}),
            "/away": Page(b"", 302, {"Location": "http://elsewhere.invalid/"}),
            "/head": Page(b"", 204),
        },
    )
    site = LabSite(spec, "127.88.0.4").start()
    yield site
    site.stop()


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_body_limits_for_length_and_chunked(big_site: LabSite) -> None:
    response = run(fetch(big_site.ip, big_site.port, tls=False, path="/big", max_body=1000))
    assert response.status == 200 and len(response.body) == 1000 and response.truncated
    response = run(fetch(big_site.ip, big_site.port, tls=False, path="/chunked-big", max_body=5000))
    assert len(response.body) == 5000 and response.truncated
    response = run(fetch(big_site.ip, big_site.port, tls=False, path="/chunked-big"))
    assert response.body == b"y" * 300_000 and not response.truncated
    assert run(fetch(big_site.ip, big_site.port, tls=False, path="/head")).body == b""


def test_redirect_limits_and_scope(big_site: LabSite) -> None:
    async def nowhere(host: str) -> str | None:
        return None

    endpoint = Endpoint("http", big_site.ip, big_site.ip, big_site.port)
    _, response, chain = run(follow(endpoint, "/loop", nowhere, 3.0))
    assert response.status == 302 and len(chain) == 3
    _, response, chain = run(follow(endpoint, "/away", nowhere, 3.0))
    assert response.status == 302 and chain == []


def test_non_http_peer_and_timeouts(lab: Lab) -> None:
    ssh = lab.listeners["ssh"]
    with pytest.raises(HttpError):
        run(fetch(ssh.ip, ssh.port, tls=False, timeout=2.0))
    with pytest.raises(HttpError):
        run(fetch(ssh.ip, ssh.port, tls=True, timeout=2.0))
    silent = socket.socket()
    silent.bind(("127.88.0.4", 0))
    silent.listen(8)
    try:
        with pytest.raises(HttpError, match="timeout"):
            run(fetch("127.88.0.4", silent.getsockname()[1], tls=False, timeout=0.3))
    finally:
        silent.close()


def test_https_accepts_self_signed_and_sends_sni(lab: Lab) -> None:
    secure = lab.sites["secure"]
    response = run(fetch(secure.ip, secure.port, tls=True, host="www.lab.test", path="/login"))
    assert response.status == 200 and response.title == "Sign in [Jenkins]"
    der = run(fetch_certificate_der(secure.ip, secure.port, "www.lab.test", 2.0))
    assert der is not None and "www.lab.test" in parse_certificate(der).sans
    assert run(fetch_certificate_der(lab.sites["main"].ip, lab.sites["main"].port, None, 2.0)) is None


def test_service_detection_of_each_lab_service(lab: Lab) -> None:
    async def detect_all() -> dict[str, str]:
        out = {}
        targets: list[tuple[str, LabSite | LabListener]] = [*lab.listeners.items(), *lab.sites.items()]
        for name, item in targets:
            out[name] = (await detect_service(item.ip, item.port, timeout=1.0)).service
        return out

    services = run(detect_all())
    assert services == {
        "ssh": "ssh",
        "redis": "redis",
        "mysql": "mysql",
        "ftp": "ftp",
        "smtp": "smtp",
        "main": "http",
        "secure": "https",
        "portal": "http",
        "grafana": "http",
    }


def test_scan_reports_only_open_ports_and_honours_host_timeout(lab: Lab) -> None:
    found: dict[str, dict[int, PortInfo]] = {}
    run(scan_ports([H1, "127.88.0.5"], lab.scan_ports, found, connect_timeout=0.5))
    assert {ip: set(p) for ip, p in found.items()} == {H1: lab.open_ports[H1]}

    progress: list[int] = []
    limited: dict[str, dict[int, PortInfo]] = {}
    run(
        scan_ports(
            ["127.88.0.5"],
            range(1, 5001),
            limited,
            host_timeout=0.0,
            on_progress=lambda done, total: progress.append(done),
        )
    )
    assert progress[-1] == 5000 and not limited
