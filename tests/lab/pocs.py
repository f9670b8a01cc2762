"""Lab services for every bundled PoC: a vulnerable variant (the PoC must fire) and a safe one (it must not).

The safe variants are what a fixed or differently configured service answers (auth required, the
path removed, an SPA that answers every path with its index page, ...), so they catch matchers
that are too loose.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.lab.sites import NOT_FOUND, Route, RouteSite, ScriptedTcp, html

POC_LAB_IP = "127.88.1.1"
JSON = {"Content-Type": "application/json"}
TEXT = {"Content-Type": "text/plain"}
SPA_INDEX = Route(
    b"<!doctype html><html><head><title>App</title></head><body><div id=app></div>"
    b"<script>window.ENV={APP_KEY:'x'}</script></body></html>"
)
"""A single-page app that answers every path with its index (200)."""


def _json(value: object, status: int = 200, headers: dict[str, str] | None = None) -> Route:
    return Route(json.dumps(value).encode(), status, {**JSON, **(headers or {})})


@dataclass
class Variant:
    """One side of a PoC's lab: HTTP routes (or a TCP responder), and how the target is written."""

    routes: dict[str, Route] = field(default_factory=dict)
    tcp: Callable[[bytes], bytes] | None = None
    target_form: str = "url"
    tls: bool = False
    fallback: Route = NOT_FOUND
    headers: dict[str, str] = field(default_factory=dict)


def _redis(data: bytes) -> bytes:
    info = b"# Server\r\nredis_version:7.2.4\r\nredis_mode:standalone\r\nos:Linux\r\n"
    return b"$%d\r\n%s\r\n" % (len(info), info) if data.upper().startswith(b"INFO") else b"-ERR\r\n"


def _redis_auth(data: bytes) -> bytes:
    return b"-NOAUTH Authentication required.\r\n"


def _memcached(data: bytes) -> bytes:
    if data.startswith(b"stats"):
        return b"STAT pid 4242\r\nSTAT uptime 93\r\nSTAT version 1.6.21\r\nSTAT curr_items 3\r\nEND\r\n"
    return b"ERROR\r\n"


def _not_memcached(data: bytes) -> bytes:
    return b"ERROR\r\n"


JENKINS = {"X-Jenkins": "2.414.1"}
REGISTRY = {"Docker-Distribution-Api-Version": "registry/2.0"}
FLOWER_WORKERS = {"celery@worker1": {"stats": {"pid": 7}, "registered": ["tasks.add"], "active_queues": []}}
ES_ROOT = {
    "name": "node-1",
    "cluster_name": "logs",
    "version": {"number": "8.11.1", "lucene_version": "9.8.0"},
    "tagline": "You Know, for Search",
}
DOCKER_VERSION = {"Version": "24.0.7", "ApiVersion": "1.43", "GoVersion": "go1.20.10", "Os": "linux"}
ACTUATOR_ENV = {"activeProfiles": ["prod"], "propertySources": [{"name": "server.ports", "properties": {}}]}
GRAPHQL_SCHEMA = {"data": {"__schema": {"queryType": {"name": "Query"}, "types": [{"name": "Query"}]}}}
METRICS = (
    b"# HELP http_requests_total Requests served.\n# TYPE http_requests_total counter\n"
    b'http_requests_total{code="200"} 1027\n'
)

POC_VARIANTS: dict[str, tuple[Variant, Variant]] = {
    "git-config-exposure": (
        Variant(
            {"/.git/config": Route(b"[core]\n\trepositoryformatversion = 0\n\tbare = false\n", headers=TEXT)},
            target_form="hostport",
            tls=True,
        ),
        Variant({"/.git/config": Route(b"<html><title>403 Forbidden</title></html>", 403)}),
    ),
    "svn-entries-exposure": (
        Variant({"/.svn/wc.db": Route(b"SQLite format 3\x00\x10\x00\x01\x01" + bytes(64), headers=TEXT)}),
        Variant(fallback=SPA_INDEX),
    ),
    "dotenv-exposure": (
        Variant(
            {"/.env": Route(b"APP_ENV=production\nDB_PASSWORD=hunter2\nCACHE_DRIVER=redis\n", headers=TEXT)}
        ),
        Variant(fallback=SPA_INDEX),
    ),
    "ds-store-exposure": (
        Variant({"/.DS_Store": Route(b"\x00\x00\x00\x01Bud1\x00\x00\x10\x00" + bytes(32), headers=TEXT)}),
        Variant(target_form="hostport"),
    ),
    "directory-listing": (
        Variant({"/": html("Index of /", "<h1>Index of /</h1><a href='backup.zip'>backup.zip</a>")}),
        Variant({"/": html("Welcome", "<h1>Welcome</h1>")}),
    ),
    "celery-flower-unauth": (
        Variant({"/api/workers": _json(FLOWER_WORKERS)}, target_form="hostport"),
        Variant(
            fallback=Route(b"Unauthorized", 401, {"WWW-Authenticate": 'Basic realm="flower"', **TEXT}),
        ),
    ),
    "redis-unauth": (
        Variant(tcp=_redis, target_form="hostport"),
        Variant(tcp=_redis_auth, target_form="hostport"),
    ),
    "memcached-unauth": (
        Variant(tcp=_memcached, target_form="hostport"),
        Variant(tcp=_not_memcached, target_form="hostport"),
    ),
    "elasticsearch-unauth": (
        Variant({"/": _json(ES_ROOT)}, tls=True),
        Variant(
            {
                "/": _json(
                    {"error": {"type": "security_exception", "reason": "missing authentication credentials"}},
                    401,
                    {"WWW-Authenticate": 'Basic realm="security"'},
                )
            }
        ),
    ),
    "docker-api-unauth": (
        Variant({"/version": _json(DOCKER_VERSION)}, target_form="hostport"),
        Variant({"/version": html("Docs", 'The "ApiVersion", "GoVersion" and "Os" fields of /version')}),
    ),
    "docker-registry-catalog": (
        Variant({"/v2/_catalog": _json({"repositories": ["app", "base"]}, headers=REGISTRY)}),
        Variant({"/v2/_catalog": _json({"errors": [{"code": "UNAUTHORIZED"}]}, 401, REGISTRY)}),
    ),
    "jenkins-script-console": (
        Variant(
            {"/script": html("Script Console [Jenkins]", '<h1>Script Console</h1><textarea name="script">')},
            headers=JENKINS,
        ),
        Variant(
            {"/script": Route(b"<html><title>Sign in [Jenkins]</title>Authentication required</html>", 403)},
            headers=JENKINS,
        ),
    ),
    "spring-actuator-env": (
        Variant({"/actuator/env": _json(ACTUATOR_ENV)}),
        Variant({"/actuator/env": _json({"status": 401, "error": "Unauthorized"}, 401)}),
    ),
    "graphql-introspection": (
        Variant(
            {"/graphql": Route(json.dumps(GRAPHQL_SCHEMA).encode(), 200, JSON, ("POST",), b"__schema")},
            target_form="hostport",
        ),
        Variant(
            {
                "/graphql": Route(
                    b'{"errors":[{"message":"GraphQL introspection is not allowed"}]}', 400, JSON, ("POST",)
                )
            }
        ),
    ),
    "phpmyadmin-panel": (
        Variant(
            {"/phpmyadmin/": html("phpMyAdmin", '<input name="pma_username"><input name="pma_password">')}
        ),
        Variant(),
    ),
    "tomcat-manager-panel": (
        Variant(
            {
                "/manager/html": Route(
                    b"<html><title>401 Unauthorized</title></html>",
                    401,
                    {"WWW-Authenticate": 'Basic realm="Tomcat Manager Application"'},
                )
            }
        ),
        Variant(
            {"/manager/html": Route(b"denied", 401, {"WWW-Authenticate": 'Basic realm="Restricted"', **TEXT})}
        ),
    ),
    "prometheus-metrics-exposed": (
        Variant({"/metrics": Route(METRICS, headers={"Content-Type": "text/plain; version=0.0.4"})}),
        Variant({"/metrics": Route(b"# metrics are disabled\n", 404, TEXT)}),
    ),
}
"""PoC id -> (vulnerable variant, safe variant)."""


class PocLab:
    """Every variant running, with the target string the PoC test passes for each."""

    def __init__(self, tls: ssl.SSLContext) -> None:
        self.servers: list[RouteSite | ScriptedTcp] = []
        self.targets: dict[tuple[str, str], str] = {}
        for poc_id, variants in POC_VARIANTS.items():
            for side, variant in zip(("vulnerable", "safe"), variants, strict=True):
                self.targets[(poc_id, side)] = self._start(variant, tls)
        self.soft404 = self._start(Variant(fallback=SPA_INDEX, target_form="hostport"), tls)

    def _start(self, variant: Variant, tls: ssl.SSLContext) -> str:
        server: RouteSite | ScriptedTcp
        if variant.tcp is not None:
            server = ScriptedTcp(POC_LAB_IP, variant.tcp).start()
            self.servers.append(server)
            return server.hostport
        site = RouteSite(
            POC_LAB_IP,
            variant.routes,
            headers=variant.headers,
            tls=tls if variant.tls else None,
            fallback=variant.fallback,
        ).start()
        self.servers.append(site)
        return site.hostport if variant.target_form == "hostport" else site.url

    def stop(self) -> None:
        """Stop every server (in parallel: each shutdown waits for its serve loop to notice)."""
        threads = [threading.Thread(target=server.stop) for server in self.servers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
