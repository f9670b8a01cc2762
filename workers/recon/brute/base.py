"""The brute plugin interface: what a plugin is, what it finds, and the probe-then-attempt loop.

A plugin tries default credentials against one service. It is named by ARL's ``plugin_name`` (the
file name of its npoc plugin, e.g. ``RedisBrute``), applies to some detected service names and, when
the service name says nothing, to some default ports, and answers one call: :meth:`BrutePlugin.check`.

Most plugins derive from :class:`ProbedPlugin`: first one probe that spends no credential and tells
whether the port speaks the protocol at all (and whether it lets anyone in without a password), then
one fresh connection per credential, sequentially, stopping at the first that works.
"""

from __future__ import annotations

import asyncio
import enum
import ssl
import struct
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from workers.recon.http import shared_ssl_context

UNINFORMATIVE_SERVICES = frozenset({"", "unknown", "tcpwrapped", "tls", "ssl"})
"""Detected service names that say nothing about the protocol: the port decides instead."""

MAX_CONSECUTIVE_ERRORS = 3
"""A service whose attempts fail this many times in a row with I/O errors is given up."""


class ProtocolError(Exception):
    """The peer answered something that is not the expected protocol."""


EXPECTED_ERRORS = (OSError, TimeoutError, ProtocolError, ssl.SSLError, EOFError, ValueError, struct.error)
"""What a probe or an attempt may raise when the peer is down, slow, or speaks something else."""


@dataclass(frozen=True)
class Credential:
    """A username and a password to try; either may be empty (Redis has no user, FTP ``anonymous``...)."""

    username: str
    password: str


@dataclass(frozen=True)
class Finding:
    """A credential that a service accepted, or a service that needs none.

    ``password`` is stored as found, in clear: it *is* the finding (the operator has to know which
    default to change). ``unauthenticated`` is true when the service let the probe in without any
    credential (then ``username`` and ``password`` are empty).
    """

    ip: str
    port: int
    service: str
    plugin_name: str
    username: str
    password: str
    unauthenticated: bool = False
    app_name: str = ""
    vul_name: str = ""

    def as_document(self) -> dict[str, Any]:
        """The finding as a result document (ARL's ``vuln`` item fields plus the plain ones)."""
        doc = asdict(self)
        doc["plg_name"] = self.plugin_name
        doc["plg_type"] = "brute"
        doc["target"] = f"{self.service or self.app_name.lower()}://{self.ip}:{self.port}"
        doc["verify_data"] = "unauthenticated" if self.unauthenticated else f"{self.username}:{self.password}"
        return doc


class Probe(enum.Enum):
    """What a probe learned about a port."""

    ABSENT = "absent"
    """Not this protocol (or not reachable): nothing to try."""
    AUTH_REQUIRED = "auth_required"
    """The protocol, asking for credentials: try them."""
    OPEN = "open"
    """The protocol, letting anyone in without credentials: a finding by itself."""


class BrutePlugin(ABC):
    """A weak-credential check for one kind of service.

    Subclasses set the class attributes: ``plugin_name`` (ARL's), ``app_name`` and ``vul_name``
    (ARL's labels), ``services`` (detected service names it applies to), ``ports`` (default ports,
    used when the detected name is uninformative) and ``credential_list`` (the name of its
    bundled credential file, without ``.txt``).
    """

    plugin_name: ClassVar[str]
    app_name: ClassVar[str]
    vul_name: ClassVar[str]
    services: ClassVar[frozenset[str]]
    ports: ClassVar[frozenset[int]]
    credential_list: ClassVar[str]

    def applies_to(self, service: str, port: int) -> bool:
        """Tell whether a port detected as ``service`` is one this plugin should check."""
        name = service.strip().lower()
        if name not in UNINFORMATIVE_SERVICES:
            return name in self.services
        return port in self.ports

    @abstractmethod
    async def check(
        self, ip: str, port: int, credentials: Iterable[Credential], timeout: float
    ) -> Finding | None:
        """Try ``credentials`` in order on ``ip:port``; the first accepted (or open access) is the finding.

        ``timeout`` bounds each connection (connect and exchange). Never raises for network or
        protocol trouble: a port that is closed, silent or speaks something else gives None.
        """

    def finding(self, ip: str, port: int, service: str, credential: Credential | None) -> Finding:
        """Build this plugin's finding; ``credential`` None means open access."""
        return Finding(
            ip=ip,
            port=port,
            service=service,
            plugin_name=self.plugin_name,
            username=credential.username if credential else "",
            password=credential.password if credential else "",
            unauthenticated=credential is None,
            app_name=self.app_name,
            vul_name=self.vul_name,
        )


class ProbedPlugin(BrutePlugin):
    """A plugin that probes once, then tries each credential on a fresh connection."""

    service_label: ClassVar[str]
    """The service name put in findings (e.g. ``redis``)."""

    def label_for(self, ip: str, port: int) -> str:
        """The service name put in a finding on ``ip:port``."""
        return self.service_label

    @abstractmethod
    async def probe(self, ip: str, port: int, timeout: float) -> Probe:
        """Find out, without spending a credential, whether the port speaks this protocol."""

    @abstractmethod
    async def attempt(self, ip: str, port: int, credential: Credential, timeout: float) -> bool:
        """Log in with ``credential``: True if accepted; may raise OSError, TimeoutError, ProtocolError."""

    async def check(
        self, ip: str, port: int, credentials: Iterable[Credential], timeout: float
    ) -> Finding | None:
        """Probe, then attempt the credentials one by one (see :class:`BrutePlugin`)."""
        try:
            async with asyncio.timeout(timeout):
                state = await self.probe(ip, port, timeout)
        except EXPECTED_ERRORS:
            return None
        if state is Probe.ABSENT:
            return None
        if state is Probe.OPEN:
            return self.finding(ip, port, self.label_for(ip, port), None)
        errors = 0
        for credential in credentials:
            try:
                async with asyncio.timeout(timeout):
                    accepted = await self.attempt(ip, port, credential, timeout)
            except EXPECTED_ERRORS:
                errors += 1
                if errors >= MAX_CONSECUTIVE_ERRORS:
                    return None
                continue
            errors = 0
            if accepted:
                return self.finding(ip, port, self.label_for(ip, port), credential)
        return None


def unverified_tls() -> ssl.SSLContext:
    """The recon workers' scanning TLS context: any certificate, old protocols too."""
    return shared_ssl_context()


@asynccontextmanager
async def connection(
    ip: str, port: int, tls: bool = False
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """Connect to ``ip:port`` (over TLS when ``tls``) and close the connection on the way out."""
    reader, writer = await asyncio.open_connection(ip, port, ssl=unverified_tls() if tls else None)
    try:
        yield reader, writer
    finally:
        writer.close()
        try:
            async with asyncio.timeout(0.5):
                await writer.wait_closed()
        except (OSError, TimeoutError, ssl.SSLError):
            pass
