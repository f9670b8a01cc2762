"""Alt-DNS (ARL's ``alt_dns`` option): permutations of the subdomains found, resolved, wildcards dropped.

:func:`permutations` derives candidate names from known ones the way altdns and dnsgen do: numbers
moved up and down (``web01`` -> ``web02``) or added (``www`` -> ``www2``), labels and dash-separated
parts swapped, and words of a bundled list (plus the target's own name parts) prepended, appended
(with and without ``-``), inserted as a new level or put in place of a part (``api`` ->
``dev-api``, ``api-dev``, ``devapi``, ``dev.api``). Cheap rules come first, then word by word across
every known name, so a cap keeps the likeliest candidates. The order is deterministic.

:func:`alt_dns` resolves them with the fast resolver and drops wildcard answers, including wildcards
that rotate addresses or answer with a CNAME (:mod:`workers.recon.wildcards`). Names are not
generated with a public-suffix list: every candidate stays below the task's root domain.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from workers.recon.datafiles import DATA_DIR, dedupe_labels, is_valid_label
from workers.recon.dns import DnsClient, DomainRecord, Wildcard, resolve_names
from workers.recon.wildcards import confirm, learn_wildcard, overlaps, parent_of, wildcard_below

SOURCE = "altdns"
"""The ``source`` of the domain records alt-DNS finds (ARL's name)."""
WORDS_FILE: Path = DATA_DIR / "wordlists" / "altdns.txt"
NUMBER_STEPS = 3
"""How far a number in a name is moved up and down, and how many numbers are appended to a label."""
MAX_NUMBER_DIGITS = 3
"""Longer digit runs (dates, ids) are left alone."""
CUSTOM_WORDS = 50
"""Parts of the known names used as extra words, most frequent first."""
PARENT_CONCURRENCY = 16
"""Parents probed for a wildcard at once."""

_DIGITS = re.compile(r"\d+")


@functools.lru_cache(maxsize=1)
def load_words() -> tuple[str, ...]:
    """The bundled alt-DNS word list, in its order (likeliest first)."""
    lines = WORDS_FILE.read_text(encoding="utf-8").splitlines()
    return tuple(dedupe_labels(line for line in lines if not line.lstrip().startswith("#")))


def _numbers(labels: list[str]) -> Iterator[list[str]]:
    """Each number of a label moved up and down; labels without a number get 1..3 appended."""
    for i, label in enumerate(labels):
        runs = [m for m in _DIGITS.finditer(label) if len(m.group()) <= MAX_NUMBER_DIGITS]
        if not _DIGITS.search(label):
            for n in range(1, NUMBER_STEPS + 1):
                yield [*labels[:i], f"{label}{n}", *labels[i + 1 :]]
        for match in runs:
            value, width = int(match.group()), len(match.group())
            for step in range(1, NUMBER_STEPS + 1):
                for moved in (value + step, value - step):
                    if moved >= 0:
                        text = f"{label[: match.start()]}{moved:0{width}d}{label[match.end() :]}"
                        yield [*labels[:i], text, *labels[i + 1 :]]


def _swaps(labels: list[str]) -> Iterator[list[str]]:
    """Adjacent labels swapped, and adjacent dash-separated parts of a label swapped."""
    for i in range(len(labels) - 1):
        yield [*labels[:i], labels[i + 1], labels[i], *labels[i + 2 :]]
    for i, label in enumerate(labels):
        parts = label.split("-")
        for j in range(len(parts) - 1):
            swapped = [*parts[:j], parts[j + 1], parts[j], *parts[j + 2 :]]
            yield [*labels[:i], "-".join(swapped), *labels[i + 1 :]]


def _with_word(labels: list[str], word: str, vocabulary: frozenset[str]) -> Iterator[list[str]]:
    """``word`` added to each label (either side, with or without '-'), inserted, or in place of a part."""
    if word not in labels:
        yield [word, *labels]
    for i, label in enumerate(labels):
        parts = label.split("-")
        if word not in parts:
            yield [*labels[:i], f"{word}-{label}", *labels[i + 1 :]]
            yield [*labels[:i], f"{label}-{word}", *labels[i + 1 :]]
            yield [*labels[:i], f"{word}{label}", *labels[i + 1 :]]
            yield [*labels[:i], f"{label}{word}", *labels[i + 1 :]]
        for j, part in enumerate(parts):
            if part != word and part in vocabulary:
                yield [*labels[:i], "-".join([*parts[:j], word, *parts[j + 1 :]]), *labels[i + 1 :]]
    if word not in labels:
        for i in range(1, len(labels) + 1):
            yield [*labels[:i], word, *labels[i:]]


def _custom_words(subdomains: list[list[str]]) -> list[tuple[str, int]]:
    """The parts of the known names (split at dots and dashes) and their counts, most frequent first."""
    counts: Counter[str] = Counter()
    for labels in subdomains:
        for label in labels:
            for part in label.split("-"):
                if len(part) > 1 and not part.isdigit() and is_valid_label(part):
                    counts[part] += 1
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return ranked[:CUSTOM_WORDS]


def permutations(
    root: str, known: Iterable[str], words: Sequence[str] | None = None, *, limit: int
) -> list[str]:
    """Up to ``limit`` candidate names below ``root`` derived from the ``known`` ones, in a fixed order.

    Only names below ``root`` are used; no candidate is a known name, ``root`` itself, a repeat or
    an invalid DNS name. ``words`` defaults to the bundled list; the parts that recur in the known
    names go first, the others after the list.
    """
    root = root.lower().rstrip(".")
    known_names = {name.lower().rstrip(".") for name in known}
    suffix = "." + root
    subdomains = sorted(
        (name[: -len(suffix)].split(".") for name in known_names if name.endswith(suffix)),
        key=lambda labels: (len(labels), labels),
    )
    subdomains = [labels for labels in subdomains if all(is_valid_label(lb) for lb in labels)]
    if not subdomains or limit <= 0:
        return []
    custom = _custom_words(subdomains)
    base = list(load_words() if words is None else words)
    recurring = [part for part, count in custom if count > 1]
    vocabulary_list = list(dict.fromkeys([*recurring, *base, *(part for part, _ in custom)]))
    vocabulary = frozenset(vocabulary_list)

    def candidates() -> Iterator[list[str]]:
        for labels in subdomains:
            yield from _numbers(labels)
        for labels in subdomains:
            yield from _swaps(labels)
        for word in vocabulary_list:
            for labels in subdomains:
                yield from _with_word(labels, word, vocabulary)

    out: dict[str, None] = {}
    for labels in candidates():
        name = ".".join(labels) + suffix
        if name in out or name in known_names or len(name) > 253:
            continue
        if not all(is_valid_label(label) for label in labels):
            continue
        out[name] = None
        if len(out) >= limit:
            break
    return list(out)


@dataclass
class AltDnsReport:
    """What one alt-DNS pass did: ``candidates`` tried, records ``found`` (by name), the wildcards
    learnt (by parent, only parents that have one), and ``unconfirmed`` names that resolved but
    proved to be wildcard answers when asked again."""

    candidates: int = 0
    found: dict[str, DomainRecord] = field(default_factory=dict)
    wildcards: dict[str, Wildcard] = field(default_factory=dict)
    unconfirmed: int = 0

    def to_doc(self) -> dict[str, int]:
        """Counts for a task's statistic: candidates, found, unconfirmed, and the distinct wildcards."""
        return {
            "candidates": self.candidates,
            "found": len(self.found),
            "unconfirmed": self.unconfirmed,
            "wildcards": len({id(w) for w in self.wildcards.values()}),
        }


async def _learn_parents(
    client: DnsClient, root: str, root_wildcard: Wildcard, parents: list[str]
) -> dict[str, Wildcard]:
    """The wildcard of every parent of the candidates (``root`` learnt in full, the others checked)."""
    learnt = {root: root_wildcard}
    sem = asyncio.Semaphore(PARENT_CONCURRENCY)

    async def one(parent: str) -> None:
        async with sem:
            learnt[parent] = await wildcard_below(client, parent, root_wildcard)

    await asyncio.gather(*(one(p) for p in parents if p != root))
    return learnt


async def alt_dns(
    client: DnsClient,
    root: str,
    known_names: Iterable[str],
    wildcard: Wildcard | None = None,
    *,
    limit: int,
    concurrency: int,
    words: Sequence[str] | None = None,
    on_found: Callable[[DomainRecord], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> AltDnsReport:
    """Resolve up to ``limit`` permutations of ``known_names`` below ``root``; keep the real ones.

    ``wildcard`` is what the brute force saw below ``root`` (a start: the wildcard is probed again
    until its rotating answers are all seen, and every other parent of a candidate is probed for a
    wildcard of its own). Names below a parent without a wildcard are handed to ``on_found`` as
    they resolve; those below a wildcard only once :func:`~workers.recon.wildcards.confirm` kept
    them, at the end. Records have source ``"altdns"``. ``on_progress(done, total)`` follows the
    candidates resolved. Cancelling keeps what ``on_found`` was given.
    """
    root = root.lower().rstrip(".")
    known = {name.lower().rstrip(".") for name in known_names}
    names = permutations(root, known, words, limit=limit)
    report = AltDnsReport(candidates=len(names))
    if on_progress is not None:
        on_progress(0, len(names))
    if not names:
        return report
    root_wildcard = await learn_wildcard(client, root, wildcard)
    parents = list(dict.fromkeys(parent_of(n) for n in names))
    learnt = await _learn_parents(client, root, root_wildcard, parents)
    held: list[DomainRecord] = []

    def keep(record: DomainRecord) -> None:
        below = learnt.get(parent_of(record.domain))
        if below and overlaps(below, record):
            return
        if below:
            held.append(record)
            return
        report.found[record.domain] = record
        if on_found is not None:
            on_found(record)

    # Names whose parent answers with the root's wildcard are filtered by the resolver itself (a
    # wildcard answer is not asked for AAAA); the others only by ``keep``.
    shared = [n for n in names if learnt[parent_of(n)] is root_wildcard]
    own = [n for n in names if learnt[parent_of(n)] is not root_wildcard]
    offset = 0
    for group, prefilter in ((shared, root_wildcard), (own, None)):
        base = offset

        def progress(done: int, base: int = base) -> None:
            if on_progress is not None:
                on_progress(base + done, len(names))

        await resolve_names(
            client,
            group,
            {},
            source=SOURCE,
            concurrency=concurrency,
            wildcard=prefilter or None,
            on_progress=progress,
            on_found=keep,
        )
        offset += len(group)
    confirmed = await confirm(client, held, learnt)
    report.unconfirmed = len(held) - len(confirmed)
    for record in confirmed:
        report.found[record.domain] = record
        if on_found is not None:
            on_found(record)
    report.wildcards = {parent: wc for parent, wc in learnt.items() if wc}
    return report
