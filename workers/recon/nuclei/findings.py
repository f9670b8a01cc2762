"""A finding: a template that matched on a target, with its evidence, as a ``vuln`` document.

The document keeps the field names of the earlier PoC engine (``poc_id``, ``name``,
``severity``, ``url``, ``request``, ``response``, ``matched``, ``verify_data`` and ARL's
``plg_name`` / ``vul_name``) and adds nuclei's: ``template_id``, ``matcher_name``,
``extracted``, ``matched_at``, ``description``, ``classification``, ``template_path``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from workers.recon.http import HttpResponse
from workers.recon.nuclei.template import Template

EVIDENCE_BODY = 2048
MAX_EVIDENCE_HEADERS = 40


def response_evidence(response: HttpResponse, redirects: list[str]) -> dict[str, Any]:
    """Status, headers and the first bytes of the body of a response (and the redirects followed)."""
    return {
        "status": response.status,
        "headers": [[k, v] for k, v in response.headers[:MAX_EVIDENCE_HEADERS]],
        "body": response.body[:EVIDENCE_BODY].decode("utf-8", "replace"),
        "body_bytes": len(response.body),
        "truncated": response.truncated or len(response.body) > EVIDENCE_BODY,
        "redirects": redirects,
    }


@dataclass
class Finding:
    """One (target, template) match with the request sent, the response and the evidence."""

    target: str
    template: Template
    ip: str
    url: str
    request: dict[str, Any]
    response: dict[str, Any]
    matched: list[dict[str, Any]]
    extracted: dict[str, list[str]] = field(default_factory=dict)

    def verify_data(self) -> str:
        """A short human-readable proof: the first hit's snippet, match or extracted value."""
        hits = [hit for entry in self.matched for hit in entry.get("hits", [])]
        for key in ("snippet", "match", "dsl", "binary", "word", "status", "size"):
            for hit in hits:
                if key in hit:
                    return str(hit[key])[:EVIDENCE_BODY]
        for values in self.extracted.values():
            if values:
                return ", ".join(values)[:EVIDENCE_BODY]
        return f"{self.template.id} matched {self.url}"

    def to_doc(self) -> dict[str, Any]:
        """The ``vuln`` document."""
        template = self.template
        names = [m["name"] for m in self.matched if m.get("name")]
        return {
            "target": self.target,
            "poc_id": template.id,
            "template_id": template.id,
            "name": template.name,
            "severity": template.severity,
            "tags": list(template.tags),
            "references": list(template.references),
            "description": template.description[:4000],
            "classification": template.classification,
            "author": list(template.authors),
            "protocol": template.protocol,
            "template_path": template.path,
            "url": self.url,
            "matched_at": self.url,
            "ip": self.ip,
            "request": self.request,
            "response": self.response,
            "matched": self.matched,
            "matcher_name": names[0] if names else "",
            "matcher_names": names,
            "extracted": self.extracted,
            "plg_name": template.id,
            "vul_name": template.name,
            "verify_data": self.verify_data(),
            "time": time.time(),
        }
