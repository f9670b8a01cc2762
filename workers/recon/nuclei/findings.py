"""A finding: a template that matched on a target, with its evidence, as a ``vuln`` document.

The document keeps the field names of the earlier PoC engine (``poc_id``, ``name``,
``severity``, ``url``, ``request``, ``response``, ``matched``, ``verify_data`` and ARL's
``plg_name`` / ``vul_name``) and adds nuclei's: ``template_id``, ``matcher_name``,
``extracted``, ``matched_at``, ``description``, ``classification``, ``template_path``.

A vuln is reported once per service: the findings of one template on one ``ip:port`` with the
same evidence, reached under several host names, become one document (:func:`vuln_docs`) that
lists the ``hostnames`` and ``targets``.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from workers.recon.http import HttpResponse
from workers.recon.nuclei.template import Template

EVIDENCE_BODY = 2048
MAX_EVIDENCE_HEADERS = 40
DEFAULT_PORTS = {"http": 80, "https": 443}


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


def url_host_port(url: str) -> tuple[str, int | None]:
    """The host name and port of a finding's URL (``tcp://host:port`` too; the scheme's default port)."""
    parts = urllib.parse.urlsplit(url if "://" in url else "//" + url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return (parts.hostname or "", port or DEFAULT_PORTS.get(parts.scheme))


def service_key(finding: Finding) -> str:
    """The ``ip:port`` the finding was made on (the host name when no address is known)."""
    host, port = url_host_port(finding.url)
    address = finding.ip or host
    shown = f"[{address}]" if ":" in address else address
    return f"{shown}:{port}" if port else shown


def evidence_key(finding: Finding) -> str:
    """A digest of what proved the finding: the matcher hits and extracted values, host name masked."""
    host, _ = url_host_port(finding.url)
    proof = json.dumps(
        {"matched": finding.matched, "extracted": finding.extracted}, sort_keys=True, default=str
    )
    if host:
        proof = proof.replace(host, "{host}")
    return hashlib.sha256(proof.encode("utf-8", "replace")).hexdigest()


VulnKey = tuple[str, str, str]
"""(service, template id, evidence): what makes two findings one vuln."""


class VulnGroups:
    """Findings grouped into ``vuln`` documents as they come, one per :data:`VulnKey`.

    A document has the fields of the first finding of its key, plus ``service``, ``evidence``
    and the sorted ``hostnames`` and ``targets`` of every finding of the key.
    """

    def __init__(self) -> None:
        self.docs: dict[VulnKey, dict[str, Any]] = {}

    def add(self, finding: Finding) -> tuple[VulnKey, bool]:
        """Group ``finding``; returns its key and whether its document is new or its lists grew."""
        key = (service_key(finding), finding.template.id, evidence_key(finding))
        host = url_host_port(finding.url)[0]
        doc = self.docs.get(key)
        if doc is None:
            doc = finding.to_doc()
            doc.update(service=key[0], evidence=key[2], hostnames=[host] if host else [])
            doc["targets"] = [finding.target]
            self.docs[key] = doc
            return key, True
        changed = False
        for field_name, value in (("hostnames", host), ("targets", finding.target)):
            if value and value not in doc[field_name]:
                doc[field_name] = sorted([*doc[field_name], value])
                changed = True
        return key, changed


def vuln_docs(findings: Iterable[Finding]) -> list[dict[str, Any]]:
    """One ``vuln`` document per (service, template, evidence), listing every host name and target."""
    groups = VulnGroups()
    for finding in findings:
        groups.add(finding)
    return list(groups.docs.values())
