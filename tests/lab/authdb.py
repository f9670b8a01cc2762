"""A loopback PostgreSQL server that verifies logins the way the real one does, for the weak-password tests.

:func:`start_postgres` answers SSLRequest with ``N`` and checks MD5, cleartext or SCRAM-SHA-256
(server side, from the stored key: :class:`ScramServer`, shared with the MongoDB fake). It counts
verified credentials (``attempts``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import socketserver
import ssl
import struct
from typing import Any

import trustme

from tests.lab.authservers import CountingServer, Running

SCRAM_ITERATIONS = 4096


def _pg_message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


def _pg_auth(code: int, data: bytes = b"") -> bytes:
    return _pg_message(b"R", struct.pack("!I", code) + data)


PG_FAILED = _pg_message(b"E", b"SFATAL\x00C28P01\x00Mpassword authentication failed\x00\x00")


class _PostgresHandler(socketserver.StreamRequestHandler):
    server: CountingServer

    def _startup(self) -> dict[str, str] | None:
        while True:
            head = self.rfile.read(4)
            if len(head) < 4:
                return None
            body = self.rfile.read(struct.unpack("!I", head)[0] - 4)
            if struct.unpack_from("!I", body)[0] == 80877103:
                context: ssl.SSLContext | None = self.server.settings["tls"]
                self.wfile.write(b"S" if context else b"N")
                self.wfile.flush()
                if context:
                    self.connection = context.wrap_socket(self.connection, server_side=True)
                    self.rfile = self.connection.makefile("rb")
                    self.wfile = self.connection.makefile("wb", buffering=0)
                    self.server.settings["tls_sessions"].append(1)
                continue
            fields = body[4:].split(b"\x00")
            return {
                fields[i].decode(): fields[i + 1].decode() for i in range(0, len(fields) - 1, 2) if fields[i]
            }

    def _password_message(self) -> bytes:
        kind = self.rfile.read(1)
        if kind != b"p":
            raise EOFError
        return self.rfile.read(struct.unpack("!I", self.rfile.read(4))[0] - 4)

    def handle(self) -> None:
        params = self._startup()
        if params is None:
            return
        user = params.get("user", "")
        password = self.server.settings["accounts"].get(user)
        method = self.server.settings["method"]
        try:
            if method == "scram":
                ok, final = self._scram(password)
            else:
                ok, final = self._simple(method, user, password), b""
        except (EOFError, ValueError, KeyError, struct.error):
            return
        if ok:
            self.wfile.write(final + _pg_auth(0) + _pg_message(b"Z", b"I"))
        else:
            self.wfile.write(PG_FAILED)

    def _simple(self, method: str, user: str, password: str | None) -> bool:
        salt = os.urandom(4)
        self.wfile.write(_pg_auth(5, salt) if method == "md5" else _pg_auth(3))
        answer = self._password_message().rstrip(b"\x00").decode()
        self.server.count()
        if password is None:
            return False
        if method == "md5":
            inner = hashlib.md5((password + user).encode(), usedforsecurity=False).hexdigest()
            return answer == "md5" + hashlib.md5(inner.encode() + salt, usedforsecurity=False).hexdigest()
        return answer == password

    def _scram(self, password: str | None) -> tuple[bool, bytes]:
        self.wfile.write(_pg_auth(10, b"SCRAM-SHA-256\x00\x00"))
        body = self._password_message()
        mechanism, _, rest = body.partition(b"\x00")
        if mechanism != b"SCRAM-SHA-256":
            return False, b""
        server = ScramServer(password, "sha256")
        self.wfile.write(_pg_auth(11, server.first(rest[4:].decode()).encode()))
        final = self._password_message().decode()
        self.server.count()
        verifier = server.verify(final)
        return (True, _pg_auth(12, verifier.encode())) if verifier else (False, b"")


class ScramServer:
    """The server side of one SCRAM conversation, checking the proof from the stored key as servers do."""

    def __init__(self, password: str | None, hash_name: str) -> None:
        self.password = password
        self.hash_name = hash_name
        self.salt = os.urandom(16)
        self._first_bare = ""
        self._server_first = ""

    def _hmac(self, key: bytes, data: bytes) -> bytes:
        return hmac.new(key, data, self.hash_name).digest()

    def first(self, client_first: str) -> str:
        """The server-first-message for the client's first message."""
        self._first_bare = client_first.split(",", 2)[2]
        client_nonce = dict(p.split("=", 1) for p in self._first_bare.split(","))["r"]
        encoded_salt = base64.b64encode(self.salt).decode()
        self._server_first = (
            f"r={client_nonce}{secrets.token_urlsafe(12)},s={encoded_salt},i={SCRAM_ITERATIONS}"
        )
        return self._server_first

    def verify(self, client_final: str) -> str | None:
        """The server-final-message (``v=...``) when the proof is right, else None."""
        without_proof, _, proof = client_final.rpartition(",p=")
        secret = (self.password or secrets.token_hex(8)).encode()
        salted = hashlib.pbkdf2_hmac(self.hash_name, secret, self.salt, SCRAM_ITERATIONS)
        stored_key = hashlib.new(self.hash_name, self._hmac(salted, b"Client Key")).digest()
        auth_message = f"{self._first_bare},{self._server_first},{without_proof}".encode()
        signature = self._hmac(stored_key, auth_message)
        client_key = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature, strict=False))
        if self.password is None or hashlib.new(self.hash_name, client_key).digest() != stored_key:
            return None
        server_signature = self._hmac(self._hmac(salted, b"Server Key"), auth_message)
        return "v=" + base64.b64encode(server_signature).decode()


def start_postgres(accounts: dict[str, str], method: str = "md5", tls: bool = False) -> Running:
    """A PostgreSQL server with ``accounts``; ``method`` is ``md5``, ``password`` (cleartext) or ``scram``.

    With ``tls`` it accepts SSLRequest (a throwaway CA's certificate) and records each TLS session
    in ``server.settings["tls_sessions"]``.
    """
    context = None
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        trustme.CA().issue_cert("127.0.0.1").configure_cert(context)
    settings: dict[str, Any] = {"accounts": accounts, "method": method, "tls": context, "tls_sessions": []}
    return Running(CountingServer(_PostgresHandler, **settings))
