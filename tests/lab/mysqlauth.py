"""A loopback MySQL server that verifies logins the way mysqld does, for the weak-password tests.

It sends a protocol-10 handshake and checks, by ``mode``:

- ``native``: the ``mysql_native_password`` scramble, from the stored double SHA-1;
- ``switch``: offers ``caching_sha2_password``, then switches the client to native with a new nonce;
- ``sha2``: ``caching_sha2_password`` fast authentication, from the cached double SHA-256;
- ``sha2-full``: ``caching_sha2_password`` with nothing cached: full authentication, the client
  asking for the RSA public key and sending the password encrypted with it (RSA-OAEP).

It counts the credentials it verified (``attempts``).
"""

from __future__ import annotations

import hashlib
import os
import socket
import socketserver
import struct

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.lab.authservers import CountingServer, Running

OK_PACKET = b"\x00\x00\x00\x02\x00\x00\x00"
DENIED = b"\xff" + struct.pack("<H", 1045) + b"#28000Access denied for user"


def _nonce() -> bytes:
    """20 bytes in 1..127, as mysqld's scrambles (never NUL)."""
    return bytes(1 + b % 127 for b in os.urandom(20))


def _sha1(data: bytes) -> bytes:
    return hashlib.sha1(data, usedforsecurity=False).digest()


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=False))


def _packet(seq: int, payload: bytes) -> bytes:
    return struct.pack("<I", len(payload))[:3] + bytes([seq & 0xFF]) + payload


class _MySQLHandler(socketserver.BaseRequestHandler):
    server: CountingServer

    def _read(self) -> tuple[int, bytes]:
        header = self.request.recv(4, socket.MSG_WAITALL)
        if len(header) < 4:
            raise EOFError
        size = header[0] | header[1] << 8 | header[2] << 16
        data = self.request.recv(size, socket.MSG_WAITALL) if size else b""
        if len(data) < size:
            raise EOFError
        return header[3], data

    def _greet(self, nonce: bytes, method: bytes) -> None:
        greeting = (
            b"\x0a8.0.36-lab\x00"
            + struct.pack("<I", 11)
            + nonce[:8]
            + b"\x00"
            + struct.pack("<HBHHB", 0xF7FF, 33, 2, 0x000F, 21)
            + b"\x00" * 10
            + nonce[8:]
            + b"\x00"
            + method
            + b"\x00"
        )
        self.request.sendall(_packet(0, greeting))

    def handle(self) -> None:
        mode: str = self.server.settings["mode"]
        nonce = _nonce()
        self._greet(nonce, b"mysql_native_password" if mode == "native" else b"caching_sha2_password")
        try:
            seq, payload = self._read()
            end = payload.index(b"\x00", 32)
            user = payload[32:end].decode("utf-8")
            auth = payload[end + 2 : end + 2 + payload[end + 1]]
            password = self.server.settings["accounts"].get(user)
            if mode == "switch":
                nonce = _nonce()
                self.request.sendall(_packet(seq + 1, b"\xfemysql_native_password\x00" + nonce + b"\x00"))
                seq, auth = self._read()
            if mode in ("native", "switch"):
                ok = self._native_ok(password, nonce, auth)
            else:
                seq, ok = self._sha2(seq, password, nonce, auth, full=mode == "sha2-full")
        except (EOFError, ValueError, IndexError, OSError):
            return
        self.request.sendall(_packet(seq + 1, OK_PACKET if ok else DENIED))

    def _native_ok(self, password: str | None, nonce: bytes, auth: bytes) -> bool:
        self.server.count()
        if password is None:
            return False
        if not password:
            return auth == b""
        stored = _sha1(_sha1(password.encode()))
        return len(auth) == 20 and _sha1(_xor(auth, _sha1(nonce + stored))) == stored

    def _sha2(
        self, seq: int, password: str | None, nonce: bytes, auth: bytes, full: bool
    ) -> tuple[int, bool]:
        """caching_sha2_password: fast path from the cache, or full authentication over RSA."""
        if password is not None and not password:
            self.server.count()
            return seq, auth == b""
        if not full:
            self.server.count()
            if password is None:
                return seq, False
            cached = _sha256(_sha256(password.encode()))
            ok = len(auth) == 32 and _sha256(_xor(auth, _sha256(cached + nonce))) == cached
            if ok:
                self.request.sendall(_packet(seq + 1, b"\x01\x03"))
                return seq + 1, True
            return seq, False
        key: rsa.RSAPrivateKey = self.server.settings["key"]
        self.request.sendall(_packet(seq + 1, b"\x01\x04"))
        seq, request = self._read()
        if request != b"\x02":
            return seq, False
        pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.request.sendall(_packet(seq + 1, b"\x01" + pem))
        seq, cipher = self._read()
        self.server.count()
        oaep = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
        plain = _xor(key.decrypt(cipher, oaep), (nonce * 8)[: len(cipher)])
        return seq, password is not None and plain == password.encode() + b"\x00"


def start_mysql(accounts: dict[str, str], mode: str = "native") -> Running:
    """A MySQL server with ``accounts`` (user to password) authenticating by ``mode`` (see the module)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if mode == "sha2-full" else None
    return Running(CountingServer(_MySQLHandler, accounts=accounts, mode=mode, key=key))
