"""A lab site for the Web Info Hunter: a page loading JavaScript with planted endpoints and secrets.

Every planted value is made up for the lab (none is a real credential).
"""

from __future__ import annotations

from tests.lab.sites import Route, RouteSite, html

WIH_IP = "127.88.0.1"
"""The address www.lab.test resolves to in the lab DNS."""

AWS_KEY = "AKIA" + "LABTESTPLANTED42"
GITHUB_TOKEN = "ghp_" + "L4bT0kenPlantedForTheReconTestsOnly0001"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJsYWItdXNlciJ9.c2lnbmF0dXJlLWZvci10aGUtbGFi"
PRIVATE_KEY_HEADER = "-----BEGIN RSA PRIVATE KEY-----"
EMAIL = "ops-team@lab.test"
API_PATH = "/api/v2/internal/users"
INTERNAL_IP = "10.20.30.40"
EXTRA_SCRIPTS = 25


def app_js(discovered_origin: str) -> bytes:
    """The site's main script: endpoints, a host of the scope to discover, and secrets."""
    return f"""
const API = "{API_PATH}";
const config = {{
  awsKey: "{AWS_KEY}",
  githubToken: '{GITHUB_TOKEN}',
  session: "{JWT}",
  backend: "{discovered_origin}/dashboard",
  thirdParty: "https://cdn.elsewhere.example/lib.js",
  internal: "{INTERNAL_IP}",
  support: "{EMAIL}",
}};
const key = `{PRIVATE_KEY_HEADER}\\nMIIB...lab...`;
fetch("/api/v2/orders?limit=10");
""".encode()


def wih_site(discovered_origin: str) -> RouteSite:
    """The hunted site: its page loads app.js, a foreign script and more chunks than the bound."""
    chunks = "".join(f'<script src="/static/chunk{i}.js"></script>' for i in range(EXTRA_SCRIPTS))
    page = html(
        "Shop",
        '<script src="/static/app.js"></script><script src="https://cdn.elsewhere.example/lib.js"></script>'
        + chunks,
    )
    routes = {
        "/": page,
        "/static/app.js": Route(
            app_js(discovered_origin), headers={"Content-Type": "application/javascript"}
        ),
    }
    return RouteSite(WIH_IP, routes)
