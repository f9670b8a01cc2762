"""Fingerprint lab pages: planted product pages (with the product and version a scan must report)
and a false-positive corpus of ordinary pages that mention product names (which must yield none).

Every page is served by one :class:`tests.lab.plantsite.PlantSite`, chosen by the Host header
(``<key>.fp.test``), so a test connects to one loopback port with a different host name per page.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import mmh3

from tests.lab.plantsite import Page, PlantSite

LAB_ICON = bytes(range(255, -1, -1)) * 2 + b"fingerprint-lab-camera-icon"
LAB_ICON_RULES = """
rules:
  - name: Lab Camera
    categories: [Surveillance]
    matchers:
      - {type: favicon_hash, hash: %d}
"""


def shodan_hash(data: bytes) -> int:
    """The favicon hash as Shodan and FOFA define it, computed independently of the code under test:
    base64 in lines of 76 characters, each ending with a newline, then 32-bit signed MurmurHash3."""
    text = base64.b64encode(data).decode()
    lines = "".join(text[i : i + 76] + "\n" for i in range(0, len(text), 76))
    return int(mmh3.hash(lines.encode(), signed=True))


def html(title: str, head: str = "", body: str = "") -> str:
    """A small HTML document."""
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>{head}'
        f"</head><body>{body}</body></html>"
    )


LOGIN_FORM = (
    '<form method="post" action="/login"><input name="username" type="text">'
    '<input name="password" type="password"><button type="submit">Login</button></form>'
)


@dataclass
class Planted:
    """A product page: what to serve and what a fingerprint scan must report."""

    key: str
    product: str
    version: str = ""
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    icon: bytes = b""


PLANTED: list[Planted] = [
    # -- technologies of the database ---------------------------------------------------------
    Planted(
        "wordpress",
        "WordPress",
        "6.4.2",
        html("Lab blog", '<meta name="generator" content="WordPress 6.4.2">', "<p>Hello</p>"),
    ),
    Planted(
        "joomla",
        "Joomla",
        "4.2.8",
        html("Club site", '<meta name="generator" content="Joomla! 4.2.8">', "<p>News</p>"),
    ),
    Planted(
        "jquery",
        "jQuery",
        "3.6.0",
        html("Shop", '<script src="/assets/js/jquery-3.6.0.min.js"></script>', "<p>Items</p>"),
    ),
    Planted("kibana", "Kibana", "8.11.1", html("Elastic", body="<div></div>"), {"kbn-version": "8.11.1"}),
    Planted(
        "gitlab",
        "GitLab",
        "",
        html("Sign in", '<meta property="og:site_name" content="GitLab">', LOGIN_FORM),
        {"Set-Cookie": "_gitlab_session=abc123; path=/; HttpOnly"},
    ),
    Planted("harbor", "Harbor", "", html("Harbor", body="<harbor-app>Loading...</harbor-app>")),
    Planted(
        "ghost",
        "Ghost",
        "5.75",
        html("Notes", '<meta name="generator" content="Ghost 5.75">', "<article>Post</article>"),
    ),
    Planted(
        "mediawiki",
        "MediaWiki",
        "1.39.5",
        html("Wiki", '<meta name="generator" content="MediaWiki 1.39.5">', "<div>Main page</div>"),
    ),
    Planted(
        "laravel",
        "Laravel",
        "",
        html("App", body="<p>Welcome</p>"),
        {"Set-Cookie": "laravel_session=eyJpdiI6; path=/; httponly"},
    ),
    Planted(
        "jetty", "Jetty", "9.4.51", html("Service", body="<p>up</p>"), {"Server": "Jetty(9.4.51.v20230217)"}
    ),
    Planted(
        "swagger",
        "Swagger UI",
        "4.15.5",
        html(
            "API docs",
            '<script src="/webjars/swagger-ui/4.15.5/swagger-ui-bundle.js"></script>',
            '<div id="swagger-ui"></div>',
        ),
    ),
    Planted(
        "hugo",
        "Hugo",
        "0.120.4",
        html("Docs", '<meta name="generator" content="Hugo 0.120.4">', "<p>Docs</p>"),
    ),
    Planted(
        "aspnet", "ASP.NET", "4.0.30319", html("Portal", body="<p>Hi</p>"), {"X-AspNet-Version": "4.0.30319"}
    ),
    Planted("nginx", "nginx", "1.24.0", html("Welcome", body="<p>It works</p>"), {"Server": "nginx/1.24.0"}),
    # -- our own rules -----------------------------------------------------------------------------
    Planted(
        "ecology",
        "泛微 Weaver e-cology",
        "",
        html(
            "泛微协同办公平台",
            '<link rel="stylesheet" href="/wui/theme/ecology8/page/login.css">',
            LOGIN_FORM,
        ),
        {"Set-Cookie": "ecology_JSessionid=aaa; path=/"},
    ),
    Planted(
        "yonyou",
        "用友 Yonyou NC",
        "",
        html("用友 NC", body='<a href="platform/pub/welcome.do">进入系统</a>'),
    ),
    Planted(
        "seeyon",
        "致远 Seeyon OA",
        "8.0SP2",
        html(
            "致远A8+协同管理软件 A8-V8.0SP2",
            '<script src="/seeyon/common/js/jquery.js"></script>',
            '<img src="/seeyon/USER-DATA/IMAGES/LOGIN/login.gif"><form action="/seeyon/main.do"></form>',
        ),
    ),
    Planted(
        "tongda",
        "通达 Tongda OA",
        "2017",
        html(
            "Office Anywhere 2017 网络智能办公系统",
            '<link rel="stylesheet" href="/static/templates/2013_01/index.css">',
            "<div>Office Anywhere 2017</div>" + LOGIN_FORM,
        ),
    ),
    Planted(
        "landray",
        "蓝凌 Landray EKP",
        "",
        html("蓝凌EKP", "<script>var Com_Parameter = {SoftDeleteEnableModules:[]};</script>", LOGIN_FORM),
    ),
    Planted(
        "kingdee",
        "金蝶 Kingdee EAS",
        "",
        html("金蝶EAS", body='<a href="/easportal/">EAS</a>'),
        {"Set-Cookie": "easSessionId=xyz; path=/"},
    ),
    Planted(
        "finereport",
        "帆软 FineReport",
        "",
        html(
            "数据决策系统", '<script src="/webroot/decision/file?path=/com/fr/web/core/js/login.js"></script>'
        ),
    ),
    Planted(
        "ruoyi",
        "若依 RuoYi",
        "4.7.8",
        html(
            "若依管理系统",
            '<script src="/ruoyi/js/ry-ui.js?v=4.7.8"></script>',
            "<footer>RuoYi v4.7.8</footer>",
        ),
    ),
    Planted(
        "nacos",
        "Nacos",
        "",
        html(
            "Nacos",
            '<link rel="shortcut icon" href="console-ui/public/img/nacos-logo.png">',
            '<div id="root"></div>',
        ),
    ),
    Planted(
        "xxljob",
        "XXL-JOB",
        "",
        html(
            "任务调度中心",
            '<link rel="stylesheet" href="/xxl-job-admin/static/adminlte/login.css">',
            LOGIN_FORM,
        ),
        {"Set-Cookie": "XXL_JOB_LOGIN_IDENTITY=; Path=/"},
    ),
    Planted(
        "druid",
        "Alibaba Druid",
        "",
        html("Druid Stat Index", '<script src="js/doT.js"></script>', "<script>druid.index.init();</script>"),
    ),
    Planted(
        "hikvision",
        "海康威视 Hikvision",
        "",
        html("", '<script>window.location.href = "/doc/page/login.asp?_" + (new Date()).getTime();</script>'),
        {"Server": "DNVRS-Webs"},
    ),
    Planted(
        "dahua",
        "大华 Dahua",
        "",
        html("WEB SERVICE", '<link rel="shortcut icon" href="/baseProj/images/favicon.ico">'),
    ),
    Planted(
        "h3c",
        "H3C",
        "",
        html(
            "Web user login",
            body=LOGIN_FORM + "<p>Copyright (c) 2004-2023 New H3C Technologies Co., Ltd.</p>",
        ),
    ),
    Planted(
        "ruijie",
        "锐捷 Ruijie",
        "",
        html("锐捷网络 EG易网关", body=LOGIN_FORM + "<p>锐捷网络股份有限公司</p>"),
    ),
    Planted(
        "pylisting",
        "Directory listing",
        "",
        html(
            "Directory listing for /",
            body='<h1>Directory listing for /</h1><hr><ul><li><a href="a.txt">a.txt</a></li>',
        ),
        {"Server": "SimpleHTTP/0.6 Python/3.11.7"},
    ),
    Planted(
        "pyserver",
        "Python http.server",
        "0.6",
        html("Directory listing for /", body="<h1>Directory listing for /</h1><hr><ul></ul>"),
        {"Server": "SimpleHTTP/0.6 Python/3.11.7"},
    ),
    Planted(
        "camera",
        "Lab Camera",
        "",
        html("Camera", '<link rel="icon" href="/img/cam.ico">', "<p>live view</p>"),
        icon=LAB_ICON,
    ),
]
"""Product pages; each must be reported (with its version, when one is given)."""


def _corpus() -> dict[str, tuple[str, dict[str, str]]]:
    prose = "<p>" + "We write about everyday things for our readers. " * 6 + "</p>"
    pages = {
        "flower-shop": html(
            "Sunny Flower Shop",
            '<meta name="description" content="Fresh flowers delivered daily">',
            "<h1>Sunny Flower Shop</h1><p>Roses, tulips and sunflowers. Order a bouquet today.</p>"
            '<ul><li><a href="/shop/roses">Roses</a></li><li><a href="/cart">Cart</a></li></ul>' + prose,
        ),
        "harbor-hotel": html(
            "Harbor View Hotel",
            "",
            "<h1>Harbor View Hotel</h1><p>Rooms with a view of the harbor. Book now.</p>"
            '<form action="/booking"><input name="checkin" type="date"><button>Book</button></form>' + prose,
        ),
        "grafana-fans": html(
            "Grafana fan club blog",
            "",
            "<article><h1>Why we love Grafana</h1><p>Grafana dashboards, Prometheus and Kibana are our "
            "favourite tools. We also tried Zabbix and Nacos last year.</p></article>" + prose,
        ),
        "nacosta-recipes": html(
            "Nacosta Family Recipes",
            "",
            "<h1>Nacosta Family Recipes</h1><p>Grandma Nacosta's lasagne and other family dishes.</p>"
            '<a href="/nacosta/lasagne">Lasagne</a>' + prose,
        ),
        "jenkins-blog": html(
            "Moving from Jenkins to GitLab CI - Dev Notes",
            "",
            "<article><h1>Moving from Jenkins to GitLab CI</h1><p>Our Jenkins server ran for six years; "
            "GitLab pipelines, Harbor for images and SonarQube for quality replaced it.</p></article>"
            + prose,
        ),
        "camera-news": html(
            "Security camera makers report results - Daily News",
            "",
            "<h1>Camera makers report results</h1><p>Hikvision and Dahua Technology shipped more cameras; "
            "Huawei Technologies Co., Ltd. and 锐捷网络 grew their network business. H3C Technologies "
            "also reported.</p>" + prose,
        ),
        "ops-docs": html(
            "Installing Nacos and XXL-JOB - Ops Handbook",
            "",
            "<main><h1>Installing Nacos and XXL-JOB</h1><p>Nacos holds configuration, XXL-JOB runs "
            "scheduled jobs (分布式任务调度平台), Druid pools the connections and Spring Boot hosts "
            "the services. When no route matches, Spring shows its Whitelabel Error Page.</p>"
            "<pre><code>java -jar xxl-job-admin.jar</code></pre></main>" + prose,
        ),
        "oa-review": html(
            "OA software compared: Weaver, Seeyon, Tongda and Landray",
            "",
            "<h1>OA software compared</h1><p>泛微 e-cology, 致远 Seeyon A8, 通达OA (tongda2000.com) and 蓝凌 "
            "EKP are the big four; 用友 NC and 金蝶 EAS dominate ERP, 帆软 FineReport reporting, 若依 "
            "RuoYi is a popular admin template.</p>" + prose,
        ),
        "recipe-blog": html(
            "Celery soup - Kitchen diary",
            "",
            "<h1>Celery soup</h1><p>Chop the celery, add a flower of thyme, simmer for an hour.</p>" + prose,
        ),
        "tech-news": html(
            "Elasticsearch 8 released",
            "",
            "<h1>Elasticsearch 8 released</h1><p>The famous &quot;You Know, for Search&quot; tagline stays; "
            "Kibana, Logstash and Beats follow.</p>" + prose,
        ),
        "wp-tutorial": html(
            "How to back up a WordPress site",
            "",
            "<h1>Back up WordPress</h1><p>Copy the wp-content folder and export the database. Themes live in "
            "wp-content/themes and uploads in wp-content/uploads.</p>" + prose,
        ),
        "swagger-docs": html(
            "Documenting APIs with Swagger UI",
            "",
            "<h1>Swagger UI</h1><p>Include swagger-ui-bundle.js and a div with id swagger-ui.</p>" + prose,
        ),
        "hotel-chain": html(
            "Portainer Bay Resort &amp; Spa",
            "",
            "<h1>Portainer Bay Resort</h1><p>Spa, pool and a restaurant by the sea.</p>" + prose,
        ),
        "bookshop": html(
            "Webmin Books - independent bookshop",
            "",
            "<h1>Webmin Books</h1><p>Second-hand books, maps and prints.</p>" + prose,
        ),
        "gardening": html(
            "Zabbix Garden Centre",
            "",
            "<h1>Zabbix Garden Centre</h1><p>Plants, seeds and tools. Open daily.</p>" + prose,
        ),
        "local-news": html(
            "Harbor festival draws crowds - City Times",
            "",
            "<h1>Harbor festival</h1><p>The Harbor festival and the flower market drew crowds.</p>" + prose,
        ),
        "job-board": html(
            "Jobs: DevOps engineer (Jenkins, Grafana, Kibana)",
            "",
            "<h1>DevOps engineer</h1><p>Experience with Jenkins, GitLab, Grafana, Kibana, Prometheus, "
            "Nexus Repository and Apache Tomcat is a plus.</p>" + prose,
        ),
        "phpmyadmin-guide": html(
            "phpMyAdmin tips for beginners",
            "",
            "<h1>phpMyAdmin tips</h1><p>phpMyAdmin lets you browse MySQL tables.</p>" + prose,
        ),
        "about-us": html(
            "About us - Flower &amp; Harbor Consulting",
            "",
            "<h1>About us</h1><p>We consult on RabbitMQ, ActiveMQ and Apache Solr deployments.</p>" + prose,
        ),
        "security-blog": html(
            "Patch notes for OA and camera admins - Sec Weekly",
            "",
            "<article><h1>Patch now</h1><p>Hikvision cameras expose /doc/page/login.asp; open "
            "http://host:8848/nacos/ and change the default password; jeecg-boot and ruoyi-vue releases "
            "fix injection bugs; YONYOU NC, U8 Cloud and GRP-U8 customers should update; Office Anywhere "
            "2017 (通达OA) needs the latest patch. Gitea, Jenkins and Druid users: see below.</p></article>"
            + prose,
        ),
        "shop-product": html(
            "Garden hose 20 m - Harbor Tools Shop",
            "",
            '<div class="product"><h1>Garden hose</h1><p>Price: 19.90</p><button>Add to basket</button></div>'
            "<p>Ships from our Nacos Street warehouse.</p>" + prose,
        ),
        "listing-essay": html(
            "Index of /blog posts we liked",
            "",
            "<h1>Posts we liked</h1><p>An index of our favourite essays, not a directory listing.</p>"
            + prose,
        ),
    }
    headers = {"Server": "nginx/1.24.0"}
    return {key: (body, headers if i % 2 else {}) for i, (key, body) in enumerate(pages.items())}


FALSE_POSITIVES = _corpus()
"""Ordinary pages (key -> (HTML, response headers)); none may yield a product fingerprint."""

ALLOWED_ON_CORPUS = {"nginx", "Cart Functionality"}
"""What the corpus pages may be fingerprinted as: the Server header (real) and generic traits
(the flower shop has a cart)."""


def host_of(key: str) -> str:
    """The host name that selects the page ``key``."""
    return f"{key}.fp.test"


def start_fingerprint_lab(ip: str = "127.0.0.1") -> PlantSite:
    """Serve every planted page and corpus page from one loopback site, by Host header."""
    pages: dict[str, list[Page]] = {"/": [], "/favicon.ico": [], "/img/cam.ico": []}
    for item in PLANTED:
        host = ("Host", host_of(item.key))
        pages["/"].append(Page(item.body, headers=item.headers, header=host))
        if item.icon:
            pages["/img/cam.ico"].append(
                Page(item.icon, headers={"Content-Type": "image/x-icon"}, header=host)
            )
    for key, (body, headers) in FALSE_POSITIVES.items():
        pages["/"].append(Page(body, headers=headers, header=("Host", host_of(key))))
    return PlantSite(ip, pages).start()
