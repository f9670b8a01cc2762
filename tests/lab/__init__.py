"""A reconnaissance lab on loopback for tests and benchmarks.

:func:`start_lab` brings up a real DNS server (dnslib) serving ``lab.test`` and the wildcard zone
``wild.test``, HTTP and HTTPS sites (trustme certificates) and TCP service imitations on several
127.88.0.x addresses, all on ephemeral ports. The returned :class:`Lab` holds the ground truth:
what a correct scan must find, and nothing else.
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

import trustme

from tests.lab.dnszone import LabDNSServer, Zone
from tests.lab.mongo import MongoServer
from tests.lab.tcp import LabListener
from tests.lab.web import FAVICON, LabSite, Page, SiteSpec, closed_port

__all__ = ["FAVICON", "Lab", "LabDNSServer", "LabListener", "LabSite", "MongoServer", "Zone", "start_lab"]

H1, H2, H3 = "127.88.0.1", "127.88.0.2", "127.88.0.3"
WILDCARD_IP = "127.88.0.9"
V6_OUT_OF_SCOPE = "fd00::88"
GIT_CONFIG = b"[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n"
ENV_FILE = b"APP_ENV=production\nDB_PASSWORD=lab-secret\n"
MAIN_TITLE = "Lab Main Page"
SECURE_TITLE = "Sign in [Jenkins]"
GRAFANA_TITLE = "Grafana"
CERT_ONLY_NAME = "zq-hidden.lab.test"

LAB_NAMES: dict[str, dict[str, list[str]]] = {
    "lab.test": {"a": [H1]},
    "www.lab.test": {"a": [H1]},
    "api.lab.test": {"a": [H2]},
    "dev.lab.test": {"a": [H3]},
    "mail.lab.test": {"a": [H3], "aaaa": [V6_OUT_OF_SCOPE]},
    "vpn.lab.test": {"aaaa": [V6_OUT_OF_SCOPE]},
    "blog.lab.test": {"a": [H1], "cnames": ["cdn.lab.test", "origin.lab.test"]},
    "cdn.lab.test": {"a": [H1], "cnames": ["origin.lab.test"]},
    "origin.lab.test": {"a": [H1]},
    CERT_ONLY_NAME: {"a": [H2]},
}
"""Every name of lab.test a full domain task must report, with its records."""

WILD_NAMES: dict[str, dict[str, list[str]]] = {
    "wild.test": {"a": [H3]},
    "www.wild.test": {"a": [H1]},
    "portal.wild.test": {"a": [H2]},
}
"""Every real name of wild.test (random names answer with WILDCARD_IP and must be filtered)."""


def _zones() -> list[Zone]:
    lab = Zone("lab.test")
    for name, records in LAB_NAMES.items():
        label = "@" if name == "lab.test" else name.removesuffix(".lab.test")
        if records.get("cnames"):
            lab.add(label, "CNAME", records["cnames"][0])
            continue
        for ip in records.get("a", []):
            lab.add(label, "A", ip)
        for ip in records.get("aaaa", []):
            lab.add(label, "AAAA", ip)
    lab.records["cdn.lab.test"] = [("CNAME", "origin.lab.test")]
    wild = Zone("wild.test")
    wild.add("*", "A", WILDCARD_IP)
    for name, records in WILD_NAMES.items():
        label = "@" if name == "wild.test" else name.removesuffix(".wild.test")
        for ip in records["a"]:
            wild.add(label, "A", ip)
    return [lab, wild]


def _specs() -> dict[str, SiteSpec]:
    main = SiteSpec(
        "main",
        routes={
            "/": Page(
                f"<html><head><title>{MAIN_TITLE}</title><link rel='icon' href='/favicon.ico'></head>"
                "<body>welcome <a href='/wp-content/x.css'>style</a></body></html>".encode()
            ),
            "/favicon.ico": Page(FAVICON, headers={"Content-Type": "image/x-icon"}),
            "/.git/config": Page(GIT_CONFIG, headers={"Content-Type": "text/plain"}),
            "/.env": Page(ENV_FILE, headers={"Content-Type": "text/plain"}, chunked=True),
        },
        headers={"Server": "nginx/1.18.0", "X-Powered-By": "PHP/8.1.2"},
    )
    secure = SiteSpec(
        "secure",
        routes={
            "/": Page(b"", 302, {"Location": "/login"}),
            "/login": Page(f"<html><title>{SECURE_TITLE}</title><body>login</body></html>".encode()),
        },
        headers={"X-Jenkins": "2.401.3", "Server": "Jetty(10.0.13)"},
    )
    portal = SiteSpec("portal", headers={"Server": "Apache/2.4.41 (Ubuntu)"}, soft404=True)
    grafana = SiteSpec(
        "grafana",
        routes={"/": Page(f"<html><title>{GRAFANA_TITLE}</title><body class='grafana-app'></body>".encode())},
    )
    return {"main": main, "secure": secure, "portal": portal, "grafana": grafana}


EXPECTED_FINGERPRINTS = {
    "main": {"nginx", "PHP", "WordPress"},
    "secure": {"Jenkins"},
    "portal": {"Apache HTTP Server"},
    "grafana": {"Grafana"},
}
"""Fingerprints each lab site must get (at least)."""

EXPECTED_LEAKS = {"main": {"/.git/config", "/.env"}}
"""Leaked paths per site; every other site (including the soft-404 portal) must report none."""

LAB_LEAK_LIST = Path(__file__).with_name("leaks.yaml")
"""A short leak-path list (``recon.file_leak_list``) holding the planted leaks and decoys of every kind.

End-to-end runs probe it instead of the bundled list, whose every probe would be sent to every lab
site; the bundled list is tested on its own in tests/workers/recon/test_fileleak_content.py.
"""


@dataclass
class Lab:
    """A running lab and its ground truth."""

    dns: LabDNSServer
    sites: dict[str, LabSite]
    listeners: dict[str, LabListener]
    closed_ports: list[int]
    ca: trustme.CA
    stoppers: list[LabSite | LabListener | LabDNSServer] = field(default_factory=list)

    @property
    def resolvers(self) -> list[str]:
        """The ``resolvers`` list for a ReconContext."""
        return [self.dns.address]

    @property
    def open_ports(self) -> dict[str, set[int]]:
        """ip -> every port something listens on."""
        out: dict[str, set[int]] = {}
        servers: list[LabSite | LabListener] = [*self.sites.values(), *self.listeners.values()]
        for item in servers:
            out.setdefault(item.ip, set()).add(item.port)
        return out

    @property
    def scan_ports(self) -> list[int]:
        """The ``port_custom`` list for tests: every lab port plus a few closed ones."""
        return sorted({p for ports in self.open_ports.values() for p in ports} | set(self.closed_ports))

    def site_of(self, ip: str, port: int) -> str | None:
        """The lab site name listening on ``ip:port``, if any."""
        return next((name for name, s in self.sites.items() if (s.ip, s.port) == (ip, port)), None)

    def stop(self) -> None:
        """Stop every server (in parallel: each shutdown waits for its serve loop to notice)."""
        threads = [threading.Thread(target=item.stop) for item in self.stoppers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def start_lab() -> Lab:
    """Start the whole lab; call :meth:`Lab.stop` when done."""
    ca = trustme.CA()
    cert = ca.issue_cert(
        "www.lab.test", "lab.test", CERT_ONLY_NAME, "*.lab.test", "unresolvable.lab.test", H1
    )
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(tls)
    stoppers: list[LabSite | LabListener | LabDNSServer] = []
    dns = LabDNSServer(_zones()).start()
    stoppers.append(dns)
    specs = _specs()
    sites = {
        "main": LabSite(specs["main"], H1),
        "secure": LabSite(specs["secure"], H1, tls),
        "portal": LabSite(specs["portal"], H2),
        "grafana": LabSite(specs["grafana"], H3),
    }
    listeners = {
        "ssh": LabListener("ssh", H2),
        "redis": LabListener("redis", H3),
        "mysql": LabListener("mysql", H3),
        "ftp": LabListener("ftp", H2),
        "smtp": LabListener("smtp", H3),
    }
    servers: list[LabSite | LabListener] = [*sites.values(), *listeners.values()]
    for item in servers:
        item.start()
        stoppers.append(item)
    closed = [closed_port(H1), closed_port(H2), closed_port(H3)]
    return Lab(dns=dns, sites=sites, listeners=listeners, closed_ports=closed, ca=ca, stoppers=stoppers)
