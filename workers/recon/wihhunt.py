"""Web Info Hunter over one site: its front page and the scripts it loads, through the WIH rules.

Used by ``asset_wih_update`` (a scope's sites) and by the ``web_info_hunter`` option of the domain
and IP tasks (the sites the task found).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

from workers.recon.http import HttpError, split_url
from workers.recon.run import Locator
from workers.recon.sitefetch import asset_endpoint
from workers.recon.sites import Endpoint, follow
from workers.recon.wih import WihRecord, WihRule, extract, script_sources

MAX_SCRIPTS = 20
MAX_SCRIPT_BYTES = 512 * 1024


@dataclass
class Hunt:
    """What one pass collected: records by hash (with the first source), scripts fetched."""

    records: dict[str, tuple[WihRecord, str, str]] = field(default_factory=dict)
    scripts: int = 0

    def add(self, records: Iterable[WihRecord], source: str, site: str) -> None:
        """Keep each record once, with the first URL it was found in."""
        for record in records:
            self.records.setdefault(record.hash, (record, source, site))


async def hunt_site(
    doc: dict[str, Any], locate: Locator, rules: list[WihRule], hunt: Hunt, timeout: float
) -> None:
    """Fetch one site's page and scripts and collect what the rules find."""
    start = await asset_endpoint(doc, locate)
    if start is None:
        return
    try:
        endpoint, response, chain = await follow(start, "/", locate, timeout)
    except HttpError:
        return
    page_url = chain[-1] if chain else endpoint.origin + "/"
    text = response.text()
    hunt.add(extract(text, rules), page_url, doc["site"])
    for src in script_sources(text)[:MAX_SCRIPTS]:
        script_url = urljoin(page_url, src)
        try:
            s_scheme, s_host, s_port, s_path = split_url(script_url)
        except ValueError:
            continue
        s_ip = await locate(s_host)
        if s_ip is None:
            continue
        try:
            script = await Endpoint(s_scheme, s_host, s_ip, s_port).get(s_path, timeout, MAX_SCRIPT_BYTES)
        except HttpError:
            continue
        if script.status == 200:
            hunt.scripts += 1
            hunt.add(extract(script.text(), rules), script_url, doc["site"])
