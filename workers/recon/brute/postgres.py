"""PostgreSQLBrute: the protocol v3 startup with cleartext, MD5 and SCRAM-SHA-256 authentication.

The probe is an SSLRequest: a PostgreSQL server answers it with one byte, ``S`` or ``N``, and spends
no authentication on it. When the server offers TLS, the logins go over TLS (as libpq's ``prefer``).
Authentication succeeds at AuthenticationOk, which the server sends before it even looks for the
database, so a missing database does not hide a valid password.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct

from workers.recon.brute.base import Credential, Probe, ProbedPlugin, ProtocolError, unverified_tls
from workers.recon.brute.scram import ScramClient, ScramError

PROTOCOL_V3 = 196608
SSL_REQUEST = struct.pack("!II", 8, 80877103)
MAX_MESSAGE = 1 << 16
AUTH_OK, AUTH_CLEARTEXT, AUTH_MD5, AUTH_SASL, AUTH_SASL_CONTINUE, AUTH_SASL_FINAL = 0, 3, 5, 10, 11, 12


def startup_message(user: str) -> bytes:
    """A StartupMessage for ``user`` (the database defaults to the user's name)."""
    body = struct.pack("!I", PROTOCOL_V3) + b"user\x00" + user.encode("utf-8") + b"\x00\x00"
    return struct.pack("!I", len(body) + 4) + body


def md5_password(user: str, password: str, salt: bytes) -> str:
    """``md5`` + md5hex(md5hex(password + user) + salt), the MD5 method's answer."""
    inner = hashlib.md5((password + user).encode("utf-8"), usedforsecurity=False).hexdigest()
    return "md5" + hashlib.md5(inner.encode("ascii") + salt, usedforsecurity=False).hexdigest()


def password_message(data: bytes) -> bytes:
    """A PasswordMessage (also used for the SASL responses) carrying ``data``."""
    return b"p" + struct.pack("!I", len(data) + 4) + data


async def read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """Read one backend message: its type byte and body."""
    kind = await reader.readexactly(1)
    (length,) = struct.unpack("!I", await reader.readexactly(4))
    if not 4 <= length <= MAX_MESSAGE or not kind.isalpha():
        raise ProtocolError("not a PostgreSQL message")
    return kind, await reader.readexactly(length - 4)


def error_code(body: bytes) -> str:
    """The SQLSTATE of an ErrorResponse body."""
    for field in body.split(b"\x00"):
        if field[:1] == b"C":
            return field[1:].decode("latin-1")
    return ""


async def _open(ip: str, port: int, tls: bool) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect, upgrading to TLS through an SSLRequest when ``tls``."""
    reader, writer = await asyncio.open_connection(ip, port)
    if tls:
        writer.write(SSL_REQUEST)
        await writer.drain()
        if await reader.readexactly(1) != b"S":
            writer.close()
            raise ProtocolError("server withdrew TLS")
        await writer.start_tls(unverified_tls())
    return reader, writer


class PostgreSQLBrute(ProbedPlugin):
    """PostgreSQL: one startup per credential, answering whichever password method the server asks for."""

    plugin_name = "PostgreSQLBrute"
    app_name = "postgresql"
    vul_name = "PostgreSQL 弱口令"
    services = frozenset({"postgresql", "postgres", "psql"})
    ports = frozenset({5432})
    credential_list = "postgresql"
    service_label = "postgresql"

    def __init__(self) -> None:
        self._tls: dict[tuple[str, int], bool] = {}

    async def probe(self, ip: str, port: int, timeout: float) -> Probe:
        """SSLRequest: ``S`` or ``N`` is PostgreSQL (and tells whether to use TLS)."""
        reader, writer = await asyncio.open_connection(ip, port)
        try:
            writer.write(SSL_REQUEST)
            await writer.drain()
            answer = await reader.readexactly(1)
        finally:
            writer.close()
        if answer not in (b"S", b"N"):
            return Probe.ABSENT
        self._tls[(ip, port)] = answer == b"S"
        return Probe.AUTH_REQUIRED

    async def attempt(self, ip: str, port: int, credential: Credential, timeout: float) -> bool:
        """One startup and authentication exchange; True at AuthenticationOk."""
        reader, writer = await _open(ip, port, self._tls.get((ip, port), False))
        try:
            writer.write(startup_message(credential.username))
            await writer.drain()
            return await self._authenticate(reader, writer, credential)
        finally:
            writer.close()

    async def _authenticate(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, credential: Credential
    ) -> bool:
        """Answer authentication requests until AuthenticationOk (True) or an error (False)."""
        scram: ScramClient | None = None
        for _ in range(6):
            kind, body = await read_message(reader)
            if kind == b"E":
                return False
            if kind != b"R" or len(body) < 4:
                raise ProtocolError("unexpected PostgreSQL message during authentication")
            (code,) = struct.unpack_from("!I", body)
            if code == AUTH_OK:
                return True
            if code == AUTH_CLEARTEXT:
                reply = credential.password.encode("utf-8") + b"\x00"
            elif code == AUTH_MD5:
                reply = md5_password(credential.username, credential.password, body[4:8]).encode() + b"\x00"
            elif code == AUTH_SASL:
                if b"SCRAM-SHA-256\x00" not in body[4:]:
                    raise ProtocolError("no supported SASL mechanism")
                scram = ScramClient(credential.password)
                first = scram.first().encode()
                reply = b"SCRAM-SHA-256\x00" + struct.pack("!I", len(first)) + first
            elif code == AUTH_SASL_CONTINUE and scram is not None:
                try:
                    reply = scram.final(body[4:].decode("utf-8")).encode()
                except (ScramError, UnicodeDecodeError) as exc:
                    raise ProtocolError(str(exc)) from exc
            elif code == AUTH_SASL_FINAL and scram is not None:
                if not scram.verify(body[4:].decode("utf-8", "replace")):
                    raise ProtocolError("server SCRAM signature mismatch")
                continue
            else:
                raise ProtocolError(f"unsupported PostgreSQL authentication request {code}")
            writer.write(password_message(reply))
            await writer.drain()
        raise ProtocolError("authentication did not finish")
