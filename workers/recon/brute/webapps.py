"""Web application logins with their own forms: Grafana and ClickHouse's HTTP interface.

Their probes make one login with a random user name that cannot exist (as ARL's do) and look for
the application's own refusal; that request names no listed account, so it locks none out.
"""

from __future__ import annotations

import json
import secrets

from workers.recon.brute.base import Credential, Probe
from workers.recon.brute.web import HTTP_PORTS, HttpAnswer, HttpRequest, WebPlugin


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
