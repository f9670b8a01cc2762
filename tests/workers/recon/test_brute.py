"""Weak-credential checks (ARL's brute_config) against loopback servers speaking the real protocols."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.lab import MongoServer
from tests.lab.authdb import start_postgres
from tests.lab.authservers import Running, silent_port, start_ftp, start_manager, start_redis
from tests.lab.brutekit import STRONG, brute, only_finding
from tests.lab.mongoauth import start_mongo_auth
from tests.lab.mssqlauth import start_mssql
from tests.lab.mysqlauth import start_mysql
from tests.lab.sshlab import SSHLab
from workers.recon.brute import (
    UNSUPPORTED,
    BrutePlugin,
    BruteReport,
    Credential,
    Finding,
    enabled_plugins,
    load_credentials,
    parse_credentials,
    plugin_names,
    plugins_for_options,
    registry,
    run_brute,
    targets_from_ports,
)
from workers.recon.brute.mssql import ENCRYPT_OFF, ENCRYPT_REQ
from workers.recon.portscan import PortInfo

T = TypeVar("T", Running, SSHLab)


@pytest.fixture
def up() -> Iterator[Callable[[T], T]]:
    """Register a started fake so it is stopped after the test."""
    started: list[Running | SSHLab] = []

    def keep(server: T) -> T:
        started.append(server)
        return server

    yield keep
    for server in started:
        server.stop()


def test_redis_planted_password_found(up: Callable[[Running], Running]) -> None:
    server = up(start_redis("foobared"))
    report = brute([(server.ip, server.port, "redis")], ["RedisBrute"])
    assert only_finding(report) == ("RedisBrute", "", "foobared", False)
    assert report.findings[0].service == "redis" and report.findings[0].port == server.port


def test_redis_without_password_is_an_open_access_finding_with_no_attempt(
    up: Callable[[Running], Running],
) -> None:
    server = up(start_redis(None))
    report = brute([(server.ip, server.port, "redis")], ["RedisBrute"])
    assert only_finding(report) == ("RedisBrute", "", "", True)
    assert server.attempts == 0 and report.attempts == 0


def test_redis_strong_password_not_found_and_attempt_cap_respected(up: Callable[[Running], Running]) -> None:
    server = up(start_redis(STRONG))
    report = brute([(server.ip, server.port, "redis")], ["RedisBrute"], max_attempts_per_service=4)
    assert report.findings == []
    assert server.attempts == 4 and report.attempts == 4


def test_ftp_planted_password_found_and_search_stops_there(up: Callable[[Running], Running]) -> None:
    server = up(start_ftp({"ftp": "ftp", "admin": STRONG}))
    report = brute([(server.ip, server.port, "ftp")], ["FTPBrute"])
    assert only_finding(report) == ("FTPBrute", "ftp", "ftp", False)
    bundled = load_credentials("ftp")
    assert server.attempts == bundled.index(Credential("ftp", "ftp")) + 1


def test_ftp_anonymous_login_found(up: Callable[[Running], Running]) -> None:
    server = up(start_ftp({}, anonymous=True))
    report = brute([(server.ip, server.port, "ftp")], ["FTPBrute"])
    assert only_finding(report)[:2] == ("FTPBrute", "anonymous")
    assert server.attempts == 1


def test_ftp_strong_password_not_found(up: Callable[[Running], Running]) -> None:
    server = up(start_ftp({"admin": STRONG, "ftp": STRONG}))
    report = brute([(server.ip, server.port, "ftp")], ["FTPBrute"], max_attempts_per_service=50)
    assert report.findings == []
    assert server.attempts == len(load_credentials("ftp"))


def test_mysql_native_scramble_accepted_for_planted_password(up: Callable[[Running], Running]) -> None:
    server = up(start_mysql({"root": "123456"}))
    report = brute([(server.ip, server.port, "mysql")], ["MysqlBrute"])
    assert only_finding(report) == ("MysqlBrute", "root", "123456", False)


def test_mysql_empty_root_password_found(up: Callable[[Running], Running]) -> None:
    server = up(start_mysql({"root": ""}))
    report = brute([(server.ip, server.port, "mysql")], ["MysqlBrute"])
    assert only_finding(report) == ("MysqlBrute", "root", "", False)
    assert server.attempts == 1


@pytest.mark.parametrize("mode", ["switch", "sha2", "sha2-full"])
def test_mysql_auth_switch_and_caching_sha2_handled(up: Callable[[Running], Running], mode: str) -> None:
    server = up(start_mysql({"root": "root"}, mode=mode))
    report = brute([(server.ip, server.port, "mysql")], ["MysqlBrute"])
    assert only_finding(report) == ("MysqlBrute", "root", "root", False)
    bundled = load_credentials("mysql")
    assert server.attempts == bundled.index(Credential("root", "root")) + 1


def test_mysql_strong_password_not_found(up: Callable[[Running], Running]) -> None:
    server = up(start_mysql({"root": STRONG}))
    report = brute([(server.ip, server.port, "mysql")], ["MysqlBrute"], max_attempts_per_service=6)
    assert report.findings == [] and server.attempts == 6


@pytest.mark.parametrize("method", ["md5", "scram", "password"])
def test_postgres_planted_password_found(up: Callable[[Running], Running], method: str) -> None:
    server = up(start_postgres({"postgres": "postgres"}, method=method))
    report = brute([(server.ip, server.port, "postgresql")], ["PostgreSQLBrute"])
    assert only_finding(report) == ("PostgreSQLBrute", "postgres", "postgres", False)
    assert server.attempts == 1


def test_postgres_offering_tls_is_logged_into_over_tls(up: Callable[[Running], Running]) -> None:
    server = up(start_postgres({"postgres": "postgres"}, method="scram", tls=True))
    report = brute([(server.ip, server.port, "postgresql")], ["PostgreSQLBrute"])
    assert only_finding(report) == ("PostgreSQLBrute", "postgres", "postgres", False)
    assert len(server.settings["tls_sessions"]) == 1, "the one login went over TLS"


@pytest.mark.parametrize("method", ["md5", "scram"])
def test_postgres_strong_password_not_found(up: Callable[[Running], Running], method: str) -> None:
    server = up(start_postgres({"postgres": STRONG}, method=method))
    report = brute([(server.ip, server.port, "postgresql")], ["PostgreSQLBrute"], max_attempts_per_service=5)
    assert report.findings == [] and server.attempts == 5


def test_sqlserver_planted_password_found_and_strong_not(up: Callable[[Running], Running]) -> None:
    weak, strong = up(start_mssql({"sa": "sa"})), up(start_mssql({"sa": STRONG}))
    targets = [(weak.ip, weak.port, "ms-sql-s"), (strong.ip, strong.port, "ms-sql-s")]
    report = brute(targets, ["SQLServerBrute"], max_attempts_per_service=3)
    assert only_finding(report) == ("SQLServerBrute", "sa", "sa", False)
    assert report.findings[0].port == weak.port
    assert weak.attempts == load_credentials("sqlserver").index(Credential("sa", "sa")) + 1
    assert strong.attempts == 3


@pytest.mark.parametrize("encryption", [ENCRYPT_OFF, ENCRYPT_REQ])
def test_sqlserver_login_over_tls_inside_tds(up: Callable[[Running], Running], encryption: int) -> None:
    server = up(start_mssql({"sa": "Password123"}, encryption=encryption))
    report = brute([(server.ip, server.port, "ms-sql-s")], ["SQLServerBrute"])
    assert only_finding(report) == ("SQLServerBrute", "sa", "Password123", False)
    attempts = load_credentials("sqlserver").index(Credential("sa", "Password123")) + 1
    assert server.attempts == attempts and len(server.settings["tls_logins"]) == attempts


def test_ssh_planted_password_found_and_strong_not(up: Callable[[SSHLab], SSHLab]) -> None:
    weak = up(SSHLab({"root": "toor"}).start())
    strong = up(SSHLab({"root": STRONG}).start())
    report = brute(
        [(weak.ip, weak.port, "ssh"), (strong.ip, strong.port, "ssh")],
        ["SSHBrute"],
        max_attempts_per_service=4,
    )
    assert only_finding(report) == ("SSHBrute", "root", "toor", False)
    assert report.findings[0].port == weak.port
    assert strong.attempts == 4


def test_ssh_without_password_auth_gets_no_attempt(up: Callable[[SSHLab], SSHLab]) -> None:
    server = up(SSHLab({"root": "root"}, passwords=False).start())
    report = brute([(server.ip, server.port, "ssh")], ["SSHBrute"])
    assert report.findings == [] and report.attempts == 0 and server.attempts == 0


def test_mongodb_without_auth_is_an_open_access_finding(mongo_server: MongoServer) -> None:
    report = brute([("127.0.0.1", mongo_server.port, "mongodb")], ["MongoDBBrute"])
    assert only_finding(report) == ("MongoDBBrute", "", "", True)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
def test_mongodb_scram_planted_password_found(up: Callable[[Running], Running], mechanism: str) -> None:
    server = up(start_mongo_auth({"admin": "admin123", "root": STRONG}, (mechanism,)))
    report = brute([(server.ip, server.port, "mongodb")], ["MongoDBBrute"], max_attempts_per_service=50)
    assert only_finding(report) == ("MongoDBBrute", "admin", "admin123", False)
    bundled = load_credentials("mongodb")
    tried = bundled[: bundled.index(Credential("admin", "admin123")) + 1]
    assert server.attempts == sum(1 for c in tried if c.username in ("admin", "root")), (
        "no proof for unknown users"
    )


def test_mongodb_before_hello_is_checked_through_ismaster(up: Callable[[Running], Running]) -> None:
    server = up(start_mongo_auth({"admin": "admin"}, ("SCRAM-SHA-1",), legacy=True))
    report = brute([(server.ip, server.port, "mongodb")], ["MongoDBBrute"])
    assert only_finding(report) == ("MongoDBBrute", "admin", "admin", False)


def test_mongodb_scram_strong_password_not_found(up: Callable[[Running], Running]) -> None:
    server = up(start_mongo_auth({"admin": STRONG}))
    report = brute([(server.ip, server.port, "mongodb")], ["MongoDBBrute"], max_attempts_per_service=3)
    assert report.findings == [] and report.attempts == 3


def test_wrong_protocol_on_the_port_gives_no_finding_and_no_attempt(up: Callable[[Running], Running]) -> None:
    redis = up(start_redis("foobared"))
    ftp = up(start_ftp({"ftp": "ftp"}))
    web = up(start_manager({"tomcat": "s3cret"}, realm="x"))
    mysql = up(start_mysql({"root": "root"}))
    silent = up(silent_port())
    pairs = {
        "RedisBrute": (ftp, "redis"),
        "FTPBrute": (redis, "ftp"),
        "MysqlBrute": (web, "mysql"),
        "PostgreSQLBrute": (redis, "postgresql"),
        "TomcatBrute": (mysql, "http"),
        "SSHBrute": (ftp, "ssh"),
        "MongoDBBrute": (redis, "mongodb"),
        "SQLServerBrute": (web, "ms-sql-s"),
        "POP3Brute": (ftp, "pop3"),
        "IMAPBrute": (redis, "imap"),
        "SMTPBrute": (web, "smtp"),
        "GrafanaBrute": (redis, "http"),
        "ClickhouseBrute": (ftp, "http"),
        "ActiveMQBrute": (mysql, "http"),
    }

    async def all_runs() -> list[BruteReport]:
        runs = [
            run_brute([(server.ip, server.port, service)], [plugin], timeout=1.0)
            for plugin, (server, service) in pairs.items()
        ]
        runs += [
            run_brute([(silent.ip, silent.port, service)], [plugin], timeout=0.5)
            for plugin, (_, service) in pairs.items()
        ]
        return await asyncio.gather(*runs)

    reports = asyncio.run(all_runs())
    assert [r.findings for r in reports] == [[]] * len(reports)
    assert [r.services_checked for r in reports] == [1] * len(reports)
    assert [r.attempts for r in reports[len(pairs) :]] == [0] * len(pairs), (
        "no credential is tried on a silent port"
    )
    assert redis.attempts == ftp.attempts == mysql.attempts == 0


def test_unknown_and_unsupported_plugin_names_are_reported_by_name(up: Callable[[Running], Running]) -> None:
    server = up(start_redis("foobared"))
    report = brute(
        [(server.ip, server.port, "redis")], ["NoSuchBrute", "RDPBrute", "RedisBrute", "NoSuchBrute"]
    )
    assert report.unknown_plugins == ["NoSuchBrute"]
    assert report.unsupported == {"RDPBrute": UNSUPPORTED["RDPBrute"]}
    assert only_finding(report)[0] == "RedisBrute"


def test_plugins_apply_by_service_name_else_by_default_port(up: Callable[[Running], Running]) -> None:
    server = up(start_redis("foobared"))
    named_other = brute([(server.ip, server.port, "ftp")], ["RedisBrute"])
    assert named_other.services_checked == 0 and server.attempts == 0
    unnamed_odd_port = brute([(server.ip, server.port, "")], ["RedisBrute"])
    assert unnamed_odd_port.services_checked == 0
    assert brute([(server.ip, server.port, "Redis")], ["RedisBrute"]).services_checked == 1


class _BrokenBrute(BrutePlugin):
    """A plugin with a bug: its check raises."""

    plugin_name = "BrokenBrute"
    app_name = vul_name = "broken"
    services = frozenset({"redis"})
    ports = frozenset({6379})
    credential_list = "redis"

    async def check(
        self, ip: str, port: int, credentials: Iterable[Credential], timeout: float
    ) -> Finding | None:
        raise RuntimeError("plugin bug")


def test_a_plugin_bug_ends_only_its_own_check(
    up: Callable[[Running], Running], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry.PLUGINS, "BrokenBrute", _BrokenBrute)
    server = up(start_redis("foobared"))
    seen: list[tuple[int, int]] = []
    report = brute(
        [(server.ip, server.port, "redis")],
        ["BrokenBrute", "RedisBrute"],
        on_progress=lambda d, t: seen.append((d, t)),
    )
    assert report.errors == {f"BrokenBrute {server.ip}:{server.port}": "RuntimeError: plugin bug"}
    assert only_finding(report)[0] == "RedisBrute"
    assert seen[-1] == (2, 2)


def test_targets_from_open_ports_carry_the_detected_service() -> None:
    open_ports = {
        "10.0.0.2": {22: PortInfo(22, service="ssh"), 80: PortInfo(80)},
        "10.0.0.1": {6379: PortInfo(6379)},
    }
    assert targets_from_ports(open_ports) == [
        ("10.0.0.1", 6379, ""),
        ("10.0.0.2", 22, "ssh"),
        ("10.0.0.2", 80, ""),
    ]


def test_credentials_dir_overrides_the_bundled_list(up: Callable[[Running], Running], tmp_path: Path) -> None:
    server = up(start_redis("only-in-my-list"))
    (tmp_path / "redis.txt").write_text("# mine\n:only-in-my-list\n", encoding="utf-8")
    report = brute([(server.ip, server.port, "redis")], ["RedisBrute"], credentials_dir=tmp_path)
    assert only_finding(report) == ("RedisBrute", "", "only-in-my-list", False)
    assert server.attempts == 1


def test_progress_reports_every_service_and_stop_makes_the_report_partial(
    up: Callable[[Running], Running],
) -> None:
    a, b = up(start_redis(STRONG)), up(start_redis(STRONG))
    seen: list[tuple[int, int]] = []
    targets = [(a.ip, a.port, "redis"), (b.ip, b.port, "redis")]
    brute(targets, ["RedisBrute"], max_attempts_per_service=2, on_progress=lambda d, t: seen.append((d, t)))
    assert seen[0] == (0, 2) and seen[-1] == (2, 2) and len(seen) == 3
    stopped = brute(targets, ["RedisBrute"], should_stop=lambda: True)
    assert stopped.partial and stopped.attempts == 0


def test_credential_lists_parse_and_brute_config_enables_by_arl_rules() -> None:
    parsed = parse_credentials("# c\nroot:\n:pw\nu:a:b\nadmin:%user%123\nroot:\n")
    assert parsed == [
        Credential("root", ""),
        Credential("", "pw"),
        Credential("u", "a:b"),
        Credential("admin", "admin123"),
    ]
    config: list[dict[str, Any]] = [
        {"plugin_name": "RedisBrute", "enable": True},
        {"plugin_name": "FTPBrute", "enable": False},
        {"plugin_name": "MysqlBrute"},
        {"enable": True},
    ]
    assert enabled_plugins(config) == ["RedisBrute"]
    assert plugins_for_options({"brute_config": config, "service_brute": True}) == ["RedisBrute"]
    assert plugins_for_options({"service_brute": True}) == plugin_names()
    assert plugins_for_options({"service_brute": False}) == []
    assert {"RedisBrute", "FTPBrute", "MysqlBrute", "PostgreSQLBrute", "TomcatBrute", "MongoDBBrute"} <= set(
        plugin_names()
    )


def test_finding_document_keeps_the_password_as_found(up: Callable[[Running], Running]) -> None:
    server = up(start_redis("foobared"))
    doc = brute([(server.ip, server.port, "redis")], ["RedisBrute"]).findings[0].as_document()
    assert doc["password"] == "foobared" and doc["verify_data"] == ":foobared"
    assert doc["target"] == f"redis://{server.ip}:{server.port}" and doc["plg_name"] == "RedisBrute"
