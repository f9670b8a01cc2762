"""Loopback imitations of web applications' login endpoints (Grafana, ClickHouse, Nacos, APISIX, Druid,
Jenkins).

Each answers like the real application does, for a stranger, a wrong password and a valid login,
and counts the logins it checked (the probe's random-user login included).
"""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from tests.lab.authservers import LOOPBACK, Running

JENKINS_JSON = b'{"_class":"hudson.model.Hudson","mode":"NORMAL","nodeDescription":"the Jenkins controller"}'
JENKINS_REFUSAL = (
    b"<html><head><meta http-equiv='refresh' content='1;url=/login'/></head>"
    b"<body>\n\nAuthentication required\n<!--\n-->\n</body></html>"
)
ROUTES = {
    ("nacos", "/nacos/v1/auth/users/login"),
    ("apisix", "/apisix/admin/user/login"),
    ("druid", "/druid/submitLogin"),
}


class _AppServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, app: str, accounts: dict[str, str]) -> None:
        self.app = app
        self.accounts = accounts
        self.attempts = 0
        self.lock = threading.Lock()
        super().__init__((LOOPBACK, 0), _AppHandler)

    def check(self, user: str, password: str) -> bool:
        """Count and verify one login."""
        with self.lock:
            self.attempts += 1
        return self.accounts.get(user) == password


class _AppHandler(BaseHTTPRequestHandler):
    server: _AppServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def _answer(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.server.app == "jenkins" and self.path == "/api/json":
            self._jenkins()
        elif self.server.app == "nacos" and self.path == "/nacos/":
            self._answer(200, b"<html><head><title>Nacos</title></head></html>", "text/html")
        else:
            self._answer(200, b"<html><title>Home</title></html>", "text/html")

    def _jenkins(self) -> None:
        header = self.headers.get("Authorization", "")
        ok = not self.server.accounts
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            ok = self.server.check(user, password)
        if ok:
            self._answer(200, JENKINS_JSON)
        else:
            page = JENKINS_REFUSAL
            self._answer(403, page, "text/html")

    def _form(self, body: bytes) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(body.decode()).items()}

    def _nacos(self, body: bytes) -> None:
        form = self._form(body)
        if self.server.check(form.get("username", ""), form.get("password", "")):
            self._answer(
                200, b'{"accessToken":"eyJhbGciOiJIUzI1NiJ9.e30.x","tokenTtl":18000,"globalAdmin":true}'
            )
        else:
            self._answer(403, b"unknown user!", "text/plain")

    def _apisix(self, body: bytes) -> None:
        form = json.loads(body or b"{}")
        if "username" not in form:
            reply: dict[str, Any] = {"code": 10004, "message": "invalid request", "data": None}
        elif self.server.check(form["username"], form.get("password", "")):
            reply = {"code": 0, "message": "", "data": {"token": "eyJhbGciOiJIUzI1NiJ9.e30.x"}}
        else:
            reply = {"code": 10001, "message": "username or password error", "data": None}
        self._answer(200, json.dumps(reply, separators=(",", ":")).encode())

    def _druid(self, body: bytes) -> None:
        form = self._form(body)
        if "loginUsername" not in form:
            self._answer(200, b"error", "text/plain")
            return
        ok = self.server.check(form["loginUsername"], form.get("loginPassword", ""))
        self._answer(200, b"success" if ok else b"error", "text/plain")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.server.app == "grafana" and self.path == "/login":
            form = json.loads(body or b"{}")
            if self.server.check(form.get("user", ""), form.get("password", "")):
                self._answer(200, b'{"message":"Logged in","redirectUrl":"/"}')
            else:
                self._answer(401, b'{"message":"Invalid username or password"}')
        elif self.server.app == "clickhouse" and self.path == "/":
            user = self.headers.get("X-ClickHouse-User", "default")
            if not self.server.check(user, self.headers.get("X-ClickHouse-Key", "")):
                text = f"Code: 516. DB::Exception: {user}: Authentication failed. (AUTHENTICATION_FAILED)\n"
                self._answer(403, text.encode(), "text/plain")
            else:
                self._answer(400, b"Code: 62. DB::Exception: Empty query. (SYNTAX_ERROR)\n", "text/plain")
        elif (self.server.app, self.path) in ROUTES:
            getattr(self, "_" + self.server.app)(body)
        else:
            self._answer(404, b"<html><title>Not found</title></html>", "text/html")


def start_app(app: str, accounts: dict[str, str]) -> Running:
    """A ``grafana``, ``clickhouse``, ``nacos``, ``apisix``, ``druid`` or ``jenkins`` login with ``accounts``.

    A ``jenkins`` without accounts serves its API to anyone.
    """
    return Running(_AppServer(app, accounts))
