"""Weak-credential checks of web and mail logins against loopback servers speaking the real protocols."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.lab.authservers import Running, start_manager
from tests.lab.brutekit import STRONG, brute, only_finding
from tests.lab.mailauth import start_mail
from tests.lab.webauth import start_app
from workers.recon.brute import Credential, load_credentials


@pytest.fixture
def up() -> Iterator[Callable[[Running], Running]]:
    """Register a started fake so it is stopped after the test."""
    started: list[Running] = []

    def keep(server: Running) -> Running:
        started.append(server)
        return server

    yield keep
    for server in started:
        server.stop()


def test_tomcat_manager_basic_password_found(up: Callable[[Running], Running]) -> None:
    server = up(start_manager({"tomcat": "s3cret"}))
    report = brute([(server.ip, server.port, "http")], ["TomcatBrute"])
    assert only_finding(report) == ("TomcatBrute", "tomcat", "s3cret", False)
    assert report.findings[0].service == "http"


def test_tomcat_manager_over_https_found(up: Callable[[Running], Running]) -> None:
    server = up(start_manager({"admin": "admin"}, tls=True))
    report = brute([(server.ip, server.port, "https")], ["TomcatBrute"])
    assert only_finding(report) == ("TomcatBrute", "admin", "admin", False)
    assert report.findings[0].service == "https"


def test_tomcat_strong_password_not_found(up: Callable[[Running], Running]) -> None:
    server = up(start_manager({"tomcat": STRONG}))
    report = brute([(server.ip, server.port, "http")], ["TomcatBrute"], max_attempts_per_service=3)
    assert report.findings == [] and server.attempts == 3


def test_activemq_console_basic_password_found(up: Callable[[Running], Running]) -> None:
    server = up(start_manager({"admin": "admin"}, realm="ActiveMQRealm", path="/admin/"))
    report = brute([(server.ip, server.port, "http")], ["ActiveMQBrute", "TomcatBrute"])
    assert only_finding(report) == ("ActiveMQBrute", "admin", "admin", False)
    assert server.attempts == 1, "TomcatBrute's probe finds no Tomcat realm and tries nothing"


@pytest.mark.parametrize(
    ("plugin", "app", "weak"),
    [
        ("GrafanaBrute", "grafana", ("admin", "admin")),
        ("ClickhouseBrute", "clickhouse", ("default", "")),
        ("NacosBrute", "nacos", ("nacos", "nacos")),
        ("APISIXBrute", "apisix", ("admin", "admin")),
        ("AlibabaDruidBrute", "druid", ("druid", "druid")),
        ("JenkinsBrute", "jenkins", ("admin", "admin")),
    ],
)
def test_web_app_logins_planted_found_strong_not(
    up: Callable[[Running], Running], plugin: str, app: str, weak: tuple[str, str]
) -> None:
    found = up(start_app(app, dict([weak])))
    strong = up(start_app(app, {weak[0]: STRONG}))
    report = brute(
        [(found.ip, found.port, "http"), (strong.ip, strong.port, "http")],
        [plugin],
        max_attempts_per_service=4,
    )
    assert only_finding(report) == (plugin, *weak, False)
    assert report.findings[0].port == found.port
    probe_logins = 1 if plugin in ("GrafanaBrute", "ClickhouseBrute") else 0
    assert strong.attempts == probe_logins + 4, (
        "the probe's random-user login (if any), then the capped attempts"
    )


def test_jenkins_api_open_to_anyone_is_an_open_access_finding(up: Callable[[Running], Running]) -> None:
    server = up(start_app("jenkins", {}))
    report = brute([(server.ip, server.port, "http")], ["JenkinsBrute"])
    assert only_finding(report) == ("JenkinsBrute", "", "", True)
    assert report.attempts == 0


def test_web_app_plugins_ignore_each_others_applications(up: Callable[[Running], Running]) -> None:
    grafana, clickhouse = (
        up(start_app("grafana", {"admin": "admin"})),
        up(start_app("clickhouse", {"default": ""})),
    )
    on_clickhouse = brute([(clickhouse.ip, clickhouse.port, "http")], ["GrafanaBrute"])
    on_grafana = brute([(grafana.ip, grafana.port, "http")], ["ClickhouseBrute"])
    assert on_clickhouse.findings == on_grafana.findings == []
    assert on_clickhouse.attempts == on_grafana.attempts == 0
    assert grafana.attempts == clickhouse.attempts == 0


def test_basic_auth_that_is_not_tomcat_gets_no_attempt(up: Callable[[Running], Running]) -> None:
    server = up(start_manager({"tomcat": "tomcat"}, realm="Router admin"))
    report = brute([(server.ip, server.port, "http")], ["TomcatBrute"])
    assert report.findings == [] and server.attempts == 0


@pytest.mark.parametrize(
    ("plugin", "kind", "options"),
    [
        ("POP3Brute", "pop3", {}),
        ("IMAPBrute", "imap", {}),
        ("SMTPBrute", "smtp", {"mechanisms": ("PLAIN",)}),
        ("SMTPBrute", "smtp", {"mechanisms": ("LOGIN",)}),
        ("SMTPBrute", "smtp", {"starttls": True}),
    ],
)
def test_mail_logins_planted_found_strong_not(
    up: Callable[[Running], Running], plugin: str, kind: str, options: dict[str, Any]
) -> None:
    weak = up(start_mail(kind, {"test": "test"}, **options))
    strong = up(start_mail(kind, {"test": STRONG, "admin": STRONG}, **options))
    targets = [(weak.ip, weak.port, kind), (strong.ip, strong.port, kind)]
    report = brute(targets, [plugin], max_attempts_per_service=5)
    assert only_finding(report) == (plugin, "test", "test", False)
    assert report.findings[0].port == weak.port
    assert weak.attempts == load_credentials("mail").index(Credential("test", "test")) + 1
    assert strong.attempts == 5


def test_smtp_without_auth_gets_no_attempt(up: Callable[[Running], Running]) -> None:
    server = up(start_mail("smtp", {"test": "test"}, mechanisms=()))
    report = brute([(server.ip, server.port, "smtp")], ["SMTPBrute"])
    assert report.findings == [] and report.attempts == 0 and server.attempts == 0
