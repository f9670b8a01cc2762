"""A loopback SQL Server (TDS) that checks SQL Server logins, for the weak-password tests.

It answers PRELOGIN with the encryption setting it was given (``NOT_SUP`` by default, ``REQ`` to
imitate a server that forces encryption), decodes LOGIN7's obfuscated password, and answers with
ENVCHANGE, INFO and LOGINACK tokens, or ERROR 18456 ("Login failed"), as SQL Server does.
"""

from __future__ import annotations

import socket
import socketserver
import struct

from tests.lab.authservers import CountingServer, Running


def _packet(payload: bytes) -> bytes:
    return struct.pack(">BBHHBB", 0x04, 0x01, 8 + len(payload), 0, 1, 0) + payload


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

    def handle(self) -> None:
        try:
            kind, _ = self._read()
            if kind != 0x12:
                return
            encryption = self.server.settings["encryption"]
            version, enc = bytes([15, 0, 0x10, 0x00, 0, 0]), bytes([encryption])
            head = struct.pack(">BHH", 0x00, 11, 6) + struct.pack(">BHH", 0x01, 17, 1) + b"\xff"
            self.request.sendall(_packet(head + version + enc))
            kind, login = self._read()
        except (EOFError, OSError, struct.error):
            return
        if kind != 0x10:
            return
        user_at, user_len, pass_at, pass_len = struct.unpack_from("<HHHH", login, 40)
        user = login[user_at : user_at + 2 * user_len].decode("utf-16-le")
        password = _deobfuscate(login[pass_at : pass_at + 2 * pass_len])
        self.server.count()
        if self.server.settings["accounts"].get(user) == password:
            envchange = _token(0xE3, b"\x01" + _b_varchar("master") + _b_varchar("master"))
            info = _token(
                0xAB,
                struct.pack("<IBB", 5701, 2, 0)
                + _us_varchar("Changed database context")
                + b"\x00\x00"
                + struct.pack("<I", 1),
            )
            ack = _token(
                0xAD,
                b"\x01"
                + bytes([0x04, 0x00, 0x00, 0x74])
                + _b_varchar("Microsoft SQL Server")
                + bytes([16, 0, 0x10, 0]),
            )
            self.request.sendall(_packet(envchange + info + ack + _done(0)))
        else:
            text = f"Login failed for user '{user}'."
            error = _token(
                0xAA,
                struct.pack("<IBB", 18456, 1, 14) + _us_varchar(text) + b"\x00\x00" + struct.pack("<I", 1),
            )
            self.request.sendall(_packet(error + _done(2)))


def start_mssql(accounts: dict[str, str], encryption: int = 2) -> Running:
    """A SQL Server with ``accounts``; ``encryption`` is PRELOGIN's answer (2 not supported, 3 required)."""
    return Running(CountingServer(_TDSHandler, accounts=accounts, encryption=encryption))
