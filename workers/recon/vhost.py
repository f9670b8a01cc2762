"""Virtual-host discovery, ARL's ``findvhost`` ("Host 碰撞", Host collision).

For each HTTP(S) endpoint (IP, port, scheme) the task found, :func:`find_vhosts` sends the front
page request with the Host header (and TLS server name) of each candidate name, and reports the
names the endpoint serves as a site of their own: answers that differ from what it serves for
names it does not know. ARL tries the task's names that resolve to private addresses against its
public IPs, which finds internal sites reachable from outside; the caller picks the names (names
that do not resolve, or resolve elsewhere, are the interesting ones).

The endpoint's baseline is its answer to four Host headers: the IP itself (the default virtual
host), a random label under the first name, a random label under that name's parent, and a random
single label. An answer counts, as in ARL, when it is a 200 or a redirect, with a text or JSON
body (text of at least :data:`MIN_TEXT_BODY` bytes and containing ``<``), and it is not similar
(:func:`similar`) to any baseline answer nor to an answer already reported on the endpoint.
Before comparing, every occurrence of the requested name is removed from the answer, so a default
page that echoes the Host does not look new. An endpoint is given up after ``max_errors`` failed
requests; a name found on several endpoints with the same title and status is reported once
(ARL's guard against CDNs).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import string
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any

from workers.recon.control import run_pool
from workers.recon.http import HttpError, HttpResponse, extract_title, fetch, origin_url
from workers.recon.targets import is_ip

DEFAULT_MAX_NAMES = 500
MAX_ERRORS = 10
MIN_TEXT_BODY = 150
SIMILARITY = 0.9
MAX_BODY = 128 * 1024
MAX_TOKENS = 3000
ACCEPTED_STATUS = frozenset({200, 301, 302, 307, 308})
IGNORED_TITLES = ("百度一下",)
"""Titles of pages served by proxies for any name (ARL skips them too)."""
_TOKEN_RE = re.compile(rb"</?[A-Za-z][A-Za-z0-9]*|[A-Za-z0-9_]+|[^\sA-Za-z0-9_<]")


@dataclass(frozen=True)
class VhostTarget:
    """An HTTP(S) endpoint to try names on."""

    ip: str
    port: int
    scheme: str


@dataclass(frozen=True)
class VhostRecord:
    """A name an endpoint serves as a distinct virtual host (a document of the ``vhost`` collection)."""

    ip: str
    port: int
    scheme: str
    host: str
    url: str
    site: str
    status_code: int
    title: str
    body_length: int
    content_type: str

    def to_doc(self) -> dict[str, Any]:
        """The record as stored; ``url`` is the endpoint (``scheme://ip[:port]``), ``site`` the name's
        origin on it (``scheme://host[:port]``)."""
        return dict(self.__dict__)

    def to_vuln_doc(self) -> dict[str, Any]:
        """The finding as ARL stores it in ``vuln`` (plugin ``FindVhost``, one ``poc_id`` per name)."""
        return {
            "plg_name": "FindVhost",
            "plg_type": "scan",
            "vul_name": "发现Host碰撞漏洞",
            "app_name": "web",
            "poc_id": f"FindVhost:{self.host}",
            "severity": "info",
            "target": self.url,
            "verify_data": f"{self.host}-{self.title}-{self.status_code}-{self.body_length}",
            "verify_obj": {
                "url": self.url,
                "domain": self.host,
                "title": self.title,
                "status_code": self.status_code,
                "body_length": self.body_length,
            },
        }


@dataclass(frozen=True)
class Answer:
    """What an endpoint answered for one Host, with that name removed from body, title and Location.

    ``shown_title`` and ``length`` are the page's own title and body length (name included).
    """

    status: int
    content_type: str
    title: str
    location: str
    body: bytes
    tokens: tuple[bytes, ...]
    shown_title: str
    length: int

    @classmethod
    def of(cls, response: HttpResponse, name: str) -> Answer:
        """The answer to a request for ``name``, the name (any case) cut out."""
        pattern = re.compile(re.escape(name.encode()), re.IGNORECASE)
        body = pattern.sub(b"", response.body)
        location = pattern.sub(b"", (response.header("Location") or "").encode("latin-1", "replace"))
        return cls(
            status=response.status,
            content_type=response.content_type,
            title=extract_title(body, response.header("Content-Type")),
            location=location.decode("latin-1"),
            body=body,
            tokens=tuple(_TOKEN_RE.findall(body[:MAX_BODY]))[:MAX_TOKENS],
            shown_title=response.title,
            length=len(response.body),
        )

    def acceptable(self) -> bool:
        """ARL's conditions on an answer worth reporting (status, type, size, markup, title)."""
        if self.status not in ACCEPTED_STATUS or any(t in self.title for t in IGNORED_TITLES):
            return False
        if "json" in self.content_type:
            return True
        if "text" not in self.content_type:
            return False
        return len(self.body) >= MIN_TEXT_BODY and b"<" in self.body


def similar(a: Answer, b: Answer) -> bool:
    """Whether two answers are the same page: same status, type, title and redirect target, and
    bodies whose token sequences match at least :data:`SIMILARITY` (difflib ratio)."""
    if (a.status, a.content_type, a.title, a.location) != (b.status, b.content_type, b.title, b.location):
        return False
    if a.body == b.body:
        return True
    matcher = SequenceMatcher(None, a.tokens, b.tokens, autojunk=False)
    return (
        matcher.real_quick_ratio() >= SIMILARITY
        and matcher.quick_ratio() >= SIMILARITY
        and matcher.ratio() >= SIMILARITY
    )


def _random_label() -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(12))


def baseline_names(ip: str, first: str) -> list[str]:
    """The Host headers of an endpoint's baseline (see the module docstring)."""
    parent = ".".join(first.split(".")[1:]) or first
    return [ip, f"{_random_label()}.{first}", f"{_random_label()}.{parent}", _random_label()]


def candidate_names(names: Iterable[str], in_scope: Callable[[str], bool], max_names: int) -> list[str]:
    """Distinct lower-cased names (no IP literals, no wildcards), in scope, at most ``max_names``."""
    out: dict[str, None] = {}
    for raw in names:
        name = raw.strip().lower().rstrip(".")
        if name and "*" not in name and not is_ip(name) and name not in out and in_scope(name):
            out[name] = None
            if len(out) >= max_names:
                break
    return list(out)


class _Endpoint:
    """One endpoint's run: its baseline, what was reported on it, its error count."""

    def __init__(self, target: VhostTarget, timeout: float, deadline: float | None, max_errors: int) -> None:
        self.target = target
        self.timeout = timeout
        self.deadline = deadline
        self.max_errors = max_errors
        self.errors = 0
        self.baseline: list[Answer] = []
        self.reported: list[Answer] = []

    async def ask(self, name: str) -> Answer | None:
        """The endpoint's answer for Host ``name`` (None when it failed, or gave up, or time is out)."""
        wait = self.timeout if self.deadline is None else min(self.timeout, self.deadline - time.monotonic())
        if self.errors >= self.max_errors or wait <= 0.05:
            return None
        t = self.target
        try:
            response = await fetch(
                t.ip, t.port, tls=t.scheme == "https", host=name, timeout=wait, max_body=MAX_BODY
            )
        except HttpError:
            self.errors += 1
            return None
        return await asyncio.to_thread(Answer.of, response, name)

    def is_new(self, answer: Answer) -> bool:
        """Acceptable and unlike the baseline and the answers reported here already."""
        return answer.acceptable() and not any(
            similar(answer, seen) for seen in self.baseline + self.reported
        )


async def find_vhosts(
    targets: Sequence[VhostTarget],
    names: Iterable[str],
    *,
    in_scope: Callable[[str], bool],
    timeout: float = 5.0,
    deadline: float | None = None,
    concurrency: int = 8,
    endpoint_concurrency: int = 4,
    max_names: int = DEFAULT_MAX_NAMES,
    max_errors: int = MAX_ERRORS,
    found: list[VhostRecord] | None = None,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
) -> list[VhostRecord]:
    """Try every candidate name on every endpoint and return the virtual hosts found.

    ``in_scope`` is asked about each name and each endpoint IP (refused ones are skipped);
    ``max_names`` bounds the names tried per endpoint, ``concurrency`` the requests in flight per
    endpoint and ``endpoint_concurrency`` the endpoints worked on at once. No request starts after
    ``deadline`` (a :func:`time.monotonic` value). Records are appended to ``found`` as they come;
    ``on_progress(done, total)`` counts (endpoint, name) pairs settled.
    """
    records: list[VhostRecord] = [] if found is None else found
    candidates = candidate_names(names, in_scope, max_names)
    if not candidates:
        return records
    reported: set[tuple[str, str, int]] = set()
    total = len(targets) * len(candidates)
    done = 0

    def settled(count: int) -> None:
        nonlocal done
        done += count
        on_progress(done, total)

    async def work(target: VhostTarget) -> None:
        if target.scheme not in ("http", "https") or not in_scope(target.ip):
            settled(len(candidates))
            return
        endpoint = _Endpoint(target, timeout, deadline, max_errors)
        for name in baseline_names(target.ip, candidates[0]):
            answer = await endpoint.ask(name)
            if answer is not None:
                endpoint.baseline.append(answer)
        if not endpoint.baseline:
            settled(len(candidates))
            return

        async def check(name: str) -> None:
            answer = await endpoint.ask(name)
            settled(1)
            if answer is None or not endpoint.is_new(answer):
                return
            endpoint.reported.append(answer)
            key = (name, answer.shown_title, answer.status)
            if key in reported:
                return
            reported.add(key)
            records.append(_record(target, name, answer))

        await run_pool(candidates, check, concurrency)

    await run_pool(targets, work, endpoint_concurrency)
    return records


def _record(target: VhostTarget, name: str, answer: Answer) -> VhostRecord:
    return VhostRecord(
        ip=target.ip,
        port=target.port,
        scheme=target.scheme,
        host=name,
        url=origin_url(target.scheme, target.ip, target.port),
        site=origin_url(target.scheme, name, target.port),
        status_code=answer.status,
        title=answer.shown_title,
        body_length=answer.length,
        content_type=answer.content_type,
    )
