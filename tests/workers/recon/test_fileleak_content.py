"""File leak content: the bundled probes (grouped by risk, each with a content check), planted leaks
of every risk group found on a loopback site, decoys with the wrong content ignored, and soft-404
sites (200 for everything) yielding nothing."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from tests.lab.plantsite import Page, PlantSite
from workers.recon.datafiles import RISKS, load_leak_paths, parse_leak_groups
from workers.recon.fileleak import LeakFinding, check_site
from workers.recon.sites import Endpoint

HOST = "leaky.fl.test"


def _zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("www/index.php", "<?php echo 'hi';")
    return out.getvalue()


def _tar_gz() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        data = b"<?php $db = 'x';"
        info = tarfile.TarInfo("www/config.php")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _sqlite(tmp: Path) -> bytes:
    path = tmp / "data.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (name TEXT, password TEXT)")
    return path.read_bytes()


def _text(body: str) -> Page:
    return Page(body, headers={"Content-Type": "text/plain"})


def _binary(body: bytes) -> Page:
    return Page(body, headers={"Content-Type": "application/octet-stream"})


def planted_leaks(tmp: Path) -> dict[str, tuple[str, Page]]:
    """path -> (risk, page) for every planted leak."""
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
    return {
        "/.git/config": ("high", _text("[core]\n\trepositoryformatversion = 0\n\tbare = false\n")),
        "/.git/HEAD": ("high", _text("ref: refs/heads/main\n")),
        "/.env": ("high", _text("APP_ENV=production\nDB_PASSWORD=lab-secret\n")),
        "/.ssh/id_rsa": ("high", _text(key)),
        "/backup.zip": ("high", _binary(_zip())),
        f"/{HOST}.zip": ("high", _binary(_zip())),
        "/www.tar.gz": ("high", _binary(_tar_gz())),
        "/backup/db.rar": ("high", _binary(b"Rar!\x1a\x07\x01\x00" + bytes(64))),
        "/db.sql": (
            "high",
            _text("-- MySQL dump 10.13\nCREATE TABLE `users` (`id` int);\nINSERT INTO `users` VALUES (1);\n"),
        ),
        "/data.db": ("high", _binary(_sqlite(tmp))),
        "/.DS_Store": ("high", _binary(b"\x00\x00\x00\x01Bud1" + bytes(32))),
        "/config.php.bak": ("high", _text("<?php\ndefine('DB_PASSWORD', 'x');\n")),
        "/WEB-INF/web.xml": ("medium", _text('<?xml version="1.0"?>\n<web-app version="3.0"></web-app>\n')),
        "/actuator/env": (
            "medium",
            Page(
                json.dumps({"activeProfiles": ["prod"], "propertySources": []}),
                headers={"Content-Type": "application/json"},
            ),
        ),
        "/phpinfo.php": (
            "medium",
            Page("<html><head><title>phpinfo()</title></head><body><h1>PHP Version 8.1.2</h1></body></html>"),
        ),
        "/server-status": ("medium", Page("<html><body><h1>Apache Server Status for lab</h1></body></html>")),
        "/logs/error.log": (
            "medium",
            _text("2024-05-01 10:00:01 ERROR Database connection failed\n2024-05-01 10:00:02 INFO retry\n"),
        ),
        "/docker-compose.yml": ("medium", _text("version: '3'\nservices:\n  db:\n    image: mysql\n")),
        "/package.json": (
            "low",
            Page(
                '{"name": "lab", "dependencies": {"express": "4"}}',
                headers={"Content-Type": "application/json"},
            ),
        ),
        "/composer.lock": ("low", _text('{"content-hash": "abc", "packages": []}')),
        "/robots.txt": ("low", _text("User-agent: *\nDisallow: /admin/\n")),
        "/.idea/workspace.xml": ("low", _text('<?xml version="1.0"?>\n<project version="4"></project>\n')),
    }


DECOYS = {
    "/wp-config.php.bak": Page("<html><head><title>Blog</title></head><body><?php nothing</body></html>"),
    "/dump.sql": _text("hello, this is not a dump\n"),
    "/www.zip": Page("<!DOCTYPE html><html><body>Download our brochure PK</body></html>"),
    "/backup.rar": _text("Rar archives are not served here\n"),
    "/.git/index": _text("no index here\n"),
    "/phpinfo": _text("PHP Version 8 - phpinfo() is disabled\n"),
    "/.htpasswd": _text("# empty\n"),
}
"""Paths that answer 200 with content that is not what the probe looks for."""


def _scan(site: PlantSite, host: str = HOST) -> list[LeakFinding]:
    found: list[LeakFinding] = []
    endpoint = Endpoint("http", host, site.ip, site.port)
    asyncio.run(check_site(endpoint, load_leak_paths(), found, timeout=5.0, concurrency=16))
    return found


def test_bundled_probes_are_many_grouped_by_risk_and_checked() -> None:
    probes = load_leak_paths()
    assert len(probes) >= 1000
    assert len({p.path for p in probes}) == len(probes)
    by_risk = Counter(p.risk for p in probes)
    assert set(by_risk) == set(RISKS) and all(by_risk[r] >= 50 for r in RISKS)
    assert all(p.check is not None and p.path.startswith("/") for p in probes)
    groups = {p.group for p in probes}
    assert {
        "vcs",
        "secrets",
        "archive-backups",
        "database-dumps",
        "config-files",
        "debug",
        "admin",
        "information",
    } <= groups
    first_medium = next(i for i, p in enumerate(probes) if p.risk == "medium")
    assert all(p.risk == "high" for p in probes[:first_medium]), "high-risk probes go first"


def test_malformed_leak_documents_are_rejected() -> None:
    for bad in (
        {"groups": [{"name": "x", "risk": "severe", "probes": []}]},
        {
            "checks": {"c": {"contains": "a"}},
            "groups": [{"name": "x", "risk": "high", "probes": [["/a", "nope"]]}],
        },
        {"checks": {"c": {"magic": "zz"}}, "groups": []},
        {"checks": {"c": {"colour": "red"}}, "groups": []},
        {"checks": {"c": {"html": True}}, "groups": []},
        {"nope": []},
    ):
        with pytest.raises(ValueError):
            parse_leak_groups(bad)


@pytest.fixture(scope="module")
def leaky_site(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    leaks = planted_leaks(tmp_path_factory.mktemp("leaks"))
    pages = {path: [page] for path, (_, page) in leaks.items()} | {p: [page] for p, page in DECOYS.items()}
    site = PlantSite("127.0.0.1", pages).start()
    try:
        found = _scan(site)
    finally:
        site.stop()
    return {"leaks": leaks, "found": found}


def test_planted_leaks_of_every_risk_are_found_and_decoys_are_not(leaky_site: dict[str, object]) -> None:
    leaks = leaky_site["leaks"]
    found = leaky_site["found"]
    assert isinstance(leaks, dict) and isinstance(found, list)
    got = {f.path: f for f in found}
    assert set(got) == set(leaks), set(got) ^ set(leaks)
    for path, (risk, _) in leaks.items():
        assert got[path].risk == risk, path
        assert got[path].to_doc()["group"], path
    assert {risk for risk, _ in leaks.values()} == set(RISKS)


@pytest.mark.parametrize(
    "fallback",
    [
        Page(
            "status=missing\n[core] DB_PASSWORD=x CREATE TABLE t; ref: refs/heads/main\n",
            headers={"Content-Type": "text/plain"},
        ),
        Page("<html><head><title>Welcome</title></head><body>Everything is here [core] <?php</body></html>"),
        Page(b"PK\x03\x04" + bytes(200), headers={"Content-Type": "application/octet-stream"}),
    ],
    ids=["text-with-every-marker", "html-catch-all", "same-zip-for-every-path"],
)
def test_soft_404_sites_yield_no_leaks(fallback: Page) -> None:
    site = PlantSite("127.0.0.1", {}, fallback=fallback).start()
    try:
        found = _scan(site, "soft.fl.test")
    finally:
        site.stop()
    assert found == []
