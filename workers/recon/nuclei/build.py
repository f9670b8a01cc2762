"""From a template's request block and a target to concrete HTTP requests, and from responses to events.

:func:`base_vars` gives nuclei's built-in variables for a target; :func:`payload_sets` the
payload combinations of a block (``batteringram``, ``pitchfork``, ``clusterbomb``);
:func:`path_request` and :func:`raw_request` expand placeholders and build a
:class:`BuiltRequest` (raw request paths are merged onto the target URL's path, as nuclei's
automerge does); :func:`http_event` turns a response into the map matchers read.
"""

from __future__ import annotations

import itertools
import random
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from workers.recon.http import HttpResponse, format_host, origin_url
from workers.recon.nuclei.substitute import expand
from workers.recon.nuclei.template import MAX_COMBINATIONS, HttpBlock
from workers.recon.poc.net import build_request

EVIDENCE_BODY = 2048


class BuildError(ValueError):
    """A request cannot be built (unresolved placeholders, a malformed raw request or URL)."""


@dataclass(frozen=True)
class Endpoint:
    """A target resolved for HTTP: where to connect and the URL it stands for."""

    raw: str
    host: str
    ip: str
    port: int
    scheme: str
    base_path: str = ""

    @property
    def root_url(self) -> str:
        """``scheme://host[:port]``."""
        return origin_url(self.scheme, self.host, self.port)

    @property
    def base_url(self) -> str:
        """The target URL (root and the target's path)."""
        return self.root_url + self.base_path


@dataclass
class BuiltRequest:
    """One HTTP request ready to send."""

    method: str
    scheme: str
    host: str
    port: int
    path: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def url(self) -> str:
        """The absolute URL."""
        return origin_url(self.scheme, self.host, self.port) + self.path

    def sent_headers(self) -> list[list[str]]:
        """The headers as sent on the wire (defaults such as Host and User-Agent included)."""
        wire = build_request(
            self.method, self.path, self.host, self.port, self.scheme == "https", self.headers, self.body
        )
        head = wire.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
        return [[k, v.strip()] for k, _, v in (line.partition(":") for line in head)]

    def evidence(self) -> dict[str, Any]:
        """Method, URL, headers and a body excerpt, for the finding."""
        return {
            "method": self.method,
            "url": self.url,
            "headers": self.sent_headers(),
            "body": self.body[:EVIDENCE_BODY].decode("utf-8", "replace"),
        }

    def text(self) -> str:
        """The request as text (the ``request`` variable)."""
        lines = [f"{self.method} {self.path} HTTP/1.1"] + [f"{k}: {v}" for k, v in self.headers]
        return "\r\n".join(lines) + "\r\n\r\n" + self.body[:EVIDENCE_BODY].decode("utf-8", "replace")


def base_vars(endpoint: Endpoint) -> dict[str, Any]:
    """nuclei's built-in variables for ``endpoint``."""
    default = 443 if endpoint.scheme == "https" else 80
    hostname = format_host(endpoint.host) + ("" if endpoint.port == default else f":{endpoint.port}")
    last = endpoint.base_path.rsplit("/", 1)[-1]
    return {
        "BaseURL": endpoint.base_url,
        "RootURL": endpoint.root_url,
        "Hostname": hostname,
        "Host": endpoint.host,
        "Port": str(endpoint.port),
        "Path": endpoint.base_path,
        "File": last if "." in last else "",
        "Scheme": endpoint.scheme,
        "FQDN": endpoint.host,
        "randstr": "".join(random.choices(string.ascii_letters + string.digits, k=27)),
    }


def payload_sets(block: HttpBlock) -> Iterator[dict[str, str]]:
    """The payload combinations of ``block`` (one empty set without payloads), at most 1000."""
    if not block.payloads:
        yield {}
        return
    names = [name for name, _ in block.payloads]
    lists = [values for _, values in block.payloads]
    if block.attack == "clusterbomb":
        combos: Iterator[tuple[str, ...]] = itertools.product(*lists)
    elif len(lists) == 1 or block.attack == "pitchfork":
        combos = zip(*lists, strict=False)
    else:
        combos = ((value,) * len(names) for value in lists[0])
    for combo in itertools.islice(combos, MAX_COMBINATIONS):
        yield dict(zip(names, combo, strict=True))


def _expand(text: str, env: Mapping[str, Any]) -> str:
    value, unresolved = expand(text, env)
    if unresolved:
        raise BuildError(f"unresolved variables: {', '.join(sorted(set(unresolved)))[:200]}")
    return value


def _split_url(url: str) -> tuple[str, str, int, str]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise BuildError(f"not an http(s) URL: {url[:200]!r}")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise BuildError(f"bad port in {url[:200]!r}") from None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return scheme, parts.hostname.lower(), port, path


def _clean_headers(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out = []
    for key, value in pairs:
        if any(c in key + value for c in "\r\n") or not key.strip():
            raise BuildError("line break in a header")
        out.append((key.strip(), value.strip()))
    return out


def path_request(block: HttpBlock, path: str, env: Mapping[str, Any], endpoint: Endpoint) -> BuiltRequest:
    """The request for one ``path`` entry (``{{BaseURL}}/...``) of ``block``."""
    url = _expand(path, env)
    if not url.lower().startswith(("http://", "https://")):
        url = endpoint.base_url + ("" if url.startswith("/") else "/") + url
    if any(c in url for c in " \r\n"):
        url = url.replace(" ", "%20")
        if any(c in url for c in "\r\n"):
            raise BuildError("line break in a path")
    scheme, host, port, target_path = _split_url(url)
    headers = _clean_headers([(k, _expand(v, env)) for k, v in block.headers])
    body = _expand(block.body, env).encode("utf-8")
    return BuiltRequest(block.method, scheme, host, port, target_path, headers, body)


def _merge_path(base: str, path: str) -> str:
    if path.lower().startswith(("http://", "https://")):
        parts = urlsplit(path)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if path in ("", "/"):
        return base or "/"
    if path.startswith("?"):
        return (base or "/") + path
    return base.rstrip("/") + ("" if path.startswith("/") else "/") + path


def raw_request(block: HttpBlock, raw: str, env: Mapping[str, Any], endpoint: Endpoint) -> BuiltRequest:
    """The request of one ``raw`` entry of ``block``, sent to ``endpoint``."""
    text = _expand(raw, env).replace("\r\n", "\n")
    lines = text.split("\n")
    while lines and (not lines[0].strip() or lines[0].startswith("@")):
        lines.pop(0)
    if not lines:
        raise BuildError("empty raw request")
    parts = lines[0].split()
    if len(parts) == 2 and parts[1].upper().startswith("HTTP/"):
        parts = [parts[0], ""]
    if len(parts) < 2:
        raise BuildError(f"malformed request line {lines[0][:80]!r}")
    method, target = parts[0].upper(), parts[1]
    headers: list[tuple[str, str]] = []
    index = 1
    while index < len(lines) and lines[index].strip():
        key, sep, value = lines[index].partition(":")
        if sep:
            headers.append((key.strip(), value.strip()))
        index += 1
    body_text = "\n".join(lines[index + 1 :])
    multipart = any(k.lower() == "content-type" and "multipart/" in v.lower() for k, v in headers)
    if multipart:
        body_text = body_text.replace("\n", "\r\n")
    else:
        body_text = body_text.rstrip("\n")
    headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
    path = _merge_path(endpoint.base_path, target).replace(" ", "%20")
    return BuiltRequest(
        method,
        endpoint.scheme,
        endpoint.host,
        endpoint.port,
        path,
        _clean_headers(headers),
        body_text.encode("utf-8", "surrogateescape"),
    )


def header_name(name: str) -> str:
    """A header or cookie name as a DSL variable (lower-case, ``-`` as ``_``)."""
    return name.strip().lower().replace("-", "_")


def response_head(response: HttpResponse) -> str:
    """Status line and headers as text (``all_headers``)."""
    lines = [f"HTTP/1.1 {response.status} {response.reason}".rstrip()]
    lines += [f"{k}: {v}" for k, v in response.headers]
    return "\r\n".join(lines) + "\r\n"


def http_event(
    response: HttpResponse, request: BuiltRequest, final_url: str, env: Mapping[str, Any]
) -> dict[str, Any]:
    """The DSL map of one response (see :mod:`workers.recon.nuclei.operators`)."""
    event: dict[str, Any] = dict(env)
    for key, value in response.headers:
        name = header_name(key)
        if name == "set_cookie":
            cookie = value.split(";", 1)[0]
            cname, sep, cvalue = cookie.partition("=")
            if sep:
                event[header_name(cname)] = cvalue.strip()
        event[name] = f"{event[name]} {value}" if name in event and name not in env else value
    body = response.text()
    head = response_head(response)
    length = response.header("Content-Length")
    event.update(
        body=body,
        body_bytes=response.body,
        all_headers=head,
        header=head,
        status_code=response.status,
        content_length=int(length) if length and length.strip().isdigit() else len(response.body),
        content_type=response.header("Content-Type") or "",
        response=head + "\r\n" + body,
        raw=head + "\r\n" + body,
        request=request.text(),
        host=request.host,
        matched=final_url,
        type="http",
    )
    return event
