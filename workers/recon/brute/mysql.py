"""MysqlBrute: the MySQL client handshake with ``mysql_native_password`` and ``caching_sha2_password``.

The server speaks first (a protocol-10 handshake with a 20-byte nonce); the client answers with a
HandshakeResponse41 carrying the password scrambled with that nonce. The server then sends OK,
ERR, or an AuthSwitchRequest naming another method and a new nonce. ``caching_sha2_password``'s
full authentication over a plain connection asks for the server's RSA key and sends the password
encrypted with it (RSA-OAEP), as the MySQL client does.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from workers.recon.brute.base import Credential, Probe, ProbedPlugin, ProtocolError, connection

NATIVE = "mysql_native_password"
CACHING_SHA2 = "caching_sha2_password"
CLIENT_CAPABILITIES = 0x0001 | 0x0004 | 0x0200 | 0x2000 | 0x8000 | 0x80000
"""LONG_PASSWORD, LONG_FLAG, PROTOCOL_41, TRANSACTIONS, SECURE_CONNECTION, PLUGIN_AUTH."""
MAX_PACKET = 1 << 24


def native_scramble(password: bytes, nonce: bytes) -> bytes:
    """``mysql_native_password``: SHA1(p) XOR SHA1(nonce + SHA1(SHA1(p))); empty for no password."""
    if not password:
        return b""
    stage1 = hashlib.sha1(password, usedforsecurity=False).digest()
    stage2 = hashlib.sha1(stage1, usedforsecurity=False).digest()
    mask = hashlib.sha1(nonce + stage2, usedforsecurity=False).digest()
    return bytes(a ^ b for a, b in zip(stage1, mask, strict=True))


def sha2_scramble(password: bytes, nonce: bytes) -> bytes:
    """``caching_sha2_password``: SHA256(p) XOR SHA256(SHA256(SHA256(p)) + nonce); empty for none."""
    if not password:
        return b""
    stage1 = hashlib.sha256(password).digest()
    stage2 = hashlib.sha256(stage1).digest()
    mask = hashlib.sha256(stage2 + nonce).digest()
    return bytes(a ^ b for a, b in zip(stage1, mask, strict=True))


def scramble_for(method: str, password: bytes, nonce: bytes) -> bytes:
    """The auth response of ``method``, or ProtocolError for a method this client does not speak."""
    if method == NATIVE:
        return native_scramble(password, nonce)
    if method == CACHING_SHA2:
        return sha2_scramble(password, nonce)
    raise ProtocolError(f"unsupported MySQL auth method {method!r}")


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read one packet: returns its sequence id and payload."""
    header = await reader.readexactly(4)
    length = header[0] | header[1] << 8 | header[2] << 16
    return header[3], await reader.readexactly(length)


def packet(sequence: int, payload: bytes) -> bytes:
    """Frame a payload as a packet with ``sequence``."""
    return struct.pack("<I", len(payload))[:3] + bytes([sequence & 0xFF]) + payload


def parse_handshake(payload: bytes) -> tuple[bytes, str]:
    """The nonce and the default auth method of a protocol-10 handshake; ProtocolError if it is not one."""
    if not payload or payload[0] != 0x0A:
        raise ProtocolError("not a MySQL handshake")
    end = payload.index(b"\x00", 1)
    pos = end + 1 + 4
    part1 = payload[pos : pos + 8]
    pos += 8 + 1
    if len(payload) < pos + 2:
        raise ProtocolError("short MySQL handshake")
    capabilities = struct.unpack_from("<H", payload, pos)[0]
    pos += 2
    method = NATIVE
    nonce = part1
    if len(payload) >= pos + 16:
        capabilities |= struct.unpack_from("<H", payload, pos + 3)[0] << 16
        data_len = payload[pos + 5]
        pos += 16
        if capabilities & 0x8000:
            take = max(13, data_len - 8)
            nonce = part1 + payload[pos : pos + take].rstrip(b"\x00")
            pos += take
        if capabilities & 0x80000 and pos < len(payload):
            method = payload[pos:].split(b"\x00", 1)[0].decode("latin-1") or NATIVE
    return nonce[:20], method


def handshake_response(username: str, auth: bytes, method: str) -> bytes:
    """A HandshakeResponse41 payload."""
    return (
        struct.pack("<IIB23x", CLIENT_CAPABILITIES, MAX_PACKET, 33)
        + username.encode("utf-8")
        + b"\x00"
        + bytes([len(auth)])
        + auth
        + method.encode("ascii")
        + b"\x00"
    )


async def _full_sha2_auth(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sequence: int, password: bytes, nonce: bytes
) -> tuple[int, bytes]:
    """Full ``caching_sha2_password`` auth in plain TCP: fetch the RSA key, send the password with it."""
    writer.write(packet(sequence + 1, b"\x02"))
    await writer.drain()
    sequence, payload = await read_packet(reader)
    if payload[:1] != b"\x01":
        return sequence, payload
    key = serialization.load_pem_public_key(payload[1:])
    if not isinstance(key, rsa.RSAPublicKey):
        raise ProtocolError("MySQL server key is not RSA")
    plain = password + b"\x00"
    masked = bytes(b ^ nonce[i % len(nonce)] for i, b in enumerate(plain))
    cipher = key.encrypt(
        masked,
        padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None),  # noqa: S303 (the protocol's)
    )
    writer.write(packet(sequence + 1, cipher))
    await writer.drain()
    return await read_packet(reader)


class MysqlBrute(ProbedPlugin):
    """MySQL and MariaDB: the handshake must parse; each credential is one login."""

    plugin_name = "MysqlBrute"
    app_name = "mysql"
    vul_name = "MySQL 弱口令"
    services = frozenset({"mysql", "mariadb"})
    ports = frozenset({3306})
    credential_list = "mysql"
    service_label = "mysql"

    async def probe(self, ip: str, port: int, timeout: float) -> Probe:
        """Read and parse the server's handshake (an ERR here means this host may not log in at all)."""
        async with connection(ip, port) as (reader, _):
            _, payload = await read_packet(reader)
        parse_handshake(payload)
        return Probe.AUTH_REQUIRED

    async def attempt(self, ip: str, port: int, credential: Credential, timeout: float) -> bool:
        """One login; True on an OK packet."""
        password = credential.password.encode("utf-8")
        async with connection(ip, port) as (reader, writer):
            sequence, payload = await read_packet(reader)
            nonce, method = parse_handshake(payload)
            if method not in (NATIVE, CACHING_SHA2):
                method = NATIVE
            writer.write(
                packet(
                    sequence + 1,
                    handshake_response(credential.username, scramble_for(method, password, nonce), method),
                )
            )
            await writer.drain()
            sequence, payload = await read_packet(reader)
            if payload[:1] == b"\xfe":
                name, _, data = payload[1:].partition(b"\x00")
                method = name.decode("latin-1")
                nonce = data.rstrip(b"\x00")[:20]
                writer.write(packet(sequence + 1, scramble_for(method, password, nonce)))
                await writer.drain()
                sequence, payload = await read_packet(reader)
            if method == CACHING_SHA2 and payload[:1] == b"\x01":
                if payload[1:2] == b"\x03":
                    sequence, payload = await read_packet(reader)
                elif payload[1:2] == b"\x04":
                    sequence, payload = await _full_sha2_auth(reader, writer, sequence, password, nonce)
        if payload[:1] == b"\x00":
            return True
        if payload[:1] == b"\xff":
            return False
        raise ProtocolError("unexpected MySQL authentication reply")
