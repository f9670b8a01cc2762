"""Lab endpoints for virtual-host discovery: named vhosts behind IPs whose default site echoes the Host.

:func:`start_vhost_lab` starts an HTTP endpoint and an HTTPS one (trustme certificate for
``*.corp.test``) on :data:`VHOST_IP`, and a second HTTP endpoint on :data:`MIRROR_IP` serving the
same vhosts (a CDN-like twin). The ground truth is in :data:`HTTP_VHOSTS`, :data:`HTTPS_VHOSTS`
and :data:`DECOYS` (names that must not be reported, each for its own reason).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import trustme

from tests.lab.hostweb import HostWeb, Page

VHOST_IP = "127.88.7.2"
MIRROR_IP = "127.88.7.4"
FILLER = "<p>" + "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 6 + "</p>"


def _page(title: str, text: str, *, echo: bool = False) -> Page:
    return Page(
        f"<html><head><title>{title}</title></head><body><h1>{title}</h1><p>{text}</p>{FILLER}</body></html>",
        echo=echo,
    )


DEFAULT = _page("Welcome to {host}", "This is the default site of this server for {host}.", echo=True)
ADMIN = _page("Corp Admin Console", "Sign in to manage users, groups, audit logs and settings.")
INTRANET = Page(
    "<html><head><title>Intranet Portal</title></head><body><ul>"
    + "".join(f"<li><a href='/news/{i}'>Company news item {i}</a></li>" for i in range(30))
    + "</ul></body></html>"
)
SECURE = _page("Secure Files", "Upload and share files with your team over HTTPS only.")

HTTP_VHOSTS = {"admin.corp.test": "Corp Admin Console", "intranet.corp.test": "Intranet Portal"}
"""Names the HTTP endpoint serves as sites of their own, with their titles."""
HTTPS_VHOSTS = {"secure.corp.test": "Secure Files"}
"""Names only the HTTPS endpoint serves."""
DECOYS = {
    "www.corp.test": "serves the default page (an alias)",
    "ghost.corp.test": "unknown to the server (default page, Host echoed)",
    "api.corp.test": "answers 404",
    "tiny.corp.test": "answers a page under 150 bytes",
    "blob.corp.test": "answers a binary download",
}
OUT_OF_SCOPE = "admin.outside.test"
"""Served as a vhost too, but outside the tests' scope: never to be requested."""
NAMES = [*HTTP_VHOSTS, *HTTPS_VHOSTS, *DECOYS, OUT_OF_SCOPE]


def routes() -> dict[str, dict[str, Page]]:
    """The host routes shared by the endpoints (HTTPS adds :data:`HTTPS_VHOSTS`)."""
    return {
        "*": {"/": DEFAULT},
        "www.corp.test": {"/": DEFAULT},
        "admin.corp.test": {"/": ADMIN},
        "intranet.corp.test": {"/": INTRANET},
        "api.corp.test": {},
        "tiny.corp.test": {"/": Page("<html><title>Tiny</title>ok</html>")},
        "blob.corp.test": {
            "/": Page(b"\x00\x01" * 400, headers={"Content-Type": "application/octet-stream"})
        },
        OUT_OF_SCOPE: {"/": _page("Outside Admin", "not ours")},
    }


@dataclass
class VhostLab:
    """The running endpoints."""

    http: HostWeb
    https: HostWeb
    mirror: HostWeb

    def stop(self) -> None:
        """Stop every endpoint."""
        for web in (self.http, self.https, self.mirror):
            web.stop()


def _tls() -> ssl.SSLContext:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("*.corp.test", "corp.test", VHOST_IP).configure_cert(context)
    return context


def start_vhost_lab(delay: float = 0.0) -> VhostLab:
    """Start the three endpoints (each answer delayed by ``delay`` seconds)."""
    secure_routes = {**routes(), "secure.corp.test": {"/": SECURE}}
    return VhostLab(
        http=HostWeb(VHOST_IP, routes(), delay=delay).start(),
        https=HostWeb(VHOST_IP, secure_routes, tls=_tls(), delay=delay).start(),
        mirror=HostWeb(MIRROR_IP, routes(), delay=delay).start(),
    )
