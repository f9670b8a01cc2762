"""Loopback POP3, IMAP and SMTP servers with accounts, for the weak-password tests.

The SMTP server offers AUTH with the mechanisms asked for, and with ``starttls`` only after the
client upgraded the connection (a throwaway CA's certificate). Each counts the logins it checked.
"""

from __future__ import annotations

import base64
import socketserver
import ssl
from typing import Any

import trustme

from tests.lab.authservers import LOOPBACK, CountingServer, Running


class _MailHandler(socketserver.StreamRequestHandler):
    server: CountingServer

    def _send(self, text: str) -> None:
        self.wfile.write(text.encode() + b"\r\n")
        self.wfile.flush()

    def _lines(self) -> Any:
        while raw := self.rfile.readline():
            yield raw.decode("utf-8").rstrip("\r\n")

    def _ok(self, user: str, password: str) -> bool:
        self.server.count()
        return self.server.settings["accounts"].get(user) == password

    def handle(self) -> None:
        getattr(self, "_" + self.server.settings["kind"])()

    def _pop3(self) -> None:
        self._send("+OK lab POP3 ready")
        user = ""
        for line in self._lines():
            verb, _, arg = line.partition(" ")
            if verb.upper() == "USER":
                user = arg
                self._send("+OK")
            elif verb.upper() == "PASS":
                self._send("+OK logged in" if self._ok(user, arg) else "-ERR [AUTH] Authentication failed.")
            else:
                self._send("+OK bye")
                return

    def _imap(self) -> None:
        self._send("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] lab IMAP ready")
        for line in self._lines():
            tag, _, rest = line.partition(" ")
            verb, _, args = rest.partition(" ")
            if verb.upper() == "LOGIN":
                user, password = (
                    p.replace('\\"', '"').replace("\\\\", "\\") for p in args[1:-1].split('" "', 1)
                )
                self._send("* CAPABILITY IMAP4rev1")
                ok = self._ok(user, password)
                self._send(
                    f"{tag} OK Logged in" if ok else f"{tag} NO [AUTHENTICATIONFAILED] Authentication failed."
                )
            else:
                self._send(f"{tag} OK bye")
                return

    def _ehlo(self, tls: bool) -> None:
        mechanisms = self.server.settings["mechanisms"]
        offer_auth = tls or not self.server.settings["starttls"]
        extensions = ["lab.test", "PIPELINING"]
        if offer_auth:
            extensions.append("AUTH " + " ".join(mechanisms))
        elif not tls:
            extensions.append("STARTTLS")
        for text in extensions[:-1]:
            self._send("250-" + text)
        self._send("250 " + extensions[-1])

    def _smtp(self) -> None:
        self._send("220 lab.test ESMTP")
        tls = False
        lines = self._lines()
        for line in lines:
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            if verb == "EHLO":
                self._ehlo(tls)
            elif verb == "STARTTLS" and not tls:
                self._send("220 Ready to start TLS")
                self._upgrade()
                tls = True
                lines = self._lines()
            elif verb == "AUTH" and arg.upper().startswith("PLAIN "):
                _, user, password = base64.b64decode(arg[6:]).decode().split("\x00")
                self._send(
                    "235 2.7.0 Authentication successful" if self._ok(user, password) else "535 5.7.8 failed"
                )
            elif verb == "AUTH" and arg.upper() == "LOGIN":
                self._send("334 VXNlcm5hbWU6")
                user = base64.b64decode(next(lines)).decode()
                self._send("334 UGFzc3dvcmQ6")
                password = base64.b64decode(next(lines)).decode()
                self._send(
                    "235 2.7.0 Authentication successful" if self._ok(user, password) else "535 5.7.8 failed"
                )
            elif verb == "QUIT":
                self._send("221 bye")
                return
            else:
                self._send("502 5.5.2 not implemented")

    def _upgrade(self) -> None:
        self.wfile.flush()
        context: ssl.SSLContext = self.server.settings["tls"]
        self.connection = context.wrap_socket(self.connection, server_side=True)
        self.rfile = self.connection.makefile("rb")
        self.wfile = self.connection.makefile("wb")


def _tls_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    trustme.CA().issue_cert(LOOPBACK).configure_cert(context)
    return context


def start_mail(
    kind: str,
    accounts: dict[str, str],
    mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN"),
    starttls: bool = False,
) -> Running:
    """A ``pop3``, ``imap`` or ``smtp`` server with ``accounts``; SMTP: AUTH ``mechanisms``, ``starttls``."""
    settings = {"kind": kind, "accounts": accounts, "mechanisms": list(mechanisms), "starttls": starttls}
    if starttls:
        settings["tls"] = _tls_context()
    return Running(CountingServer(_MailHandler, **settings))
