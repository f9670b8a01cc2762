"""Turning what a source reported into clean names under a root."""

from __future__ import annotations

from collections.abc import Iterable

from workers.recon.targets import TargetError, is_subdomain, normalize_domain


def clean_name(raw: object) -> str | None:
    """``raw`` as a lower-case host name: ``*.`` and scheme, port, path stripped; None when garbage.

    Internationalised names become their ASCII (punycode) form; anything else that is
    not a well-formed DNS name (spaces, e-mail addresses' local parts, empty labels) is
    dropped.
    """
    if not isinstance(raw, str):
        return None
    text = raw.strip().lower()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.split("/", 1)[0]
    if "@" in text:
        return None
    while text.startswith("*."):
        text = text[2:]
    if not text.isascii():
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    try:
        return normalize_domain(text)
    except TargetError:
        return None


def names_under(root: str, raws: Iterable[object]) -> list[str]:
    """The clean names of ``raws`` that are ``root`` or below it, deduplicated, in first-seen order."""
    out: dict[str, None] = {}
    for raw in raws:
        name = clean_name(raw)
        if name is not None and is_subdomain(name, root):
            out.setdefault(name, None)
    return list(out)
