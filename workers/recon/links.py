"""Links in pages and scripts: extraction from HTML and JavaScript, URL normalisation and URL shapes.

Used by the site spider (:mod:`workers.recon.spider`) and the search-engine step
(:mod:`workers.recon.searchengine`). Everything here is pure (no I/O).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import parse_qsl, quote, urljoin, urlsplit, urlunsplit

MAX_PARSE = 512 * 1024
"""Characters of a page or script that are searched for links."""
MAX_LINKS = 2000
"""Links taken from one page or script at most."""

STATIC_EXTENSIONS = frozenset(
    ".png .jpg .jpeg .gif .bmp .svg .ico .webp .tif .tiff .avif "
    ".css .woff .woff2 .ttf .eot .otf .map "
    ".mp3 .mp4 .avi .mov .wmv .flv .webm .ogg .wav .m4a .m3u8 .ts .swf "
    ".pdf .doc .docx .xls .xlsx .ppt .pptx .zip .rar .7z .tar .gz .tgz .bz2 .xz "
    ".apk .ipa .exe .msi .dmg .iso .bin .jar .war .deb .rpm".split()
)
"""Extensions of static assets: never fetched by the spider and not recorded (as in ARL)."""
SCRIPT_EXTENSIONS = frozenset({".js", ".mjs"})

_LINK_ATTRS = {
    "a": "href",
    "area": "href",
    "form": "action",
    "iframe": "src",
    "frame": "src",
    "link": "href",
    "script": "src",
}
_SKIP_SCHEMES = ("javascript:", "mailto:", "tel:", "data:", "about:", "blob:", "sms:", "ftp:", "file:")
_REFRESH_URL_RE = re.compile(r"url\s*=\s*['\"]?([^'\"\s>]+)", re.IGNORECASE)
_JS_URL_RE = re.compile(
    r"""["'`]((?:https?:)?//[A-Za-z0-9.\-]+(?::\d+)?(?:/[^\s"'`<>\\]*)?"""
    r"""|/[A-Za-z0-9_\-.~%!$&*+,;=:@]+(?:/[A-Za-z0-9_\-.~%!$&*+,;=:@]*)*(?:\?[^\s"'`<>\\]*)?)["'`]"""
)
_NUMBER_RE = re.compile(r"\b\d+\b")
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"


@dataclass(frozen=True)
class Link:
    """A URL found in a page: ``kind`` is ``page`` (a, form, iframe, link, refresh), ``script`` (a
    JavaScript file) or ``guess`` (a path string in an inline script: maybe not a page at all)."""

    url: str
    kind: str = "page"


def normalize_url(href: str, base: str) -> str | None:
    """``href`` resolved against ``base``: http(s) only, no fragment, lower-case host, no default port.

    Dot segments are removed and unsafe characters of the path and query are percent-encoded (the
    result can go into a request line as it is). Returns None for anything else (``mailto:``...).
    """
    href = href.strip()
    if not href or href.startswith("#") or href.lower().startswith(_SKIP_SCHEMES):
        return None
    try:
        parts = urlsplit(urljoin(base, href))
        scheme = parts.scheme.lower()
        host = parts.hostname
        port = parts.port
    except ValueError:
        return None
    if scheme not in ("http", "https") or not host:
        return None
    host = host.lower().rstrip(".")
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port in (None, 443 if scheme == "https" else 80) else f"{host}:{port}"
    path = parts.path or "/"
    cleaned = posixpath.normpath(path) if path not in ("", "/") else "/"
    if path.endswith("/") and cleaned != "/":
        cleaned += "/"
    cleaned = "/" + cleaned.lstrip("/")
    return urlunsplit(
        (scheme, netloc, quote(cleaned, safe=_PATH_SAFE), quote(parts.query, safe=_QUERY_SAFE), "")
    )


def url_shape(url: str) -> tuple[str, str, tuple[str, ...]]:
    """What makes two URLs "the same page" for crawling (ARL's URL similarity, in spirit).

    Host and port, the path with every stand-alone number replaced by ``0``
    (``/news/12.html`` ~ ``/news/7.html``), and the sorted set of query parameter names
    (``?id=1`` ~ ``?id=2``). The scheme does not count.
    """
    parts = urlsplit(url)
    keys = tuple(sorted({k for k, _ in parse_qsl(parts.query, keep_blank_values=True)}))
    return parts.netloc.lower(), _NUMBER_RE.sub("0", parts.path or "/"), keys


def extension(url: str) -> str:
    """The lower-cased extension of the URL's last path segment (``''`` when it has none)."""
    last = urlsplit(url).path.rsplit("/", 1)[-1]
    dot = last.rfind(".")
    return last[dot:].lower() if dot > 0 else ""


def is_static(url: str) -> bool:
    """Whether the URL names a static asset (image, style sheet, font, media, document, archive)."""
    return extension(url) in STATIC_EXTENSIONS


def is_script(url: str) -> bool:
    """Whether the URL names a JavaScript file."""
    return extension(url) in SCRIPT_EXTENSIONS


def is_root(url: str) -> bool:
    """Whether the URL is a site's front page (path ``/``, no query)."""
    parts = urlsplit(url)
    return parts.path in ("", "/") and not parts.query


class _LinkParser(HTMLParser):
    """Collects link attributes, ``<base href>``, meta refresh targets and inline script text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, str]] = []
        self.base: str | None = None
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k.lower(): v or "" for k, v in attrs}
        if tag == "base" and self.base is None and values.get("href"):
            self.base = values["href"]
        elif tag == "meta" and values.get("http-equiv", "").lower() == "refresh":
            match = _REFRESH_URL_RE.search(values.get("content", ""))
            if match:
                self.found.append((match.group(1), "page"))
        attr = _LINK_ATTRS.get(tag)
        if attr and values.get(attr):
            self.found.append((values[attr], "script" if tag == "script" else "page"))
        if tag == "script":
            self._in_script = not values.get("src")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)


def html_links(text: str, page_url: str) -> list[Link]:
    """Every link of an HTML page, normalised against the page (or its ``<base href>``), in page order.

    Takes ``a``/``area`` href, ``form`` action, ``iframe``/``frame`` src, ``link`` href, ``script``
    src (kind ``script``), ``<meta http-equiv=refresh>`` targets, and URL strings inside inline
    scripts (kind ``guess``, see :func:`js_links`). Duplicates are dropped.
    """
    parser = _LinkParser()
    try:
        parser.feed(text[:MAX_PARSE])
        parser.close()
    except (AssertionError, ValueError):
        pass
    base = normalize_url(parser.base, page_url) if parser.base else None
    base = base or page_url
    out: dict[str, Link] = {}
    for href, kind in parser.found:
        url = normalize_url(href, base)
        if url and url not in out:
            out[url] = Link(url, "script" if kind == "script" or is_script(url) else "page")
    for url in js_links("\n".join(parser.scripts), base):
        out.setdefault(url, Link(url, "script" if is_script(url) else "guess"))
    return list(out.values())[:MAX_LINKS]


def js_links(text: str, base: str) -> list[str]:
    """URLs written as string literals in JavaScript: absolute ones and root-relative paths.

    Only quoted strings that start with ``http(s)://``, ``//`` or a single ``/`` count (cheap and
    rarely wrong); relative fragments such as ``"api/"`` are left alone.
    """
    out: dict[str, None] = {}
    for match in _JS_URL_RE.finditer(text[:MAX_PARSE]):
        value = match.group(1)
        if value.startswith("//") and "." not in value[2:].split("/", 1)[0]:
            continue
        url = normalize_url(value, base)
        if url:
            out.setdefault(url)
            if len(out) >= MAX_LINKS:
                break
    return list(out)
