"""Web application logins with their own forms: Grafana, ClickHouse's HTTP interface, Nacos, the APISIX
dashboard, Alibaba Druid's monitor and Jenkins' API.

Where a probe has to log in to recognise the application, it logs in as a random user name that
cannot exist (or with a malformed form, as ARL's do) and looks for the application's own refusal;
that request names no listed account, so it locks none out.
"""

from __future__ import annotations

import json
import secrets
from urllib.parse import urlencode

from workers.recon.brute.base import Credential, Probe
from workers.recon.brute.web import HTTP_PORTS, HttpAnswer, HttpRequest, WebPlugin, basic_authorization


def _random_user() -> str:
    """A user name that no application has."""
    return "recon-" + secrets.token_hex(6)


class GrafanaBrute(WebPlugin):
    """Grafana: ``POST /login`` (JSON); 401 "Invalid username or password" for strangers, 200 "Logged in"."""

    plugin_name = "GrafanaBrute"
    app_name = "Grafana"
    vul_name = "Grafana 弱口令"
    credential_list = "grafana"
    ports = HTTP_PORTS | {3000}

    def _login(self, username: str, password: str) -> HttpRequest:
        body = json.dumps({"user": username, "password": password}).encode()
        return HttpRequest(
            "POST", "/login", {"Content-Type": "application/json", "Accept": "application/json"}, body
        )

    def probe_request(self) -> HttpRequest:
        """A login as a random user."""
        return self._login(_random_user(), _random_user())

    def probe_result(self, answer: HttpAnswer) -> Probe:
        """Grafana's JSON refusal (not an HTML page)."""
        refused = answer.status == 401 and b"Invalid username or password" in answer.body
        return Probe.AUTH_REQUIRED if refused and b"<title" not in answer.body else Probe.ABSENT

    def login_request(self, credential: Credential) -> HttpRequest:
        """A login with the credential."""
        return self._login(credential.username, credential.password)

    def accepted(self, answer: HttpAnswer) -> bool:
        """200 with "Logged in"."""
        return answer.status == 200 and b"Logged in" in answer.body


class ClickhouseBrute(WebPlugin):
    """ClickHouse's HTTP interface: an empty query with ``X-ClickHouse-User``/``-Key``.

    Strangers get 403 "Authentication failed"; an accepted user gets to the query, which fails as
    empty: 400 with ``SYNTAX_ERROR``.
    """

    plugin_name = "ClickhouseBrute"
    app_name = "Clickhouse"
    vul_name = "Clickhouse 弱口令"
    credential_list = "clickhouse"
    services = WebPlugin.services | {"clickhouse"}
    ports = HTTP_PORTS | {8123}

    def _query(self, username: str, password: str) -> HttpRequest:
        return HttpRequest("POST", "/", {"X-ClickHouse-User": username, "X-ClickHouse-Key": password})

    def probe_request(self) -> HttpRequest:
        """An empty query as a random user."""
        return self._query(_random_user(), _random_user())

    def probe_result(self, answer: HttpAnswer) -> Probe:
        """ClickHouse's plain-text refusal."""
        refused = answer.status == 403 and b"Authentication failed" in answer.body
        return Probe.AUTH_REQUIRED if refused and b"<title" not in answer.body else Probe.ABSENT

    def login_request(self, credential: Credential) -> HttpRequest:
        """An empty query as the credential's user."""
        return self._query(credential.username, credential.password)

    def accepted(self, answer: HttpAnswer) -> bool:
        """400 ``SYNTAX_ERROR``: authenticated, then refused the empty query."""
        return answer.status == 400 and b"SYNTAX_ERROR" in answer.body


def _form(fields: dict[str, str]) -> tuple[dict[str, str], bytes]:
    """Headers and body of an urlencoded form."""
    return {"Content-Type": "application/x-www-form-urlencoded"}, urlencode(fields).encode()


class NacosBrute(WebPlugin):
    """Nacos: the console is titled "Nacos"; a login that returns an ``accessToken`` (a JWT) is accepted."""

    plugin_name = "NacosBrute"
    app_name = "Nacos"
    vul_name = "Nacos 弱口令"
    credential_list = "nacos"
    ports = HTTP_PORTS | {8848}

    def probe_request(self) -> HttpRequest:
        """GET the console."""
        return HttpRequest("GET", "/nacos/")

    def probe_result(self, answer: HttpAnswer) -> Probe:
        """The console's title."""
        return Probe.AUTH_REQUIRED if b"<title>Nacos</title>" in answer.body else Probe.ABSENT

    def login_request(self, credential: Credential) -> HttpRequest:
        """``POST /nacos/v1/auth/users/login`` with a form."""
        headers, body = _form({"username": credential.username, "password": credential.password})
        return HttpRequest("POST", "/nacos/v1/auth/users/login", headers, body)

    def accepted(self, answer: HttpAnswer) -> bool:
        """200, JSON (no markup) with an ``accessToken`` that is a JWT."""
        return answer.status == 200 and b"<" not in answer.body and b'"accessToken":"e' in answer.body


class APISIXBrute(WebPlugin):
    """APISIX dashboard: the login API answers code 10004 to a malformed login, code 0 and a token if good."""

    plugin_name = "APISIXBrute"
    app_name = "APISIX"
    vul_name = "APISIX 弱口令"
    credential_list = "apisix"
    ports = HTTP_PORTS | {9000}
    path = "/apisix/admin/user/login"

    def probe_request(self) -> HttpRequest:
        """A login without user fields."""
        return HttpRequest("POST", self.path, {"Content-Type": "application/json"}, b'{"test": 1}')

    def probe_result(self, answer: HttpAnswer) -> Probe:
        """The dashboard's "bad request" code."""
        return (
            Probe.AUTH_REQUIRED if answer.status == 200 and b'"code":10004' in answer.body else Probe.ABSENT
        )

    def login_request(self, credential: Credential) -> HttpRequest:
        """A JSON login."""
        body = json.dumps({"username": credential.username, "password": credential.password}).encode()
        return HttpRequest("POST", self.path, {"Content-Type": "application/json"}, body)

    def accepted(self, answer: HttpAnswer) -> bool:
        """Code 0 with a token."""
        return b'"code":0' in answer.body and b'"token"' in answer.body


class AlibabaDruidBrute(WebPlugin):
    """Alibaba Druid's monitor: ``/druid/submitLogin`` answers exactly ``error`` or ``success``."""

    plugin_name = "AlibabaDruidBrute"
    app_name = "Alibaba Druid"
    vul_name = "Alibaba Druid 弱口令"
    credential_list = "alibaba-druid"
    path = "/druid/submitLogin"

    def probe_request(self) -> HttpRequest:
        """A login without the form's fields."""
        return HttpRequest("POST", self.path, {"Content-Type": "application/x-www-form-urlencoded"}, b"test")

    def probe_result(self, answer: HttpAnswer) -> Probe:
        """The monitor's bare ``error``."""
        return Probe.AUTH_REQUIRED if answer.status == 200 and answer.body == b"error" else Probe.ABSENT

    def login_request(self, credential: Credential) -> HttpRequest:
        """The login form."""
        headers, body = _form({"loginUsername": credential.username, "loginPassword": credential.password})
        return HttpRequest("POST", self.path, headers, body)

    def accepted(self, answer: HttpAnswer) -> bool:
        """The bare ``success``."""
        return answer.status == 200 and answer.body == b"success"


class JenkinsBrute(WebPlugin):
    """Jenkins: ``/api/json`` answers strangers 403 "Authentication required" (a page without a title).

    Basic credentials that work get the instance's JSON. An instance that serves that JSON to anyone
    (``hudson.model.Hudson`` without credentials) is open access.
    """

    plugin_name = "JenkinsBrute"
    app_name = "Jenkins"
    vul_name = "Jenkins 弱口令"
    credential_list = "jenkins"

    def probe_request(self) -> HttpRequest:
        """GET the API without credentials."""
        return HttpRequest("GET", "/api/json")

    def probe_result(self, answer: HttpAnswer) -> Probe:
        """Jenkins' refusal, or its JSON served to anyone."""
        if answer.status == 200 and b'"_class":"hudson.model.Hudson"' in answer.body:
            return Probe.OPEN
        refused = answer.status == 403 and b"Authentication required" in answer.body
        return Probe.AUTH_REQUIRED if refused and b"<title" not in answer.body else Probe.ABSENT

    def login_request(self, credential: Credential) -> HttpRequest:
        """GET the API with Basic credentials."""
        return HttpRequest("GET", "/api/json", {"Authorization": basic_authorization(credential)})

    def accepted(self, answer: HttpAnswer) -> bool:
        """200 with Jenkins' JSON."""
        return (
            answer.status == 200
            and answer.body.lstrip().startswith(b"{")
            and b"hudson" in answer.body.lower()
        )
