"""A loopback SQL Server (TDS) that checks SQL Server logins, for the weak-password tests.

It answers PRELOGIN with the encryption setting it was given, runs the TLS handshake inside
PRELOGIN packets when that setting asks for TLS, decodes LOGIN7's obfuscated password, and answers
with ENVCHANGE, INFO and LOGINACK tokens, or ERROR 18456 ("Login failed"), as SQL Server does.
"""

from __future__ import annotations

import socket
import socketserver
import ssl
import struct

import trustme

from tests.lab.authservers import LOOPBACK, CountingServer, Running
from workers.recon.brute.mssql import ENCRYPT_NOT_SUP, ENCRYPT_ON, ENCRYPT_REQ


def _packet(payload: bytes, kind: int = 0x04) -> bytes:
    return struct.pack(">BBHHBB", kind, 0x01, 8 + len(payload), 0, 1, 0) + payload


def _us_varchar(text: str) -> bytes:
    return struct.pack("<H", len(text)) + text.encode("utf-16-le")


def _b_varchar(text: str) -> bytes:
    return bytes([len(text)]) + text.encode("utf-16-le")


def _token(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + struct.pack("<H", len(body)) + body


def _done(status: int) -> bytes:
    return b"\xfd" + struct.pack("<HHQ", status, 0, 0)


def _deobfuscate(data: bytes) -> str:
    return bytes((((b ^ 0xA5) << 4) & 0xF0) | ((b ^ 0xA5) >> 4) for b in data).decode("utf-16-le")


class _TDSHandler(socketserver.BaseRequestHandler):
    server: CountingServer

    def _read(self) -> tuple[int, bytes]:
        header = self.request.recv(8, socket.MSG_WAITALL)
        if len(header) < 8:
            raise EOFError
        kind, _, length = struct.unpack(">BBH", header[:4])
        return kind, self.request.recv(length - 8, socket.MSG_WAITALL)

    def _handshake(self) -> ssl.SSLObject:
        """The server side of TLS inside PRELOGIN packets."""
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = self.server.settings["tls"].wrap_bio(incoming, outgoing, server_side=True)
        done = False
        while not done:
            _, payload = self._read()
            incoming.write(payload)
            try:
                tls.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                pass
            if outgoing.pending:
                self.request.sendall(_packet(outgoing.read(), kind=0x12))
        self._tls = (tls, incoming, outgoing)
        return tls

    def _read_encrypted(self) -> tuple[int, bytes]:
        tls, incoming, _ = self._tls
        plain = b""
        while len(plain) < 8 or len(plain) < struct.unpack_from(">H", plain, 2)[0]:
            header = self.request.recv(5, socket.MSG_WAITALL)
            if len(header) < 5:
                raise EOFError
            incoming.write(header + self.request.recv(int.from_bytes(header[3:5], "big"), socket.MSG_WAITALL))
            try:
                while chunk := tls.read(65536):
                    plain += chunk
            except ssl.SSLWantReadError:
                pass
        return plain[0], plain[8:]

    def handle(self) -> None:
        encryption: int = self.server.settings["encryption"]
        try:
            kind, _ = self._read()
            if kind != 0x12:
                return
            version, enc = bytes([15, 0, 0x10, 0x00, 0, 0]), bytes([encryption])
            head = struct.pack(">BHH", 0x00, 11, 6) + struct.pack(">BHH", 0x01, 17, 1) + b"\xff"
            self.request.sendall(_packet(head + version + enc))
            if encryption == ENCRYPT_NOT_SUP:
                kind, login = self._read()
            else:
                self._handshake()
                kind, login = self._read_encrypted()
                self.server.settings["tls_logins"].append(1)
        except (EOFError, OSError, struct.error, ssl.SSLError):
            return
        if kind != 0x10:
            return
        answer = _packet(self._answer(login))
        if encryption in (ENCRYPT_ON, ENCRYPT_REQ):
            tls, _, outgoing = self._tls
            tls.write(answer)
            answer = outgoing.read()
        self.request.sendall(answer)

    def _answer(self, login: bytes) -> bytes:
        """LOGINACK (after ENVCHANGE and INFO) or ERROR 18456, as SQL Server answers LOGIN7."""
        user_at, user_len, pass_at, pass_len = struct.unpack_from("<HHHH", login, 40)
        user = login[user_at : user_at + 2 * user_len].decode("utf-16-le")
        password = _deobfuscate(login[pass_at : pass_at + 2 * pass_len])
        self.server.count()
        if self.server.settings["accounts"].get(user) != password:
            text = f"Login failed for user '{user}'."
            error_body = (
                struct.pack("<IBB", 18456, 1, 14) + _us_varchar(text) + b"\x00\x00" + struct.pack("<I", 1)
            )
            return _token(0xAA, error_body) + _done(2)
        envchange = _token(0xE3, b"\x01" + _b_varchar("master") + _b_varchar("master"))
        info_body = struct.pack("<IBB", 5701, 2, 0) + _us_varchar("Changed database context") + b"\x00\x00"
        info = _token(0xAB, info_body + struct.pack("<I", 1))
        version = bytes([0x04, 0x00, 0x00, 0x74])
        ack = _token(0xAD, b"\x01" + version + _b_varchar("Microsoft SQL Server") + bytes([16, 0, 0x10, 0]))
        return envchange + info + ack + _done(0)


def start_mssql(accounts: dict[str, str], encryption: int = ENCRYPT_NOT_SUP) -> Running:
    """A SQL Server with ``accounts``; ``encryption`` is PRELOGIN's answer.

    ``ENCRYPT_NOT_SUP``: the login in clear; ``ENCRYPT_OFF``: TLS for the login only;
    ``ENCRYPT_REQ``: everything over TLS. TLS logins are recorded in ``settings["tls_logins"]``.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    trustme.CA().issue_cert(LOOPBACK).configure_cert(context)
    settings = {"accounts": accounts, "encryption": encryption, "tls": context, "tls_logins": []}
    return Running(CountingServer(_TDSHandler, **settings))
