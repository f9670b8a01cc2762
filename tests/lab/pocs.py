"""Planted pages for the bundled templates, a false-positive corpus and a soft-404 site.

``PLANTED`` maps a bundled template id to the pages of a site where that template must fire
(what the vulnerable product answers, including its refusals of wrong credentials).
``ALSO`` names other templates that may rightly fire on the same site. The false-positive
corpus is ordinary sites whose words look like product names ("Sunny Flower Shop",
"Harbor View Hotel", "Grafana fan club blog", "Nacosta Family Recipes"); the soft-404 site
answers 200 with the same page for every path and method.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable

from tests.lab.plantsite import Page, PlantSite
from tests.lab.sites import ScriptedTcp

POC_LAB_IP = "127.88.1.1"
OUT_OF_SCOPE_IP = "127.88.9.9"
JSON = {"Content-Type": "application/json"}
TEXT = {"Content-Type": "text/plain"}
Pages = dict[str, list[Page]]


def js(value: object, status: int = 200, headers: dict[str, str] | None = None, **kw: object) -> Page:
    """A JSON page."""
    return Page(json.dumps(value), status, {**JSON, **(headers or {})}, **kw)  # type: ignore[arg-type]


def page(title: str, body: str = "", status: int = 200, headers: dict[str, str] | None = None) -> Page:
    """An HTML page."""
    return Page(f"<html><head><title>{title}</title></head><body>{body}</body></html>", status, headers or {})


DENIED = Page("Unauthorized", 401, {"WWW-Authenticate": 'Basic realm="Restricted"', **TEXT})
FORBIDDEN = js({"code": 403, "message": "user not found!"}, 403)
PASSWORD_FORM = '<form><input name="username"><input type="password" name="password"></form>'

PLANTED: dict[str, Pages] = {
    "git-config-exposure": {
        "/.git/config": [
            Page("[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n", headers=TEXT)
        ]
    },
    "dotenv-exposure": {
        "/.env": [Page("APP_ENV=production\nDB_PASSWORD=hunter2\nCACHE_DRIVER=redis\n", headers=TEXT)]
    },
    "ds-store-exposure": {
        "/.DS_Store": [Page(b"\x00\x00\x00\x01Bud1\x00\x00\x10\x00" + bytes(64), headers=TEXT)]
    },
    "backup-archive-exposure": {
        "/www.zip": [
            Page(
                b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(40), headers={"Content-Type": "application/zip"}
            )
        ]
    },
    "sql-dump-exposure": {
        "/db.sql": [
            Page(
                "-- MySQL dump 10.13\n\nDROP TABLE IF EXISTS `users`;\n"
                "CREATE TABLE `users` (\n  `id` int\n);\n"
                "INSERT INTO `users` VALUES (1,'admin');\n",
                headers=TEXT,
            )
        ]
    },
    "phpinfo-exposure": {
        "/info.php": [page("PHP 8.2.7 - phpinfo()", "<h1>PHP Version 8.2.7</h1><h2>PHP License</h2>")]
    },
    "apache-server-status": {
        "/server-status": [
            page("Apache Status", "<h1>Apache Server Status for lab</h1><dt>Server uptime: 3 days</dt>")
        ]
    },
    "spring-actuator-heapdump": {
        "/actuator/heapdump": [
            Page(
                b"JAVA PROFILE 1.0.2\x00\x00\x00\x00\x08" + bytes(64),
                headers={"Content-Type": "application/octet-stream"},
            )
        ]
    },
    "openapi-spec-exposure": {
        "/v3/api-docs": [js({"openapi": "3.0.1", "info": {"title": "Orders API"}, "paths": {"/orders": {}}})]
    },
    "python-http-server-listing": {
        "/": [
            Page(
                "<!DOCTYPE HTML><html><head><title>Directory listing for /</title></head><body>"
                '<h1>Directory listing for /</h1><hr><ul><li><a href="db.sqlite3">db.sqlite3</a></li>'
                "</ul><hr>"
                "</body></html>",
                headers={"Content-Type": "text/html; charset=utf-8"},
            )
        ]
    },
    "web-inf-web-xml-exposure": {
        "/WEB-INF/web.xml": [
            Page(
                '<?xml version="1.0"?>\n<web-app version="3.1">\n<servlet>\n'
                "<servlet-name>app</servlet-name>\n"
                "</servlet>\n</web-app>\n",
                headers={"Content-Type": "application/xml"},
            )
        ]
    },
    "wordpress-user-enumeration": {
        "/wp-json/wp/v2/users": [js([{"id": 1, "slug": "siteadmin", "avatar_urls": {"24": "x"}}])]
    },
    "nacos-panel": {
        "/nacos/v1/console/server/state": [
            js({"version": "2.2.3", "standalone_mode": "standalone", "function_mode": None})
        ]
    },
    "jenkins-panel": {
        "/login": [page("Sign in [Jenkins]", "Welcome to Jenkins!", headers={"X-Jenkins": "2.414.1"})]
    },
    "grafana-panel": {
        "/login": [
            page(
                "Grafana",
                '<script>window.grafanaBootData = {"settings":{"buildInfo":{"version":"10.1.2"}}}</script>',
            )
        ]
    },
    "swagger-ui-panel": {
        "/swagger-ui/index.html": [
            page(
                "Swagger UI",
                '<div id="swagger-ui"></div><script src="./swagger-ui-bundle.js"></script>'
                "<script>window.ui = SwaggerUIBundle({url: '/v3/api-docs'})</script>",
            )
        ]
    },
    "seeyon-oa-panel": {
        "/seeyon/main.do": [
            page(
                "致远A8+协同管理软件",
                '<link href="/seeyon/common/all-min.css"><script src="/seeyon/main.do?method=x">',
            )
        ]
    },
    "tongda-oa-panel": {
        "/": [
            page(
                "Office Anywhere 2019 网络智能办公系统",
                '<img src="/static/images/tongda.ico">' + PASSWORD_FORM,
            )
        ]
    },
    "hikvision-camera-panel": {
        "/doc/page/login.asp": [
            page(
                "Login",
                '<div id="login">web login</div><script src="../script/login.js"></script>',
                headers={"Server": "App-webs/"},
            )
        ]
    },
    "harbor-panel": {
        "/api/v2.0/systeminfo": [js({"auth_mode": "db_auth", "harbor_version": "v2.8.2-4f0f8e6"})]
    },
    "kibana-panel": {
        "/app/kibana": [page("Elastic", "loading", headers={"kbn-name": "kibana", "kbn-license-sig": "x"})]
    },
    "weaver-ecology-panel": {
        "/wui/index.html": [
            page(
                "e-cology",
                '<script src="/cloudstore/resource/pc/com/index.js"></script>ecology 9',
                headers={"Set-Cookie": "ecology_JSessionid=aaa; path=/"},
            )
        ]
    },
    "phpmyadmin-panel": {
        "/phpmyadmin/": [page("phpMyAdmin", '<input name="pma_username"><input name="pma_password">')]
    },
    "tomcat-manager-panel": {
        "/manager/html": [
            Page(
                "<html><title>401 Unauthorized</title></html>",
                401,
                {"WWW-Authenticate": 'Basic realm="Tomcat Manager Application"'},
            )
        ]
    },
    "zabbix-panel": {
        "/zabbix/index.php": [
            page(
                "Zabbix",
                '<form action="index.php" method="post"><input name="name"><input type="password" '
                'name="password"><button name="enter">Sign in</button></form>'
                "&copy; 2001&ndash;2023, Zabbix SIA",
            )
        ]
    },
    "ruijie-device-panel": {"/": [page("锐捷网络 EG 易网关", "Ruijie Networks" + PASSWORD_FORM)]},
    "nacos-unauth-users": {
        "/nacos/v1/auth/users": [
            js(
                {
                    "totalCount": 1,
                    "pageNumber": 1,
                    "pagesAvailable": 1,
                    "pageItems": [
                        {
                            "username": "nacos",
                            "password": "$2a$10$EuWPZHzz32dJN7jexM34MOeYirDdFAZm2kuWj7VEOJhhZkDrxfvUu",
                        }
                    ],
                }
            )
        ]
    },
    "nacos-auth-bypass-useragent": {
        "/nacos/v1/auth/users": [
            js(
                {"totalCount": 1, "pageItems": [{"username": "nacos", "password": "x"}]},
                header=("User-Agent", "Nacos-Server"),
            ),
            FORBIDDEN,
        ]
    },
    "druid-monitor-unauth": {
        "/druid/basic.json": [
            js(
                {
                    "ResultCode": 1,
                    "Content": {
                        "Version": "1.2.8",
                        "Drivers": ["com.mysql.cj.jdbc.Driver"],
                        "JavaVersion": "1.8.0_372",
                    },
                }
            )
        ]
    },
    "docker-api-unauth": {
        "/version": [js({"Version": "24.0.7", "ApiVersion": "1.43", "GoVersion": "go1.20.10", "Os": "linux"})]
    },
    "kubernetes-api-unauth": {
        "/api/v1/namespaces": [
            js({"kind": "NamespaceList", "apiVersion": "v1", "items": [{"metadata": {"name": "default"}}]})
        ]
    },
    "hadoop-yarn-unauth": {
        "/ws/v1/cluster/info": [
            js({"clusterInfo": {"id": 1, "resourceManagerVersion": "3.3.4", "state": "STARTED"}})
        ]
    },
    "jupyter-unauth": {
        "/api/contents": [
            js(
                {
                    "name": "",
                    "path": "",
                    "type": "directory",
                    "writable": True,
                    "last_modified": "2024-01-01T00:00:00Z",
                    "content": [],
                }
            )
        ]
    },
    "elasticsearch-unauth": {
        "/": [
            js(
                {
                    "name": "node-1",
                    "cluster_name": "logs",
                    "version": {"number": "8.11.1", "lucene_version": "9.8.0"},
                    "tagline": "You Know, for Search",
                }
            )
        ]
    },
    "cors-arbitrary-origin-credentials": {
        "/": [
            Page(
                "<html><body>api</body></html>",
                200,
                {
                    "Access-Control-Allow-Origin": "https://cp-probe.example.org",
                    "Access-Control-Allow-Credentials": "true",
                },
            )
        ]
    },
    "graphql-introspection": {
        "/graphql": [
            js(
                {"data": {"__schema": {"queryType": {"name": "Query"}, "types": [{"name": "Query"}]}}},
                method="POST",
                body_has="__schema",
            )
        ]
    },
    "jboss-invoker-exposed": {
        "/invoker/JMXInvokerServlet": [
            Page(
                b"\xac\xed\x00\x05sr\x00$org.jboss.invocation.MarshalledValue",
                headers={"Content-Type": "application/x-java-serialized-object"},
            )
        ]
    },
    "clickhouse-unauth": {"/": [Page("ck_probe_23.8.2.7\n", headers=TEXT)]},
    "nacos-default-login": {
        "/nacos/v1/auth/users/login": [
            js(
                {"accessToken": "eyJhbGciOiJIUzI1NiJ9.x.y", "tokenTtl": 18000, "globalAdmin": True},
                method="POST",
                body_has="password=nacos",
            ),
            FORBIDDEN,
        ]
    },
    "xxl-job-default-login": {
        "/xxl-job-admin/login": [
            js(
                {"code": 200, "msg": None, "content": None},
                method="POST",
                body_has="password=123456",
                headers={"Set-Cookie": "XXL_JOB_LOGIN_IDENTITY=7b226964223a317d; Path=/; HttpOnly"},
            ),
            js({"code": 500, "msg": "账号或密码错误"}),
        ]
    },
    "grafana-default-login": {
        "/login": [
            js(
                {"message": "Logged in", "redirectUrl": "/"},
                method="POST",
                body_has='"password":"admin"',
                headers={"Set-Cookie": "grafana_session=abc; Path=/; HttpOnly"},
            ),
            js({"message": "Invalid username or password"}, 401),
        ]
    },
    "tomcat-manager-default-login": {
        "/manager/html": [
            Page(
                '<h1>Tomcat Web Application Manager</h1><form action="/manager/html/upload">',
                header=("Authorization", "Basic dG9tY2F0OnMzY3JldA=="),
            ),
            Page(
                "<html><title>401 Unauthorized</title></html>",
                401,
                {"WWW-Authenticate": 'Basic realm="Tomcat Manager Application"'},
            ),
        ]
    },
    "activemq-default-login": {
        "/admin/": [
            Page(
                "<title>localhost : ActiveMQ Console</title>Welcome to the Apache ActiveMQ Console",
                header=("Authorization", "Basic YWRtaW46YWRtaW4="),
            ),
            Page("Unauthorized", 401, {"WWW-Authenticate": 'Basic realm="ActiveMQRealm"'}),
        ]
    },
    "druid-monitor-default-login": {
        "/druid/submitLogin": [
            Page("success", headers=TEXT, method="POST", body_has="loginUsername=ruoyi&loginPassword=123456"),
            Page("error", headers=TEXT),
        ]
    },
    "rabbitmq-default-login": {
        "/api/whoami": [
            js(
                {"name": "guest", "tags": ["administrator"]},
                header=("Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q="),
            ),
            js({"error": "not_authorized", "reason": "Login failed"}, 401),
        ]
    },
    "harbor-default-login": {
        "/api/v2.0/users/current": [
            js(
                {"user_id": 1, "username": "admin", "sysadmin_flag": True},
                header=("Authorization", "Basic YWRtaW46SGFyYm9yMTIzNDU="),
            ),
            js({"errors": [{"code": "UNAUTHORIZED"}]}, 401),
        ]
    },
    "zabbix-default-login": {
        "/index.php": [
            Page(
                "",
                302,
                {"Location": "zabbix.php?action=dashboard.view", "Set-Cookie": "zbx_session=abc"},
                method="POST",
                body_has="password=zabbix",
            ),
            page("Zabbix", "Incorrect user name or password"),
        ]
    },
    "apollo-default-login": {
        "/signin": [
            Page(
                "",
                302,
                {"Location": "/", "Set-Cookie": "SESSION=abc; Path=/"},
                method="POST",
                body_has="password=admin",
            ),
            Page("", 302, {"Location": "/signin?#/error"}),
        ]
    },
}
"""Template id -> the pages of a site where it must fire."""

DJANGO_404 = (
    "<html><head><title>Page not found at /x</title></head><body><p>Using the URLconf defined in "
    "<code>shop.urls</code>, Django tried these URL patterns, in this order:</p></body></html>"
)

ALSO: dict[str, set[str]] = {
    "nacos-unauth-users": {"nacos-auth-bypass-useragent"},
    "tomcat-manager-default-login": {"tomcat-manager-panel"},
    "activemq-default-login": {"activemq-panel"},
    "python-http-server-listing": {"directory-listing"},
}
"""Other templates that rightly fire on a planted site."""

FALLBACKS: dict[str, Page] = {"django-debug-page": Page(DJANGO_404, 404)}
"""Template id -> the answer of its planted site for every path (a debug 404 page)."""


def _redis(data: bytes) -> bytes:
    info = b"# Server\r\nredis_version:7.2.4\r\nredis_mode:standalone\r\nos:Linux\r\n"
    return b"$%d\r\n%s\r\n" % (len(info), info) if data.upper().startswith(b"INFO") else b"-ERR\r\n"


def _memcached(data: bytes) -> bytes:
    if data.startswith(b"stats"):
        return b"STAT pid 4242\r\nSTAT uptime 93\r\nSTAT version 1.6.21\r\nSTAT curr_items 3\r\nEND\r\n"
    return b"ERROR\r\n"


def _zookeeper(data: bytes) -> bytes:
    if data.startswith(b"envi"):
        return (
            b"Environment:\nzookeeper.version=3.8.3-6ad6d364c7c0bcf0de452d54ebefa3058098ab56\nhost.name=zk1\n"
        )
    return b""


TCP_PLANTED: dict[str, Callable[[bytes], bytes]] = {
    "redis-unauth": _redis,
    "memcached-unauth": _memcached,
    "zookeeper-unauth": _zookeeper,
}
"""Template id -> a TCP responder where it must fire (targets given as host:port)."""

FP_PAGES: dict[str, Page] = {
    "Sunny Flower Shop": page(
        "Sunny Flower Shop",
        "<h1>Sunny Flower Shop</h1><p>Roses, tulips and an index of our bouquets.</p>"
        "<p>Login to track your order.</p>" + PASSWORD_FORM,
    ),
    "Harbor View Hotel": page(
        "Harbor View Hotel",
        "<h1>Harbor View Hotel</h1><p>Rooms with a harbor view. Version 2 of our booking system: "
        '"harbor_version" is not a thing here.</p><p>Sign in with your username and password.</p>',
    ),
    "Grafana fan club blog": page(
        "Grafana fan club blog",
        "<h1>Grafana fan club</h1><p>We love Grafana, Kibana, Jenkins and Prometheus dashboards. "
        "Today: why the Grafana login page looks nice, and how admin/admin is a bad idea.</p>",
    ),
    "Nacosta Family Recipes": page(
        "Nacosta Family Recipes",
        "<h1>Nacosta Family Recipes</h1><p>Grandma Nacosta's nacos (not nachos!) and console-baked bread. "
        "Index of recipes: pasta, pizza. Apache pie, Tomcat-shaped cookies, Druid stew.</p>",
    ),
    "Company intranet home": page(
        "Intranet",
        "<h1>Welcome</h1><p>Our OA, Swagger docs and Spring Boot apps live elsewhere. "
        "Office Anywhere? Not here. Contact IT for your password.</p>",
    ),
}
"""Ordinary sites (their other paths answer 404)."""

SOFT_404 = page(
    "Shop",
    "<div id=app></div><script>window.ENV={APP_KEY:'x',version:'1.0'}</script>"
    "<p>Everything you look for is here: login, admin, console, dashboard, api.</p>",
)
"""What the soft-404 site answers for every path and method (200)."""


class PocLab:
    """Every planted site and TCP service, the false-positive corpus and the soft-404 site."""

    def __init__(self, tls: ssl.SSLContext) -> None:
        self.sites: list[PlantSite] = []
        self.tcp: list[ScriptedTcp] = []
        self.targets: dict[str, str] = {}
        planted = {**PLANTED, **{k: {} for k in FALLBACKS}}
        for index, (template_id, pages) in enumerate(planted.items()):
            site = self._site(pages, tls=tls if index % 5 == 0 else None, fallback=FALLBACKS.get(template_id))
            self.targets[template_id] = site.url if index % 3 else site.hostport
        for template_id, respond in TCP_PLANTED.items():
            server = ScriptedTcp(POC_LAB_IP, respond).start()
            self.tcp.append(server)
            self.targets[template_id] = server.hostport
        self.fp_targets = [self._site({"/": [p]}).url for p in FP_PAGES.values()]
        self.soft404 = self._site({}, fallback=SOFT_404).hostport
        self.fp_targets.append(self.soft404)

    def _site(
        self, pages: Pages, *, tls: ssl.SSLContext | None = None, fallback: Page | None = None
    ) -> PlantSite:
        site = PlantSite(POC_LAB_IP, pages, tls=tls, **({"fallback": fallback} if fallback else {})).start()
        self.sites.append(site)
        return site

    def stop(self) -> None:
        """Stop every server (in parallel: each shutdown waits for its serve loop to notice)."""
        threads = [threading.Thread(target=s.stop) for s in [*self.sites, *self.tcp]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
