"""Lab TCP listeners that imitate non-HTTP services: SSH, Redis, MySQL, FTP and SMTP greetings."""

from __future__ import annotations

import socket
import socketserver
import struct
import threading

SSH_BANNER = b"SSH-2.0-OpenSSH_8.9p1 Ubuntu-3lab\r\n"
FTP_BANNER = b"220 (vsFTPd 3.0.5) lab FTP server ready\r\n"
SMTP_BANNER = b"220 mail.lab.test ESMTP Postfix\r\n"
MYSQL_VERSION = b"8.0.36-lab"


def mysql_greeting() -> bytes:
    """A MySQL protocol v10 handshake packet (enough for banner detection)."""
    payload = b"\x0a" + MYSQL_VERSION + b"\x00" + struct.pack("<I", 7) + b"abcdefgh\x00" + b"\xff\xf7"
    return struct.pack("<I", len(payload))[:3] + b"\x00" + payload


class _Handler(socketserver.BaseRequestHandler):
    server: _Listener

    def handle(self) -> None:
        kind = self.server.kind
        sock: socket.socket = self.request
        sock.settimeout(3)
        try:
            if kind == "ssh":
                sock.sendall(SSH_BANNER)
            elif kind == "ftp":
                sock.sendall(FTP_BANNER)
            elif kind == "smtp":
                sock.sendall(SMTP_BANNER)
            elif kind == "mysql":
                sock.sendall(mysql_greeting())
            elif kind == "redis":
                data = sock.recv(1024)
                if data.upper().startswith(b"PING"):
                    sock.sendall(b"+PONG\r\n")
                elif data:
                    command = data.split()[0].decode("latin-1", "replace").lower() if data.split() else ""
                    sock.sendall(f"-ERR unknown command '{command}'\r\n".encode())
            sock.recv(1024)
        except OSError:
            pass


class _Listener(socketserver.ThreadingTCPServer):
    daemon_threads = True
    request_queue_size = 512

    def __init__(self, address: tuple[str, int], kind: str) -> None:
        self.kind = kind
        super().__init__(address, _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        """Scanners reset connections; stay quiet."""


class LabListener:
    """A TCP service imitation (``kind``: ssh, ftp, smtp, mysql, redis) on ``ip`` and an ephemeral port."""

    def __init__(self, kind: str, ip: str) -> None:
        self.kind = kind
        self.ip = ip
        self._server = _Listener((ip, 0), kind)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"lab-{kind}", daemon=True)

    def start(self) -> LabListener:
        """Serve in a daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
