"""Loopback services that check credentials (for the weak-password tests): Redis, FTP, an HTTP Basic manager.

Each server runs on 127.0.0.1 and an ephemeral port in a daemon thread, knows its accounts, and
counts every credential it was asked to verify (``attempts``), so tests can check the caps.
"""

from __future__ import annotations

import base64
import socket
import socketserver
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import trustme

LOOPBACK = "127.0.0.1"


class CountingServer(socketserver.ThreadingTCPServer):
    """A threaded TCP server with an attempt counter and the fake's settings."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, handler: type[socketserver.BaseRequestHandler], **settings: Any) -> None:
        self.settings = settings
        self.attempts = 0
        self.lock = threading.Lock()
        super().__init__((LOOPBACK, 0), handler)

    def count(self) -> None:
        """Record one credential verification."""
        with self.lock:
            self.attempts += 1

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients hang up mid-exchange; stay quiet."""


class Running:
    """A started fake: its port, attempt count, and stop()."""

    def __init__(self, server: CountingServer | ThreadingHTTPServer) -> None:
        self.server = server
        self.ip = LOOPBACK
        self.port = int(server.server_address[1])
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def settings(self) -> dict[str, Any]:
        """The fake's settings (and whatever it records in them)."""
        return dict(getattr(self.server, "settings", {}))

    @property
    def attempts(self) -> int:
        """How many credentials the fake verified."""
        return int(getattr(self.server, "attempts", 0))

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        self.server.shutdown()
        self.server.server_close()


def _read_resp(stream: Any) -> list[str] | None:
    """Read one RESP array of bulk strings (what clients send); None at EOF."""
    header = stream.readline()
    if not header:
        return None
    if not header.startswith(b"*"):
        return header.decode("latin-1").split()
    parts = []
    for _ in range(int(header[1:])):
        size = int(stream.readline()[1:])
        parts.append(stream.read(size + 2)[:-2].decode("utf-8"))
    return parts


class _RedisHandler(socketserver.StreamRequestHandler):
    server: CountingServer

    def handle(self) -> None:
        password = self.server.settings.get("password")
        authed = password is None
        while True:
            command = _read_resp(self.rfile)
            if not command:
                return
            name = command[0].upper()
            if name == "AUTH":
                self.server.count()
                if password is None:
                    reply = b"-ERR AUTH <password> called without any password configured\r\n"
                elif command[-1] == password and len(command) == 2:
                    authed, reply = True, b"+OK\r\n"
                else:
                    reply = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
            elif not authed:
                reply = b"-NOAUTH Authentication required.\r\n"
            elif name == "PING":
                reply = b"+PONG\r\n"
            else:
                reply = b"-ERR unknown command\r\n"
            self.wfile.write(reply)


def start_redis(password: str | None) -> Running:
    """A Redis-protocol server; ``password`` None means open to anyone."""
    return Running(CountingServer(_RedisHandler, password=password))


class _FTPHandler(socketserver.StreamRequestHandler):
    server: CountingServer

    def handle(self) -> None:
        accounts: dict[str, str] = self.server.settings["accounts"]
        self.wfile.write(b"220-lab FTP\r\n220 ready\r\n")
        user = None
        while line := self.rfile.readline():
            verb, _, arg = line.decode("utf-8").rstrip("\r\n").partition(" ")
            verb = verb.upper()
            if verb == "USER":
                user = arg
                self.wfile.write(b"331 Please specify the password.\r\n")
            elif verb == "PASS" and user is not None:
                self.server.count()
                ok = accounts.get(user) == arg or (user == "anonymous" and self.server.settings["anonymous"])
                self.wfile.write(b"230 Login successful.\r\n" if ok else b"530 Login incorrect.\r\n")
            elif verb == "QUIT":
                self.wfile.write(b"221 Goodbye.\r\n")
                return
            else:
                self.wfile.write(b"530 Please login with USER and PASS.\r\n")


def start_ftp(accounts: dict[str, str], anonymous: bool = False) -> Running:
    """An FTP server with ``accounts`` (user to password), optionally allowing anonymous login."""
    return Running(CountingServer(_FTPHandler, accounts=accounts, anonymous=anonymous))


class _ManagerHandler(BaseHTTPRequestHandler):
    server: _ManagerServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        if self.path != self.server.path:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        header = self.headers.get("Authorization", "")
        ok = False
        if header.startswith("Basic "):
            with self.server.lock:
                self.server.attempts += 1
            user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
            ok = self.server.accounts.get(user) == password
        body = b"<title>/manager</title>Tomcat Web Application Manager" if ok else b"401 Unauthorized"
        self.send_response(200 if ok else 401)
        if not ok:
            self.send_header("WWW-Authenticate", f'Basic realm="{self.server.realm}"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _ManagerServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, accounts: dict[str, str], realm: str, path: str) -> None:
        self.accounts = accounts
        self.realm = realm
        self.path = path
        self.attempts = 0
        self.lock = threading.Lock()
        super().__init__((LOOPBACK, 0), _ManagerHandler)


def start_manager(
    accounts: dict[str, str],
    realm: str = "Tomcat Manager Application",
    tls: bool = False,
    path: str = "/manager/html",
) -> Running:
    """An HTTP server whose ``path`` asks for Basic credentials, as Tomcat's manager (the default) does.

    With ``tls`` it serves HTTPS only, with a certificate of a throwaway CA.
    """
    server = _ManagerServer(accounts, realm, path)
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        trustme.CA().issue_cert(LOOPBACK).configure_cert(context)
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    return Running(server)


def silent_port() -> Running:
    """A server that accepts connections and never says anything (a wrong-protocol port)."""
    return Running(CountingServer(_SilentHandler))


class _SilentHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(5)
        try:
            while sock.recv(1024):
                pass
        except OSError:
            pass
