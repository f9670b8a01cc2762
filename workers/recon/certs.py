"""TLS certificate collection: fetch the peer certificate of an endpoint and parse it with cryptography."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from workers.recon.http import shared_ssl_context


@dataclass
class CertInfo:
    """The fields of an X.509 certificate worth storing."""

    subject: str
    subject_cn: str
    issuer: str
    issuer_cn: str
    sans: list[str] = field(default_factory=list)
    ip_sans: list[str] = field(default_factory=list)
    not_before: str = ""
    not_after: str = ""
    serial: str = ""
    fingerprint_sha256: str = ""
    self_signed: bool = False

    def to_doc(self) -> dict[str, Any]:
        """The certificate as a plain dict for storage."""
        return asdict(self)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _common_name(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""


def parse_certificate(der: bytes) -> CertInfo:
    """Parse a DER certificate into :class:`CertInfo` (SANs lower-cased, dates in UTC ISO 8601)."""
    cert = x509.load_der_x509_certificate(der)
    sans: list[str] = []
    ip_sans: list[str] = []
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [name.lower().rstrip(".") for name in ext.get_values_for_type(x509.DNSName)]
        ip_sans = [str(ip) for ip in ext.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        pass
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        subject_cn=_common_name(cert.subject),
        issuer=cert.issuer.rfc4514_string(),
        issuer_cn=_common_name(cert.issuer),
        sans=sans,
        ip_sans=ip_sans,
        not_before=_iso(cert.not_valid_before_utc),
        not_after=_iso(cert.not_valid_after_utc),
        serial=format(cert.serial_number, "x"),
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
        self_signed=cert.subject == cert.issuer,
    )


async def fetch_certificate_der(ip: str, port: int, sni: str | None, timeout: float) -> bytes | None:
    """Complete a TLS handshake with ``ip:port`` (SNI ``sni``) and return the peer's DER certificate.

    Certificates are not verified. Returns None when the handshake fails or times out.
    """
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(
                ip, port, ssl=shared_ssl_context(), server_hostname=sni or ""
            )
    except (OSError, TimeoutError, ssl.SSLError, ValueError):
        return None
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        return ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    finally:
        writer.close()
