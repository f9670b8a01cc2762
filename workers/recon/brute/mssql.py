"""SQLServerBrute: Microsoft SQL Server's TDS login (PRELOGIN, then LOGIN7 with SQL Server authentication).

The client offers login-only encryption (ENCRYPT_OFF), as SQL Server's own clients do, and follows
the server's answer: no encryption (the login in clear), login-only (TLS for the LOGIN7 message,
the answer in clear) or full encryption. The TLS handshake travels inside TDS PRELOGIN packets,
then TLS records go on the connection as they are (TDS 7.x, TLS up to 1.2).
"""

from __future__ import annotations

import asyncio
import ssl
import struct
import warnings

from workers.recon.brute.base import Credential, Probe, ProbedPlugin, ProtocolError, connection

PRELOGIN, LOGIN7, TABULAR = 0x12, 0x10, 0x04
ENCRYPT_OFF, ENCRYPT_ON, ENCRYPT_NOT_SUP, ENCRYPT_REQ = 0, 1, 2, 3
TDS_74 = bytes([0x04, 0x00, 0x00, 0x74])
LOGIN_ACK, ERROR, DONE = 0xAD, 0xAA, 0xFD
MAX_RESPONSE = 1 << 20


def tds_packet(kind: int, payload: bytes, packet_id: int = 1) -> bytes:
    """One TDS packet (end of message) carrying ``payload``."""
    return struct.pack(">BBHHBB", kind, 0x01, 8 + len(payload), 0, packet_id, 0) + payload


async def read_message(reader: asyncio.StreamReader, first: bytes = b"") -> tuple[int, bytes]:
    """Read TDS packets up to the end-of-message one; returns the type and the joined payload.

    ``first`` is the message's first byte when the caller has already read it.
    """
    payload = b""
    while True:
        header = first + await reader.readexactly(8 - len(first))
        first = b""
        kind, status, length = struct.unpack(">BBH", header[:4])
        if length < 8 or kind not in (TABULAR, PRELOGIN) or len(payload) + length > MAX_RESPONSE:
            raise ProtocolError("not a TDS response")
        payload += await reader.readexactly(length - 8)
        if status & 0x01:
            return kind, payload


def split_message(buffer: bytes) -> tuple[int, bytes] | None:
    """The first whole TDS message in ``buffer`` (type and payload), or None while incomplete."""
    payload, pos = b"", 0
    while len(buffer) >= pos + 8:
        kind, status, length = struct.unpack_from(">BBH", buffer, pos)
        if length < 8:
            raise ProtocolError("bad TDS packet length")
        if len(buffer) < pos + length:
            return None
        payload += buffer[pos + 8 : pos + length]
        pos += length
        if status & 0x01:
            return kind, payload
    return None


def _tds_tls_context() -> ssl.SSLContext:
    """Any certificate, TLS 1.0 to 1.2 (TDS 7.x carries no TLS 1.3), old ciphers allowed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("ALL:@SECLEVEL=0")
    return context


class TdsTls:
    """TLS over a TDS connection: the handshake inside PRELOGIN packets, then TLS records as they are."""

    def __init__(self) -> None:
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = _tds_tls_context().wrap_bio(self.incoming, self.outgoing, server_side=False)

    async def handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Run the TLS handshake, each flight wrapped in a PRELOGIN packet."""
        for _ in range(16):
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                pass
            else:
                break
            writer.write(tds_packet(PRELOGIN, self.outgoing.read()))
            await writer.drain()
            _, payload = await read_message(reader)
            self.incoming.write(payload)
        else:
            raise ProtocolError("TLS handshake did not finish")
        if self.outgoing.pending:
            writer.write(tds_packet(PRELOGIN, self.outgoing.read()))
            await writer.drain()

    async def send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        """Send ``data`` encrypted."""
        self.tls.write(data)
        writer.write(self.outgoing.read())
        await writer.drain()

    async def read_message(self, reader: asyncio.StreamReader, first: bytes = b"") -> tuple[int, bytes]:
        """Read TLS records until they hold a whole TDS message."""
        plain = b""
        while len(plain) <= MAX_RESPONSE:
            header = first + await reader.readexactly(5 - len(first))
            first = b""
            self.incoming.write(header + await reader.readexactly(int.from_bytes(header[3:5], "big")))
            try:
                while chunk := self.tls.read(65536):
                    plain += chunk
            except ssl.SSLWantReadError:
                pass
            message = split_message(plain)
            if message is not None:
                return message
        raise ProtocolError("TDS response too long")


def prelogin_payload() -> bytes:
    """PRELOGIN options: version, login-only encryption offered, instance, thread id, no MARS."""
    options = [
        (0x00, bytes([9, 0, 0, 0, 0, 0])),
        (0x01, bytes([ENCRYPT_OFF])),
        (0x02, b"\x00"),
        (0x03, struct.pack(">I", 0)),
        (0x04, b"\x00"),
    ]
    offset = 5 * len(options) + 1
    head, data = b"", b""
    for token, value in options:
        head += struct.pack(">BHH", token, offset + len(data), len(value))
        data += value
    return head + b"\xff" + data


def prelogin_encryption(payload: bytes) -> int:
    """The ENCRYPTION option of a PRELOGIN response."""
    pos = 0
    while pos < len(payload) and payload[pos] != 0xFF:
        token, offset, length = struct.unpack_from(">BHH", payload, pos)
        if token == 0x01 and length >= 1 and offset < len(payload):
            return payload[offset]
        pos += 5
    raise ProtocolError("PRELOGIN response without ENCRYPTION")


def obfuscate(password: str) -> bytes:
    """LOGIN7's password encoding: UTF-16LE, each byte's nibbles swapped, then XOR 0xA5."""
    return bytes((((b << 4) & 0xF0) | (b >> 4)) ^ 0xA5 for b in password.encode("utf-16-le"))


def login7_payload(username: str, password: str, server: str) -> bytes:
    """A LOGIN7 message for SQL Server authentication (no database, language or SSPI)."""
    fields = [
        "recon-worker".encode("utf-16-le"),
        username.encode("utf-16-le"),
        obfuscate(password),
        "recon-worker".encode("utf-16-le"),
        server.encode("utf-16-le"),
        b"",
        "recon-worker".encode("utf-16-le"),
        b"",
        b"",
    ]
    fixed = 94
    offsets, data = b"", b""
    for value in fields:
        offsets += struct.pack("<HH", fixed + len(data), len(value) // 2)
        data += value
    tail = b"\x00" * 6 + struct.pack("<HH", fixed + len(data), 0) * 3 + struct.pack("<I", 0)
    head = (
        TDS_74
        + struct.pack("<IIII", 4096, 7, 0, 0)
        + bytes([0xE0, 0x03, 0x00, 0x00])
        + struct.pack("<iI", 0, 0x0409)
    )
    body = head + offsets + tail + data
    return struct.pack("<I", 4 + len(body)) + body


def login_accepted(payload: bytes) -> bool:
    """Walk the login response's tokens: True at LOGINACK, False at ERROR."""
    pos = 0
    while pos < len(payload):
        token = payload[pos]
        if token == LOGIN_ACK:
            return True
        if token == ERROR:
            return False
        if token == DONE:
            pos += 13
        elif token in (0xE3, 0xAB, 0xAE):
            pos += 3 + struct.unpack_from("<H", payload, pos + 1)[0]
        else:
            raise ProtocolError(f"unexpected TDS token {token:#x}")
    raise ProtocolError("login response without LOGINACK or ERROR")


class SQLServerBrute(ProbedPlugin):
    """SQL Server: PRELOGIN must answer; then one LOGIN7 per credential, encrypted as the server says."""

    plugin_name = "SQLServerBrute"
    app_name = "sqlserver"
    vul_name = "SQLServer 弱口令"
    services = frozenset({"ms-sql-s", "mssql", "sqlserver"})
    ports = frozenset({1433})
    credential_list = "sqlserver"
    service_label = "mssql"

    async def _prelogin(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
        writer.write(tds_packet(PRELOGIN, prelogin_payload()))
        await writer.drain()
        kind, payload = await read_message(reader)
        if kind != TABULAR:
            raise ProtocolError("not a PRELOGIN response")
        return prelogin_encryption(payload)

    async def probe(self, ip: str, port: int, timeout: float) -> Probe:
        """PRELOGIN."""
        async with connection(ip, port) as (reader, writer):
            await self._prelogin(reader, writer)
        return Probe.AUTH_REQUIRED

    async def attempt(self, ip: str, port: int, credential: Credential, timeout: float) -> bool:
        """PRELOGIN, the TLS handshake unless the server does without, then LOGIN7."""
        login = tds_packet(LOGIN7, login7_payload(credential.username, credential.password, ip))
        async with connection(ip, port) as (reader, writer):
            encryption = await self._prelogin(reader, writer)
            if encryption == ENCRYPT_NOT_SUP:
                writer.write(login)
                await writer.drain()
                _, payload = await read_message(reader)
                return login_accepted(payload)
            channel = TdsTls()
            await channel.handshake(reader, writer)
            await channel.send(writer, login)
            first = await reader.readexactly(1)
            if first[0] in (0x14, 0x15, 0x16, 0x17):
                _, payload = await channel.read_message(reader, first)
            else:
                _, payload = await read_message(reader, first)
        return login_accepted(payload)
